"""Ambient metadata (actor, correlation, causation) stamped onto events when they are saved.

``EventMetadataMiddleware`` sets it for each request; ``event_context`` sets it in tasks,
commands and event handlers::

    with event_context(actor_id="billing-job", causation_id=event.event_id,
                       correlation_id=event.correlation_id):
        repository.save(invoice)
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from uuid import UUID

from .exceptions import InvalidEventError


@dataclass(frozen=True, slots=True)
class EventContext:
    """The metadata currently in force."""

    actor_id: str | None = None
    correlation_id: UUID | None = None
    causation_id: UUID | None = None


# EventContext is a frozen dataclass, so sharing one instance as the default is safe.
_current: ContextVar[EventContext] = ContextVar(
    "eventsource_context",
    default=EventContext(),  # noqa: B039
)


def _as_uuid(value: UUID | str, what: str) -> UUID:
    # Events are stamped with ``model_copy``, which does not validate, so a string id
    # (from a task header, say) must become a UUID here or it would be stored as is.
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise InvalidEventError(f"{what} must be a UUID, got {value!r}") from None


def get_event_context() -> EventContext:
    """The metadata in force in the current thread or task."""
    return _current.get()


def event_context(
    actor_id: str | None = None,
    correlation_id: UUID | str | None = None,
    causation_id: UUID | str | None = None,
) -> AbstractContextManager[EventContext]:
    """Stamp events saved inside the block with this actor, correlation and causation.

    Values left as ``None`` are inherited from the context in force when the block is
    entered. Ids may be given as UUID strings; anything else raises
    ``InvalidEventError``.
    """
    return _Scope(
        None if actor_id is None else str(actor_id),
        None if correlation_id is None else _as_uuid(correlation_id, "correlation_id"),
        None if causation_id is None else _as_uuid(causation_id, "causation_id"),
    )


class _Scope:
    """What ``event_context`` returns: sets the context for the block, then restores it.

    A small class rather than a generator-based context manager: the projection runner
    enters one per event.
    """

    __slots__ = ("_token", "_values")

    def __init__(
        self, actor_id: str | None, correlation_id: UUID | None, causation_id: UUID | None
    ) -> None:
        self._values = (actor_id, correlation_id, causation_id)
        self._token: Token[EventContext] | None = None

    def __enter__(self) -> EventContext:
        outer = _current.get()
        actor_id, correlation_id, causation_id = self._values
        context = EventContext(
            actor_id=outer.actor_id if actor_id is None else actor_id,
            correlation_id=outer.correlation_id if correlation_id is None else correlation_id,
            causation_id=outer.causation_id if causation_id is None else causation_id,
        )
        self._token = _current.set(context)
        return context

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None


__all__ = ["EventContext", "event_context", "get_event_context"]
