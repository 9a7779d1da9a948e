"""How things declare the events they handle: ``@handles`` and ``EventSubscriber``.

Shared by declarative aggregates, projections and event-bus subscribers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from .base import DomainEvent

F = TypeVar("F", bound=Callable[..., Any])

#: Attribute set on decorated functions: the event classes they handle.
HANDLES_ATTR = "__eventsource_handles__"


def handles(*event_classes: type[DomainEvent]) -> Callable[[F], F]:
    """Mark a method as the handler of one or more event classes.

    Works on ``DeclarativeAggregate`` methods (``def _on_created(self, event)``) and on
    ``DeclarativeProjection`` methods (sync or ``async def``).
    """
    if not event_classes:
        raise TypeError("@handles needs at least one event class")
    for cls in event_classes:
        if not (isinstance(cls, type) and issubclass(cls, DomainEvent)):
            raise TypeError(f"@handles expects DomainEvent subclasses, got {cls!r}")

    def decorator(func: F) -> F:
        existing: tuple[type[DomainEvent], ...] = getattr(func, HANDLES_ATTR, ())
        setattr(func, HANDLES_ATTR, existing + tuple(event_classes))
        return func

    return decorator


def collect_handlers(cls: type) -> dict[type[DomainEvent], str]:
    """Map each handled event class to the name of its handler method on ``cls`` (MRO-aware)."""
    found: dict[type[DomainEvent], str] = {}
    for klass in reversed(cls.__mro__):
        for name, attr in vars(klass).items():
            for event_class in getattr(attr, HANDLES_ATTR, ()):
                found[event_class] = name
    return found


def find_handler_name(
    handlers: dict[type[DomainEvent], str], event_class: type[DomainEvent]
) -> str | None:
    """The handler for ``event_class`` or, failing that, for its nearest base class."""
    name = handlers.get(event_class)
    if name is not None:
        return name
    for base in event_class.__mro__[1:]:
        name = handlers.get(base)
        if name is not None:
            return name
    return None


@runtime_checkable
class EventSubscriber(Protocol):
    """Declares the event classes it wants and handles them (sync or ``async def``)."""

    def subscribed_to(self) -> list[type[DomainEvent]]: ...

    def handle(self, event: DomainEvent) -> Any: ...


__all__ = ["HANDLES_ATTR", "EventSubscriber", "collect_handlers", "find_handler_name", "handles"]
