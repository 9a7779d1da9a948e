"""``AggregateRoot`` and ``DeclarativeAggregate``: consistency boundaries rebuilt from events."""

from __future__ import annotations

import inspect
import logging
import threading
import warnings
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar, Generic, Literal, TypeVar
from uuid import UUID

from ..events.base import DomainEvent
from ..events.handlers import collect_handlers, find_handler_name
from ..exceptions import EventVersionError, InvalidEventError, UnhandledEventError
from ..stores.validation import coerce_uuid
from ..types import TState

logger = logging.getLogger("django_eventsource")

E = TypeVar("E", bound=DomainEvent)

# Aggregate classes already warned about ``validate_versions = False``. Weak, so classes
# defined on the fly (tests, factories) are not kept alive by the warning bookkeeping.
_unvalidated_warned: weakref.WeakSet[type[AggregateRoot[Any]]] = weakref.WeakSet()
_unvalidated_warned_lock = threading.Lock()


class AggregateRoot(Generic[TState], ABC):
    """Base class of event-sourced aggregates.

    Subclasses set ``aggregate_type``, build the initial state in
    ``_get_initial_state()`` and evolve it in ``_apply(event)`` by assigning
    ``self._state``. Command methods validate input and call ``apply_event`` (or
    ``raise_event``) with new events; the repository saves ``uncommitted_events``.

    Two aggregates are equal (and hash alike) when they have the same
    ``aggregate_type`` and ``aggregate_id``: they are the same consistency boundary,
    whatever version each copy was loaded at.
    """

    #: Name of the aggregate type; stored with every event.
    aggregate_type: ClassVar[str]
    #: Version of the state's schema; snapshots taken under another version are ignored.
    schema_version: ClassVar[int] = 1
    #: Whether ``apply_event`` requires ``aggregate_version == version + 1``. Turn it off
    #: only to replay histories whose versions are known to be irregular (imported or
    #: migrated data); the class logs a warning once when it first applies an event.
    validate_versions: ClassVar[bool] = True

    def __init__(self, aggregate_id: UUID) -> None:
        if not getattr(type(self), "aggregate_type", None):
            raise TypeError(f"{type(self).__name__} must set the aggregate_type class attribute")
        self._aggregate_id = coerce_uuid(aggregate_id, "aggregate_id")
        self._version = 0
        self._uncommitted: list[DomainEvent] = []
        self._state: TState = self._get_initial_state()

    # -- properties ---------------------------------------------------------------------

    @property
    def aggregate_id(self) -> UUID:
        return self._aggregate_id

    @property
    def version(self) -> int:
        """Version after the last applied event (0 for a new aggregate)."""
        return self._version

    @property
    def state(self) -> TState:
        return self._state

    @property
    def uncommitted_events(self) -> list[DomainEvent]:
        """Events applied since the last save (a copy)."""
        return list(self._uncommitted)

    @property
    def has_uncommitted_events(self) -> bool:
        return bool(self._uncommitted)

    # -- event application --------------------------------------------------------------

    def apply_event(self, event: DomainEvent, is_new: bool = True) -> None:
        """Apply ``event`` to the state; new events are kept until saved.

        The event must carry this aggregate's id and ``aggregate_version ==
        version + 1``, otherwise ``EventVersionError`` (or ``InvalidEventError`` for
        another aggregate's event) is raised and nothing changes. With
        ``validate_versions = False`` any ``aggregate_version`` is accepted, and the
        aggregate's version becomes the event's.
        """
        if event.aggregate_id != self._aggregate_id:
            raise InvalidEventError(
                f"Event {event.event_id} belongs to aggregate {event.aggregate_id}, "
                f"not {self._aggregate_id}"
            )
        if self.validate_versions:
            expected = self._version + 1
            if event.aggregate_version != expected:
                raise EventVersionError(
                    self._aggregate_id, expected, event.aggregate_version, event_id=event.event_id
                )
        else:
            self._warn_unvalidated_once()
        self._apply(event)
        self._version = event.aggregate_version
        if is_new:
            self._uncommitted.append(event)

    def raise_event(self, event_class: type[E], **fields: Any) -> E:
        """Create an event of ``event_class`` at this aggregate's next version and apply it."""
        fields.setdefault("aggregate_id", self._aggregate_id)
        fields.setdefault("aggregate_type", self.aggregate_type)
        fields.setdefault("aggregate_version", self.get_next_version())
        event = event_class(**fields)
        self.apply_event(event)
        return event

    def load_from_history(self, events: Iterable[DomainEvent]) -> None:
        """Replay stored events (they are not added to ``uncommitted_events``)."""
        for event in events:
            self.apply_event(event, is_new=False)

    def mark_events_as_committed(self) -> None:
        """Forget the uncommitted events (called by the repository after a save)."""
        self._uncommitted.clear()

    def clear_uncommitted_events(self) -> list[DomainEvent]:
        """Forget the uncommitted events and return them, oldest first.

        For code that saves or publishes the events itself. The version is not rolled
        back: the state still includes the cleared events.
        """
        cleared, self._uncommitted = self._uncommitted, []
        return cleared

    def get_next_version(self) -> int:
        return self._version + 1

    # -- snapshots ----------------------------------------------------------------------

    def snapshot_state(self) -> dict[str, Any]:
        """The state as a JSON-compatible dict, for snapshots."""
        return self._state.model_dump(mode="json")

    def restore_snapshot(self, state: dict[str, Any], version: int) -> None:
        """Restore state and version from a snapshot taken by ``snapshot_state``."""
        state_class = type(self._get_initial_state())
        self._state = state_class.model_validate(state)
        self._version = version
        self._uncommitted.clear()

    # -- to implement -------------------------------------------------------------------

    @abstractmethod
    def _get_initial_state(self) -> TState:
        """The state of a new aggregate, before any event."""

    @abstractmethod
    def _apply(self, event: DomainEvent) -> None:
        """Evolve ``self._state`` with ``event``."""

    # -- identity -----------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AggregateRoot):
            return NotImplemented
        return (self.aggregate_type, self._aggregate_id) == (
            other.aggregate_type,
            other._aggregate_id,
        )

    def __hash__(self) -> int:
        return hash((self.aggregate_type, self._aggregate_id))

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.aggregate_type}:{self._aggregate_id} "
            f"version={self._version}>"
        )

    def _warn_unvalidated_once(self) -> None:
        cls = type(self)
        if cls in _unvalidated_warned:
            return
        # The lock makes "check, then warn" atomic, so concurrent first events of one
        # class log a single warning.
        with _unvalidated_warned_lock:
            if cls in _unvalidated_warned:
                return
            _unvalidated_warned.add(cls)
        logger.warning(
            "%s has validate_versions = False: its events are applied without checking "
            "that their aggregate_version follows the aggregate's version",
            cls.__qualname__,
            extra={"aggregate_type": self.aggregate_type},
        )


