"""Events: the ``DomainEvent`` base class, the type registry and upcasting."""

from .base import DomainEvent
from .registry import (
    EventRegistry,
    default_registry,
    get_event_class,
    get_event_class_or_none,
    is_event_registered,
    list_registered_events,
    register_event,
)
from .upcasting import upcaster

__all__ = [
    "DomainEvent",
    "EventRegistry",
    "default_registry",
    "get_event_class",
    "get_event_class_or_none",
    "is_event_registered",
    "list_registered_events",
    "register_event",
    "upcaster",
]
