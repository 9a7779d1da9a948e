"""The ``EventBus`` contract and handler types."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeAlias, runtime_checkable

from asgiref.sync import sync_to_async

from ..events.base import DomainEvent
from ..events.handlers import EventSubscriber

#: A plain function handling one event; may be ``async def``.
EventHandlerFunc: TypeAlias = Callable[[DomainEvent], Any | Awaitable[Any]]


@runtime_checkable
class EventHandler(Protocol):
    """An object with a ``handle(event)`` method (sync or async)."""

    def handle(self, event: DomainEvent) -> Any: ...


class AsyncEventHandler(ABC):
    """Base class for handlers whose ``handle`` is a coroutine."""

    @abstractmethod
    async def handle(self, event: DomainEvent) -> None: ...


#: What ``subscribe`` accepts.
HandlerLike: TypeAlias = EventHandler | EventHandlerFunc


class EventBus(ABC):
    """Distributes committed events to subscribed handlers.

    Sync-first like the rest of the library; ``apublish``/``ashutdown`` are the async
    twins. Subscriptions are by event class (or type name) or to every event.
    """

    @abstractmethod
    def publish(self, events: Sequence[DomainEvent], background: bool = False) -> None:
        """Deliver ``events`` to their subscribers (in order).

        With ``background=True`` the call returns at once and the bus delivers the events
        from a worker thread; ``shutdown`` waits for them.
        """

    @abstractmethod
    def subscribe(self, event_type: type[DomainEvent] | str, handler: HandlerLike) -> None:
        """Call ``handler`` for every event of ``event_type``."""

    @abstractmethod
    def unsubscribe(self, event_type: type[DomainEvent] | str, handler: HandlerLike) -> bool:
        """Remove a subscription; returns whether it existed."""

    @abstractmethod
    def subscribe_to_all_events(self, handler: HandlerLike) -> None:
        """Call ``handler`` for every event (wildcard subscription)."""

    @abstractmethod
    def unsubscribe_from_all_events(self, handler: HandlerLike) -> bool:
        """Remove a wildcard subscription; returns whether it existed."""

    def subscribe_all(self, subscriber: EventSubscriber) -> None:
        """Subscribe ``subscriber`` to each class in ``subscriber.subscribed_to()``."""
        for event_class in subscriber.subscribed_to():
            self.subscribe(event_class, subscriber)

    def shutdown(self, timeout: float = 30.0) -> None:  # noqa: B027 - optional hook
        """Stop accepting work and wait up to ``timeout`` seconds for pending deliveries."""

    async def apublish(self, events: Sequence[DomainEvent], background: bool = False) -> None:
        await sync_to_async(self.publish, thread_sensitive=False)(events, background)

    async def ashutdown(self, timeout: float = 30.0) -> None:
        await sync_to_async(self.shutdown, thread_sensitive=False)(timeout)


def handler_function(handler: HandlerLike) -> Callable[[DomainEvent], Any]:
    """What a bus calls for ``handler``: its ``handle`` method, or the handler itself.

    Raises ``TypeError`` for anything else, so a bad handler fails at ``subscribe``.
    """
    handle: Callable[[DomainEvent], Any] | None = getattr(handler, "handle", None)
    if callable(handle):
        return handle
    if callable(handler):
        return handler
    raise TypeError(
        f"An event handler must be a callable or have a handle(event) method, got {handler!r}"
    )


def event_type_key(event_type: type[DomainEvent] | str) -> str:
    """Subscription key of an event class or type name."""
    if isinstance(event_type, str):
        return event_type
    return event_type.event_type_name()


__all__ = [
    "AsyncEventHandler",
    "EventBus",
    "EventHandler",
    "EventHandlerFunc",
    "EventSubscriber",
    "HandlerLike",
    "event_type_key",
    "handler_function",
]
