"""django-eventsource: event sourcing for Django.

Every public name is importable from here. Names are resolved lazily (PEP 562), so
``import django_eventsource`` works before Django is configured; names backed by Django
models (``DjangoEventStore`` and friends) need configured settings when first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # types
    "TState": "types",
    "AggregateId": "types",
    "EventId": "types",
    "TenantId": "types",
    "CorrelationId": "types",
    "CausationId": "types",
    # exceptions
    "EventSourceError": "exceptions",
    "OptimisticLockError": "exceptions",
    "EventNotFoundError": "exceptions",
    "AggregateNotFoundError": "exceptions",
    "EventVersionError": "exceptions",
    "UnhandledEventError": "exceptions",
    "ProjectionError": "exceptions",
    "EventStoreError": "exceptions",
    "InvalidEventError": "exceptions",
    "DuplicateEventIdError": "exceptions",
    "EventBusError": "exceptions",
    "CheckpointError": "exceptions",
    "SerializationError": "exceptions",
    "UpcastError": "exceptions",
    "EventTypeNotFoundError": "exceptions",
    "DuplicateEventTypeError": "exceptions",
    "RedisNotAvailableError": "exceptions",
    # events
    "DomainEvent": "events.base",
    "EventRegistry": "events.registry",
    "default_registry": "events.registry",
    "register_event": "events.registry",
    "get_event_class": "events.registry",
    "get_event_class_or_none": "events.registry",
    "is_event_registered": "events.registry",
    "list_registered_events": "events.registry",
    "upcaster": "events.upcasting",
    # context
    "event_context": "context",
    "get_event_context": "context",
    "EventContext": "context",
    # stores
    "EventStore": "stores.interface",
    "EventPublisher": "stores.interface",
    "EventStream": "stores.interface",
    "AppendResult": "stores.interface",
    "StoredEvent": "stores.interface",
    "ReadOptions": "stores.interface",
    "ReadDirection": "stores.interface",
    "ExpectedVersion": "stores.interface",
    "InMemoryEventStore": "stores.in_memory",
    "DjangoEventStore": "stores.django",
    # aggregates
    "AggregateRoot": "aggregates.base",
    "DeclarativeAggregate": "aggregates.base",
    "AggregateRepository": "aggregates.repository",
    "SnapshotStore": "aggregates.snapshots",
    "SnapshotData": "aggregates.snapshots",
    "InMemorySnapshotStore": "aggregates.snapshots",
    "DjangoSnapshotStore": "aggregates.snapshots",
    "handles": "events.handlers",
    # projections
    "Projection": "projections.base",
    "DeclarativeProjection": "projections.base",
    "CheckpointTrackingProjection": "projections.base",
    "RetryPolicy": "projections.base",
    "EventSubscriber": "events.handlers",
    "ProjectionRegistry": "projections.coordinator",
    "ProjectionCoordinator": "projections.coordinator",
    # bus
    "EventBus": "bus.interface",
    "EventHandler": "bus.interface",
    "EventHandlerFunc": "bus.interface",
    "AsyncEventHandler": "bus.interface",
    "InMemoryEventBus": "bus.memory",
    "InMemoryEventBusStats": "bus.memory",
    "RedisEventBus": "bus.redis",
    "RedisEventBusConfig": "bus.redis",
    "RedisEventBusStats": "bus.redis",
    "REDIS_AVAILABLE": "bus.redis",
    # repositories
    "CheckpointRepository": "repositories.checkpoint",
    "DjangoCheckpointRepository": "repositories.checkpoint",
    "InMemoryCheckpointRepository": "repositories.checkpoint",
    "CheckpointData": "repositories.checkpoint",
    "LagMetrics": "repositories.checkpoint",
    "DLQRepository": "repositories.dlq",
    "DjangoDLQRepository": "repositories.dlq",
    "InMemoryDLQRepository": "repositories.dlq",
    "DLQEntry": "repositories.dlq",
    "DLQStats": "repositories.dlq",
    "ProjectionFailureCount": "repositories.dlq",
    "OutboxRepository": "repositories.outbox",
    "DjangoOutboxRepository": "repositories.outbox",
    "InMemoryOutboxRepository": "repositories.outbox",
    "OutboxEntry": "repositories.outbox",
    "OutboxStats": "repositories.outbox",
    "EventSourceJSONEncoder": "events.serialization",
}

__all__ = [
    "REDIS_AVAILABLE",
    "AggregateId",
    "AggregateNotFoundError",
    "AggregateRepository",
    "AggregateRoot",
    "AppendResult",
    "AsyncEventHandler",
    "CausationId",
    "CheckpointData",
    "CheckpointError",
    "CheckpointRepository",
    "CheckpointTrackingProjection",
    "CorrelationId",
    "DLQEntry",
    "DLQRepository",
    "DLQStats",
    "DeclarativeAggregate",
    "DeclarativeProjection",
    "DjangoCheckpointRepository",
    "DjangoDLQRepository",
    "DjangoEventStore",
    "DjangoOutboxRepository",
    "DjangoSnapshotStore",
    "DomainEvent",
    "DuplicateEventIdError",
    "DuplicateEventTypeError",
    "EventBus",
    "EventBusError",
    "EventContext",
    "EventHandler",
    "EventHandlerFunc",
    "EventId",
    "EventNotFoundError",
    "EventPublisher",
    "EventRegistry",
    "EventSourceError",
    "EventSourceJSONEncoder",
    "EventStore",
    "EventStoreError",
    "EventStream",
    "EventSubscriber",
    "EventTypeNotFoundError",
    "EventVersionError",
    "ExpectedVersion",
    "InMemoryCheckpointRepository",
    "InMemoryDLQRepository",
    "InMemoryEventBus",
    "InMemoryEventBusStats",
    "InMemoryEventStore",
    "InMemoryOutboxRepository",
    "InMemorySnapshotStore",
    "InvalidEventError",
    "LagMetrics",
    "OptimisticLockError",
    "OutboxEntry",
    "OutboxRepository",
    "OutboxStats",
    "Projection",
    "ProjectionCoordinator",
    "ProjectionError",
    "ProjectionFailureCount",
    "ProjectionRegistry",
    "ReadDirection",
    "ReadOptions",
    "RedisEventBus",
    "RedisEventBusConfig",
    "RedisEventBusStats",
    "RedisNotAvailableError",
    "RetryPolicy",
    "SerializationError",
    "SnapshotData",
    "SnapshotStore",
    "StoredEvent",
    "TState",
    "TenantId",
    "UnhandledEventError",
    "UpcastError",
    "__version__",
    "default_registry",
    "event_context",
    "get_event_class",
    "get_event_class_or_none",
    "get_event_context",
    "handles",
    "is_event_registered",
    "list_registered_events",
    "register_event",
    "upcaster",
]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - static imports for type checkers and IDEs
    from .aggregates.base import AggregateRoot, DeclarativeAggregate
    from .aggregates.repository import AggregateRepository
    from .aggregates.snapshots import (
        DjangoSnapshotStore,
        InMemorySnapshotStore,
        SnapshotData,
        SnapshotStore,
    )
    from .bus.interface import AsyncEventHandler, EventBus, EventHandler, EventHandlerFunc
    from .bus.memory import InMemoryEventBus, InMemoryEventBusStats
    from .bus.redis import REDIS_AVAILABLE, RedisEventBus, RedisEventBusConfig, RedisEventBusStats
    from .context import EventContext, event_context, get_event_context
    from .events.base import DomainEvent
    from .events.handlers import EventSubscriber, handles
    from .events.registry import (
        EventRegistry,
        default_registry,
        get_event_class,
        get_event_class_or_none,
        is_event_registered,
        list_registered_events,
        register_event,
    )
    from .events.serialization import EventSourceJSONEncoder
    from .events.upcasting import upcaster
    from .exceptions import (
        AggregateNotFoundError,
        CheckpointError,
        DuplicateEventIdError,
        DuplicateEventTypeError,
        EventBusError,
        EventNotFoundError,
        EventSourceError,
        EventStoreError,
        EventTypeNotFoundError,
        EventVersionError,
        InvalidEventError,
        OptimisticLockError,
        ProjectionError,
        RedisNotAvailableError,
        SerializationError,
        UnhandledEventError,
        UpcastError,
    )
    from .projections.base import (
        CheckpointTrackingProjection,
        DeclarativeProjection,
        Projection,
        RetryPolicy,
    )
    from .projections.coordinator import ProjectionCoordinator, ProjectionRegistry
    from .repositories.checkpoint import (
        CheckpointData,
        CheckpointRepository,
        DjangoCheckpointRepository,
        InMemoryCheckpointRepository,
        LagMetrics,
    )
    from .repositories.dlq import (
        DjangoDLQRepository,
        DLQEntry,
        DLQRepository,
        DLQStats,
        InMemoryDLQRepository,
        ProjectionFailureCount,
    )
    from .repositories.outbox import (
        DjangoOutboxRepository,
        InMemoryOutboxRepository,
        OutboxEntry,
        OutboxRepository,
        OutboxStats,
    )
    from .stores.django import DjangoEventStore
    from .stores.in_memory import InMemoryEventStore
    from .stores.interface import (
        AppendResult,
        EventPublisher,
        EventStore,
        EventStream,
        ExpectedVersion,
        ReadDirection,
        ReadOptions,
        StoredEvent,
    )
    from .types import AggregateId, CausationId, CorrelationId, EventId, TenantId, TState
