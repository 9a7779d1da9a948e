"""django-eventsource: event sourcing for Django.

The names below are the public contract: the API the design pins, plus the operational
entry points ``run_projections``, ``publish_outbox`` and ``get_event_bus``. Everything
else is importable from the module that defines it (see "Where things live" in the docs).

``import django_eventsource`` works before Django is configured: the framework-free names
are imported here, while the names backed by Django models, and the Redis bus, are
imported on first use (PEP 562) and need configured settings (or the redis client) then.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .aggregates.base import AggregateRoot, DeclarativeAggregate
from .aggregates.repository import AggregateRepository
from .aggregates.snapshots import InMemorySnapshotStore
from .bus import get_event_bus
from .bus.interface import EventBus
from .bus.memory import InMemoryEventBus
from .context import event_context
from .events.base import DomainEvent
from .events.handlers import handles
from .events.registry import (
    EventRegistry,
    default_registry,
    get_event_class,
    get_event_class_or_none,
    is_event_registered,
    list_registered_events,
    register_event,
)
from .events.upcasting import upcaster
from .exceptions import (
    AggregateNotFoundError,
    DuplicateEventTypeError,
    EventSourceError,
    EventTypeNotFoundError,
    EventVersionError,
    OptimisticLockError,
)
from .outbox.repository import InMemoryOutboxRepository, OutboxRepository
from .outbox.rows import OutboxEntry, OutboxStats
from .projections.base import (
    BatchProjection,
    CheckpointTrackingProjection,
    DeclarativeProjection,
    Projection,
)
from .projections.checkpoints import (
    CheckpointData,
    CheckpointRepository,
    InMemoryCheckpointRepository,
    LagMetrics,
)
from .projections.coordinator import ProjectionCoordinator, ProjectionRegistry
from .projections.dead_letters import (
    DLQEntry,
    DLQRepository,
    DLQStats,
    InMemoryDLQRepository,
    ProjectionFailureCount,
)
from .stores.in_memory import InMemoryEventStore
from .stores.interface import (
    AppendResult,
    EventStore,
    EventStream,
    ExpectedVersion,
    ReadDirection,
    ReadOptions,
    StoredEvent,
)

if TYPE_CHECKING:  # imported on first use, see __getattr__
    from .aggregates.django_snapshots import DjangoSnapshotStore
    from .bus.redis import RedisEventBus, RedisEventBusConfig
    from .outbox.django import DjangoOutboxRepository
    from .outbox.relay import publish_outbox
    from .projections.django_checkpoints import DjangoCheckpointRepository
    from .projections.django_dead_letters import DjangoDLQRepository
    from .projections.runner import run_projections
    from .stores.django import DjangoEventStore

__version__ = "0.1.0"

__all__ = [
    "AggregateNotFoundError",
    "AggregateRepository",
    "AggregateRoot",
    "AppendResult",
    "BatchProjection",
    "CheckpointData",
    "CheckpointRepository",
    "CheckpointTrackingProjection",
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
    "DuplicateEventTypeError",
    "EventBus",
    "EventRegistry",
    "EventSourceError",
    "EventStore",
    "EventStream",
    "EventTypeNotFoundError",
    "EventVersionError",
    "ExpectedVersion",
    "InMemoryCheckpointRepository",
    "InMemoryDLQRepository",
    "InMemoryEventBus",
    "InMemoryEventStore",
    "InMemoryOutboxRepository",
    "InMemorySnapshotStore",
    "LagMetrics",
    "OptimisticLockError",
    "OutboxEntry",
    "OutboxRepository",
    "OutboxStats",
    "Projection",
    "ProjectionCoordinator",
    "ProjectionFailureCount",
    "ProjectionRegistry",
    "ReadDirection",
    "ReadOptions",
    "RedisEventBus",
    "RedisEventBusConfig",
    "StoredEvent",
    "__version__",
    "default_registry",
    "event_context",
    "get_event_bus",
    "get_event_class",
    "get_event_class_or_none",
    "handles",
    "is_event_registered",
    "list_registered_events",
    "publish_outbox",
    "register_event",
    "run_projections",
    "upcaster",
]

#: Modules of the names imported on first use: the Redis bus first (it needs only the
#: redis client), then the modules that need configured Django models.
_DEFERRED_MODULES = (
    "bus.redis",
    "stores.django",
    "aggregates.django_snapshots",
    "projections.django_checkpoints",
    "projections.django_dead_letters",
    "projections.runner",
    "outbox.django",
    "outbox.relay",
)


def __getattr__(name: str) -> Any:
    if name in __all__:
        for module_name in _DEFERRED_MODULES:
            module = import_module(f".{module_name}", __name__)
            if name in getattr(module, "__all__", ()):
                value = getattr(module, name)
                globals()[name] = value
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
