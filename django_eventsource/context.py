"""Ambient metadata (actor, correlation, causation) stamped onto events when they are saved.

``EventMetadataMiddleware`` sets it for each request; ``event_context`` sets it in tasks,
commands and event handlers::

    with event_context(actor_id="billing-job", causation_id=event.event_id,
                       correlation_id=event.correlation_id):
        repository.save(invoice)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any
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
    "eventsource_context", default=EventContext()  # noqa: B039
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


@contextlib.contextmanager
def event_context(
    actor_id: str | None = None,
    correlation_id: UUID | str | None = None,
    causation_id: UUID | str | None = None,
) -> Iterator[EventContext]:
    """Stamp events saved inside the block with this actor, correlation and causation.

    Values left as ``None`` are inherited from an enclosing context. Ids may be given as
    UUID strings; anything else raises ``InvalidEventError``.
    """
    outer = _current.get()
    changes: dict[str, Any] = {}
    if actor_id is not None:
        changes["actor_id"] = str(actor_id)
    if correlation_id is not None:
        changes["correlation_id"] = _as_uuid(correlation_id, "correlation_id")
    if causation_id is not None:
        changes["causation_id"] = _as_uuid(causation_id, "causation_id")
    ctx = replace(outer, **changes)
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


__all__ = ["EventContext", "event_context", "get_event_context"]
