"""How things declare the events they handle: ``@handles``, ``EventSubscriber`` and friends.

Shared by declarative aggregates, projections and event-bus subscribers. Besides the
decorator and the protocol, this module has the guide's small handler helpers:
``EventHandlerBase`` / ``AsyncEventHandlerBase`` (a handler with a fixed set of event
classes), ``SubscriberRegistry`` (subscribers looked up by event class) and
``is_event_handler`` / ``get_handled_event_type`` (what ``@handles`` recorded).
"""

from __future__ import annotations

import inspect
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from .base import DomainEvent

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S", bound="EventSubscriber")

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


def get_handled_event_types(func: object) -> tuple[type[DomainEvent], ...]:
    """The event classes ``@handles`` marked ``func`` with, in order; ``()`` if unmarked."""
    return tuple(getattr(func, HANDLES_ATTR, ()))


def get_handled_event_type(func: object) -> type[DomainEvent] | None:
    """The one event class ``func`` handles, or ``None`` when it is not marked by ``@handles``.

    A function marked for several classes raises ``ValueError`` naming them; ask
    ``get_handled_event_types`` for all of them instead.
    """
    handled = get_handled_event_types(func)
    if not handled:
        return None
    if len(handled) > 1:
        names = ", ".join(cls.__name__ for cls in handled)
        raise ValueError(
            f"{getattr(func, '__qualname__', func)!r} handles several event classes "
            f"({names}); use get_handled_event_types()"
        )
    return handled[0]


def is_event_handler(obj: object) -> bool:
    """Whether ``obj`` (a function or method) is marked with ``@handles``."""
    return bool(get_handled_event_types(obj))


def collect_handlers(cls: type) -> dict[type[DomainEvent], str]:
    """Map each handled event class to the name of its handler method on ``cls`` (MRO-aware)."""
    found: dict[type[DomainEvent], str] = {}
    for klass in reversed(cls.__mro__):
        for name, attr in vars(klass).items():
            for event_class in get_handled_event_types(attr):
                found[event_class] = name
    return found


def check_handler_signatures(cls: type, handlers: dict[type[DomainEvent], str]) -> None:
    """Raise ``TypeError`` for a handler of ``cls`` that cannot be called as ``method(event)``.

    Run when a declarative class is defined, so a handler written for another calling
    convention (the eventsource guide's ``(self, conn, event)``, or a forgotten ``event``)
    fails at import time rather than on the first event, possibly hours later.
    """
    by_method: dict[str, list[type[DomainEvent]]] = {}
    for event_class, name in handlers.items():
        by_method.setdefault(name, []).append(event_class)
    for name, event_classes in by_method.items():
        raw = inspect.getattr_static(cls, name)
        func = raw.__func__ if isinstance(raw, staticmethod | classmethod) else raw
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError):
            continue  # a callable without introspectable signature: nothing to check
        # Functions and classmethods are bound (self or cls comes first); a staticmethod
        # or a callable object stored on the class is called with the event alone.
        bound = inspect.isfunction(raw) or isinstance(raw, classmethod)
        placeholders: tuple[object, ...] = (object(), object()) if bound else (object(),)
        try:
            signature.bind(*placeholders)
        except TypeError:
            handled = ", ".join(c.__name__ for c in event_classes)
            # Only the parameter names matter here; annotations would bury them.
            bare = signature.replace(
                parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
                return_annotation=signature.empty,
            )
            raise TypeError(
                f"{cls.__qualname__}.{name}{bare} handles {handled} but cannot be called "
                f"with one event: a handler takes exactly one argument besides self, "
                f"as in `def {name}(self, event)`"
            ) from None


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


