"""The handlers that ``consume_events`` runs on the events it reads from the bus.

Two ways to declare them, which add up:

* call ``register_handler(EventClassOrName, handler)`` (or ``register_subscriber`` /
  ``register_all_events_handler``) from an ``AppConfig.ready()``;
* list dotted paths in ``EVENTSOURCE_EVENT_HANDLERS``: an ``EventSubscriber`` class
  (instantiated without arguments, subscribed to its ``subscribed_to()`` classes) or a
  plain function (called for every event).
"""

from __future__ import annotations

import inspect
import threading

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from ..conf import conf
from ..events.base import DomainEvent
from ..events.handlers import EventSubscriber
from .interface import EventBus, HandlerLike, event_type_key

#: The key under which handlers of every event are kept.
ALL_EVENTS = "*"

_lock = threading.Lock()
_registry: list[tuple[str, HandlerLike]] = []


def register_handler(event_type: type[DomainEvent] | str, handler: HandlerLike) -> None:
    """Have ``consume_events`` call ``handler`` for every event of ``event_type``."""
    with _lock:
        _registry.append((event_type_key(event_type), handler))


def register_all_events_handler(handler: HandlerLike) -> None:
    """Have ``consume_events`` call ``handler`` for every event."""
    with _lock:
        _registry.append((ALL_EVENTS, handler))


def register_subscriber(subscriber: EventSubscriber) -> None:
    """Register ``subscriber`` for each event class in its ``subscribed_to()``."""
    for event_class in subscriber.subscribed_to():
        register_handler(event_class, subscriber)


def unregister_all() -> None:
    """Forget every handler registered in code (tests use this)."""
    with _lock:
        _registry.clear()


def registered_handlers() -> list[tuple[str, HandlerLike]]:
    """``(event type or "*", handler)`` pairs: code registrations then the setting's."""
    with _lock:
        handlers = list(_registry)
    return handlers + _handlers_from_settings()


def _handlers_from_settings() -> list[tuple[str, HandlerLike]]:
    paths = conf.EVENT_HANDLERS
    if not isinstance(paths, list | tuple):
        raise ImproperlyConfigured("EVENTSOURCE_EVENT_HANDLERS must be a list of dotted paths.")
    handlers: list[tuple[str, HandlerLike]] = []
    for path in paths:
        try:
            target = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"EVENTSOURCE_EVENT_HANDLERS entry {path!r} cannot be imported: {exc}"
            ) from exc
        if inspect.isclass(target):
            subscriber = target()
            if not isinstance(subscriber, EventSubscriber):
                raise ImproperlyConfigured(
                    f"EVENTSOURCE_EVENT_HANDLERS entry {path!r} is a class without "
                    "subscribed_to() and handle(event)."
                )
            handlers.extend(
                (event_type_key(event_class), subscriber)
                for event_class in subscriber.subscribed_to()
            )
        elif callable(target):
            handlers.append((ALL_EVENTS, target))
        else:
            raise ImproperlyConfigured(
                f"EVENTSOURCE_EVENT_HANDLERS entry {path!r} is neither a class nor a function."
            )
    return handlers


def attach_handlers(bus: EventBus) -> int:
    """Subscribe every registered handler to ``bus``; returns how many subscriptions."""
    handlers = registered_handlers()
    for event_type, handler in handlers:
        if event_type == ALL_EVENTS:
            bus.subscribe_to_all_events(handler)
        else:
            bus.subscribe(event_type, handler)
    return len(handlers)


__all__ = [
    "ALL_EVENTS",
    "attach_handlers",
    "register_all_events_handler",
    "register_handler",
    "register_subscriber",
    "registered_handlers",
    "unregister_all",
]
