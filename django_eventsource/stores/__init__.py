"""Event stores: the ``EventStore`` contract and its implementations.

``DjangoEventStore`` lives in ``django_eventsource.stores.django`` and needs configured
Django settings; it is exported lazily from the package root.
"""

from .in_memory import InMemoryEventStore
from .interface import (
    AppendResult,
    EventPublisher,
    EventStore,
    EventStream,
    ExpectedVersion,
    ReadDirection,
    ReadOptions,
    StoredEvent,
)

__all__ = [
    "AppendResult",
    "EventPublisher",
    "EventStore",
    "EventStream",
    "ExpectedVersion",
    "InMemoryEventStore",
    "ReadDirection",
    "ReadOptions",
    "StoredEvent",
]