class _FixedEventTypes:
    """``event_types``, ``can_handle`` and ``subscribed_to`` shared by both handler bases."""

    #: The event classes handled (their subclasses too); empty means every event.
    event_types: ClassVar[tuple[type[DomainEvent], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A list is the natural thing to write; a tuple is what isinstance() accepts.
        cls.event_types = tuple(cls.event_types)
        for event_class in cls.event_types:
            if not (isinstance(event_class, type) and issubclass(event_class, DomainEvent)):
                raise TypeError(
                    f"{cls.__qualname__}.event_types must list DomainEvent subclasses, "
                    f"got {event_class!r}"
                )

    def can_handle(self, event: DomainEvent) -> bool:
        """Whether ``event`` is an instance of one of ``event_types`` (any event if empty)."""
        return not self.event_types or isinstance(event, self.event_types)

    def subscribed_to(self) -> list[type[DomainEvent]]:
        """``event_types`` as a list, so the handler is an ``EventSubscriber``."""
        return list(self.event_types)


class EventHandlerBase(_FixedEventTypes, ABC):
    """Base class for a handler of a fixed set of event classes, with a sync ``handle``::

        class SendReceipt(EventHandlerBase):
            event_types = (OrderPaid,)

            def handle(self, event: DomainEvent) -> None:
                send_mail(...)

    It is an ``EventSubscriber``: buses (``subscribe_all``), ``register_subscriber`` and
    ``SubscriberRegistry`` take it as it is. Callers that receive mixed events ask
    ``can_handle(event)`` first.
    """

    @abstractmethod
    def handle(self, event: DomainEvent) -> Any:
        """Handle one event of ``event_types``."""


class AsyncEventHandlerBase(_FixedEventTypes, ABC):
    """``EventHandlerBase`` whose ``handle`` is a coroutine (awaited by buses and registries)."""

    @abstractmethod
    async def handle(self, event: DomainEvent) -> Any:
        """Handle one event of ``event_types``."""


class SubscriberRegistry:
    """Subscribers looked up by the event class they subscribe to. Thread-safe.

    Each subscriber is filed under its ``subscribed_to()`` classes when it is registered;
    an empty list files it under every event. ``get_subscribers`` matches subclasses
    (a subscriber of ``OrderEvent`` gets ``OrderShipped``) and keeps registration order.
    """

    def __init__(self, subscribers: Iterable[EventSubscriber] = ()) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[EventSubscriber, tuple[type[DomainEvent], ...]]] = []
        for subscriber in subscribers:
            self.register(subscriber)

    def register(self, subscriber: S) -> S:
        """File ``subscriber`` under its event classes; registering it again changes nothing."""
        if not isinstance(subscriber, EventSubscriber):
            raise TypeError(
                f"{subscriber!r} is not an event subscriber: it needs subscribed_to() and "
                "handle(event)"
            )
        classes = tuple(subscriber.subscribed_to())
        with self._lock:
            if all(existing is not subscriber for existing, _ in self._entries):
                self._entries.append((subscriber, classes))
        return subscriber

    def unregister(self, subscriber: EventSubscriber) -> bool:
        """Remove ``subscriber``; returns whether it was registered."""
        with self._lock:
            for index, (existing, _) in enumerate(self._entries):
                if existing is subscriber:
                    del self._entries[index]
                    return True
        return False

    def get_subscribers(self, event: DomainEvent | type[DomainEvent]) -> list[EventSubscriber]:
        """The subscribers of ``event`` (an instance or a class), in registration order.

        Given an instance, a subscriber with a ``can_handle(event)`` method is only
        included when it returns true.
        """
        event_class = event if isinstance(event, type) else type(event)
        with self._lock:
            entries = list(self._entries)
        found: list[EventSubscriber] = []
        for subscriber, classes in entries:
            if classes and not issubclass(event_class, classes):
                continue
            can_handle = getattr(subscriber, "can_handle", None)
            if not isinstance(event, type) and callable(can_handle) and not can_handle(event):
                continue
            found.append(subscriber)
        return found

    def get_all_subscribers(self) -> list[EventSubscriber]:
        """Every registered subscriber, in registration order."""
        with self._lock:
            return [subscriber for subscriber, _ in self._entries]

    def get_event_types(self) -> list[type[DomainEvent]]:
        """The event classes subscribed to, once each (subscribers of every event add none)."""
        with self._lock:
            entries = list(self._entries)
        found: list[type[DomainEvent]] = []
        for _, classes in entries:
            found.extend(cls for cls in classes if cls not in found)
        return found

    def clear(self) -> None:
        """Forget every subscriber."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, subscriber: object) -> bool:
        return any(existing is subscriber for existing, _ in self._entries)


__all__ = [
    "HANDLES_ATTR",
    "AsyncEventHandlerBase",
    "EventHandlerBase",
    "EventSubscriber",
    "SubscriberRegistry",
    "check_handler_signatures",
    "collect_handlers",
    "find_handler_name",
    "get_handled_event_type",
    "get_handled_event_types",
    "handles",
    "is_event_handler",
]