class DeclarativeAggregate(AggregateRoot[TState]):
    """An aggregate whose ``_apply`` dispatches to ``@handles(EventClass)`` methods.

    ``unhandled_event_policy`` decides what happens to an event with no handler:
    ``"raise"`` (the default: ``UnhandledEventError``), ``"warn"`` or ``"ignore"``.
    """

    unhandled_event_policy: ClassVar[Literal["raise", "warn", "ignore"]] = "raise"
    _handlers: ClassVar[dict[type[DomainEvent], str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handlers = collect_handlers(cls)
        for name in set(cls._handlers.values()):
            # An async handler would return an un-awaited coroutine and leave the state
            # unchanged while the version moves on; refuse it when the class is defined.
            if inspect.iscoroutinefunction(getattr(cls, name)):
                raise TypeError(
                    f"{cls.__qualname__}.{name} is async; aggregate event handlers must be "
                    "plain functions (only projection handlers may be async)"
                )

    def _apply(self, event: DomainEvent) -> None:
        name = find_handler_name(self._handlers, type(event))
        if name is None:
            policy = self.unhandled_event_policy
            if policy == "raise":
                raise UnhandledEventError(type(self).__name__, event.event_type)
            if policy == "warn":
                message = f"{type(self).__name__} has no handler for {event.event_type}"
                warnings.warn(message, stacklevel=3)
                logger.warning(message)
            return
        getattr(self, name)(event)


__all__ = ["AggregateRoot", "DeclarativeAggregate"]
