"""The immutable ``DomainEvent`` base class."""

from __future__ import annotations

import copy
import inspect
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Self
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetPydanticSchema
from pydantic_core import core_schema

#: Fields stored in dedicated columns of the event table; everything else is the payload.
ENVELOPE_FIELDS: frozenset[str] = frozenset(
    {
        "event_id",
        "event_type",
        "event_version",
        "occurred_at",
        "aggregate_id",
        "aggregate_type",
        "aggregate_version",
        "tenant_id",
        "actor_id",
        "correlation_id",
        "causation_id",
        "metadata",
    }
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("occurred_at must be timezone-aware")
    return value.astimezone(UTC)


def _utc_datetime_schema(_source: Any, _handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    # UTC input (every stored event) is accepted by pydantic-core without calling back
    # into Python; other offsets are converted to UTC and naive values rejected.
    return core_schema.union_schema(
        [
            core_schema.datetime_schema(tz_constraint=0),
            core_schema.no_info_after_validator_function(_to_utc, core_schema.datetime_schema()),
        ],
        mode="left_to_right",
    )


#: A timezone-aware datetime, normalised to UTC.
UtcDatetime = Annotated[datetime, GetPydanticSchema(_utc_datetime_schema)]


class _EventTypeSchema(GetPydanticSchema):
    """The ``event_type`` field of one class: a non-empty string, or its type name.

    A given name is checked by pydantic-core alone; an empty or missing one becomes
    ``name``.
    """

    def __init__(self, name: str) -> None:
        self.name = name

        def or_name(value: Any) -> Any:
            return name if value is None or value == "" else value

        def schema(_source: Any, _handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
            return core_schema.union_schema(
                [
                    core_schema.str_schema(min_length=1),
                    core_schema.no_info_before_validator_function(
                        or_name, core_schema.str_schema()
                    ),
                ],
                mode="left_to_right",
            )

        super().__init__(get_pydantic_core_schema=schema)


class DomainEvent(BaseModel):
    """Base class for every domain event: an immutable fact about one aggregate.

    Subclasses add their own fields. ``event_type`` defaults to the class name; set
    ``event_type: str = "OtherName"`` to store the event under another name. Unknown
    fields are rejected, so a typo in a field name is an error, not silently dropped.

    Example::

        @register_event
        class OrderCreated(DomainEvent):
            aggregate_type: str = "Order"
            customer_id: UUID
            total: Decimal
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID = Field(default_factory=uuid4)
    event_type: str = ""
    event_version: int = Field(default=1, ge=1)
    occurred_at: UtcDatetime = Field(default_factory=_utcnow)
    aggregate_id: UUID
    aggregate_type: str
    aggregate_version: int = Field(default=1, ge=1)
    tenant_id: UUID | None = None
    actor_id: str | None = None
    correlation_id: UUID = Field(default_factory=uuid4)
    causation_id: UUID | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    #: The type name the class sets itself (``event_type: str = "..."``), if any.
    _declared_type: ClassVar[str | None] = None
    #: The name given by ``set_event_type_name()``, if any.
    _type_name: ClassVar[str | None] = None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "event_type" in inspect.get_annotations(cls):
            default = cls.__pydantic_fields__["event_type"].default
            cls._declared_type = default if isinstance(default, str) and default else None
        # A rename (``set_event_type_name``) applies to one class, not to its subclasses.
        cls._type_name = None
        # The field default is the type name, so validating a stored event runs no
        # Python code to fill it in.
        cls._set_event_type_default(cls.event_type_name())

    @classmethod
    def _set_event_type_default(cls, name: str) -> None:
        field = cls.__pydantic_fields__["event_type"]
        installed = [m.name for m in field.metadata if isinstance(m, _EventTypeSchema)]
        if field.default == name and installed == [name]:
            return
        field = copy.copy(field)
        field.default = name
        if field.annotation is str:
            field.metadata = [
                *(m for m in field.metadata if not isinstance(m, _EventTypeSchema)),
                _EventTypeSchema(name),
            ]
        cls.__pydantic_fields__["event_type"] = field
        if cls.__pydantic_complete__:
            cls.model_rebuild(force=True)
        # Otherwise (unresolved forward references) pydantic builds the schema from the
        # fields, with this default, once the references resolve.

    @classmethod
    def event_type_name(cls) -> str:
        """The name this class is stored and registered under."""
        return cls._type_name or cls._declared_type or cls.__name__

    @classmethod
    def declares_event_type(cls) -> bool:
        """Whether the class sets ``event_type`` itself (rather than using its name)."""
        return cls._declared_type is not None

    @classmethod
    def set_event_type_name(cls, name: str) -> None:
        """Store new instances under ``name`` (used by ``register_event(event_type=...)``)."""
        if cls.declares_event_type() and name != cls.event_type_name():
            raise ValueError(
                f"{cls.__qualname__} declares event_type {cls.event_type_name()!r}; "
                f"it cannot be renamed to {name!r}"
            )
        cls._type_name = name
        cls._set_event_type_default(name)

    @classmethod
    def current_event_version(cls) -> int:
        """The schema version new events of this class are written with."""
        default = cls.model_fields["event_version"].default
        return int(default) if isinstance(default, int) else 1

    # -- derivation helpers -------------------------------------------------------------

    def with_causation(self, event: DomainEvent) -> Self:
        """Return a copy caused by ``event``: same correlation id, causation = its id."""
        return self.model_copy(
            update={"causation_id": event.event_id, "correlation_id": event.correlation_id}
        )

    def with_metadata(self, **metadata: Any) -> Self:
        """Return a copy whose metadata is merged with ``metadata``."""
        return self.model_copy(update={"metadata": {**self.metadata, **metadata}})

    def with_aggregate_version(self, version: int) -> Self:
        """Return a copy with another ``aggregate_version`` (≥ 1)."""
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"aggregate_version must be an integer >= 1, got {version!r}")
        return self.model_copy(update={"aggregate_version": version})

    def is_caused_by(self, event: DomainEvent) -> bool:
        """True when ``event`` is this event's direct cause."""
        return self.causation_id == event.event_id

    def is_correlated_with(self, event: DomainEvent) -> bool:
        """True when both events belong to the same correlation (request, saga...)."""
        return self.correlation_id == event.correlation_id

    # -- serialization ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (UUIDs, datetimes and Decimals become strings)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild an event from ``to_dict()`` output (or a stored row)."""
        return cls.model_validate(data)

    def payload(self) -> dict[str, Any]:
        """The event's own fields (everything but the envelope), JSON-compatible."""
        return self.model_dump(mode="json", exclude=ENVELOPE_FIELDS)  # type: ignore[arg-type]

    def __hash__(self) -> int:
        # pydantic's hash for frozen models hashes every field and fails on the
        # ``metadata`` dict; the event id identifies an event (equal events share it).
        return hash((type(self), self.event_id))

    def __str__(self) -> str:
        # Short enough for a log line or an assertion message: the ids that find the
        # event, never the payload (which may be large or personal).
        return (
            f"{self.event_type}({self.aggregate_type}:{self.aggregate_id} "
            f"v{self.aggregate_version}, event_id={self.event_id})"
        )


DomainEvent._set_event_type_default(DomainEvent.__name__)

__all__ = ["ENVELOPE_FIELDS", "DomainEvent"]
