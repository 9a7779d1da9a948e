"""The handler protocols and helpers, where the eventsource guide keeps them.

They live in :mod:`django_eventsource.events.handlers`.
"""

from ..events.handlers import (
    AsyncEventHandlerBase,
    EventHandlerBase,
    EventSubscriber,
    SubscriberRegistry,
    get_handled_event_type,
    get_handled_event_types,
    is_event_handler,
)

__all__ = [
    "AsyncEventHandlerBase",
    "EventHandlerBase",
    "EventSubscriber",
    "SubscriberRegistry",
    "get_handled_event_type",
    "get_handled_event_types",
    "is_event_handler",
]
