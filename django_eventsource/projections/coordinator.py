"""Several projections together: live dispatch, catch-up from a store, rebuilds and health.

``ProjectionRegistry`` is the in-process fan-out (hand it to an event bus, or call
``dispatch`` yourself). ``ProjectionCoordinator`` adds a store and checkpoints: it catches
projections up from their checkpoints, rebuilds them from position 0 and reports health.
Under Django, ``run_projections`` (``projections.runner``) does the same catch-up with
database transactions, leases and signals; the coordinator is the framework-free form.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async

from .._runtime import run_to_completion
from ..events.base import DomainEvent
from ..stores.in_memory import InMemoryEventStore
from ..stores.interface import EventStore, ReadOptions
from .base import Projection, apply_with_retries
from .checkpoints import CheckpointRepository, InMemoryCheckpointRepository
from .dead_letters import DLQRepository, InMemoryDLQRepository

logger = logging.getLogger("django_eventsource")


class ProjectionRegistry:
    """The projections of a process, by name."""

    def __init__(self, projections: list[Projection] | None = None) -> None:
        self._lock = threading.Lock()
        self._projections: dict[str, Projection] = {}
        for projection in projections or []:
            self.register_projection(projection)

    def register_projection(self, projection: Projection) -> Projection:
        """Add ``projection``; a second projection with the same name is an error."""
        with self._lock:
            if projection.name in self._projections:
                raise ValueError(f"A projection named {projection.name!r} is already registered")
            self._projections[projection.name] = projection
        return projection

    def unregister_projection(self, name: str) -> bool:
        """Remove the projection called ``name``; returns whether there was one."""
        with self._lock:
            return self._projections.pop(name, None) is not None

    def get(self, name: str) -> Projection:
        """The projection called ``name``; ``KeyError`` naming the registered ones otherwise."""
        try:
            return self._projections[name]
        except KeyError:
            raise KeyError(
                f"No projection named {name!r}; registered: {', '.join(sorted(self._projections))}"
            ) from None

    def get_all(self) -> list[Projection]:
        return list(self._projections.values())

    def get_projection_count(self) -> int:
        """How many projections are registered."""
        return len(self._projections)

    def __len__(self) -> int:
        return len(self._projections)

    def __contains__(self, name: object) -> bool:
        return name in self._projections

    def subscribed_to(self) -> list[type[DomainEvent]]:
        """Union of the projections' subscriptions (``[]`` if any projection wants everything)."""
        wanted: list[type[DomainEvent]] = []
        for projection in self.get_all():
            classes = projection.subscribed_to()
            if not classes:
                return []
            wanted.extend(c for c in classes if c not in wanted)
        return wanted

    def dispatch(self, event: DomainEvent) -> None:
        """Hand ``event`` to every interested projection, in registration order.

        A projection that raises is logged (an ERROR on the ``django_eventsource`` logger
        with the traceback and the extra fields ``projection``, ``event_id`` and
        ``event_type``) and the others still get the event; nothing is raised. Live
        dispatch has no retry or dead letter: a projection that must not miss an event
        is a ``CheckpointTrackingProjection`` or runs under ``run_projections``.
        """
        for projection in self.get_all():
            if not projection.is_interested_in(event):
                continue
            try:
                run_to_completion(projection.handle(event))
            except Exception:
                logger.exception(
                    "Projection %s failed on %s %s",
                    projection.name,
                    event.event_type,
                    event.event_id,
                    extra={
                        "projection": projection.name,
                        "event_id": str(event.event_id),
                        "event_type": event.event_type,
                    },
                )

    async def adispatch(self, event: DomainEvent) -> None:
        await sync_to_async(self.dispatch)(event)

    def dispatch_many(self, events: Iterable[DomainEvent]) -> None:
        """``dispatch`` each event in turn (so each projection sees them in this order)."""
        for event in events:
            self.dispatch(event)

    async def adispatch_many(self, events: Iterable[DomainEvent]) -> None:
        await sync_to_async(self.dispatch_many)(list(events))

    def reset_all(self) -> None:
        """Call ``reset()`` on every projection; the first error stops and is raised."""
        for projection in self.get_all():
            projection.reset()

    async def areset_all(self) -> None:
        await sync_to_async(self.reset_all)()

    # An EventSubscriber-compatible face, so the registry can subscribe to a bus.
    def handle(self, event: DomainEvent) -> None:
        self.dispatch(event)


@dataclass(frozen=True, slots=True)
class ProjectionHealth:
    """Where one projection stands: its checkpoint, how far behind it is, its dead letters.

    ``lag_events`` and ``lag_seconds`` are the lag figures of the checkpoint repositories
    (``LagMetrics``): the distance in global positions from the checkpoint to the newest
    event (an upper bound, as positions left unused by rolled-back transactions count
    too), and the age of the oldest event the projection has not processed yet (0 when
    it is caught up). ``dead_letters`` counts the entries that need attention:
    ``get_health()`` counts those in status "failed", ``ProjectionCoordinator.health()``
    every unresolved one. ``parked`` counts the events waiting behind those dead letters
    (``get_health()``). ``paused`` says the projection stopped after
    ``EVENTSOURCE_PROJECTION_PAUSE_AFTER`` consecutive failures (``last_error`` is the
    last one). ``healthy`` is true when there is no dead letter and no pause.
    """

    name: str
    position: int
    lag_events: int
    dead_letters: int
    lag_seconds: float = 0.0
    last_processed_at: datetime | None = None
    parked: int = 0
    paused: bool = False
    last_error: str = ""

    @property
    def healthy(self) -> bool:
        return self.dead_letters == 0 and not self.paused


@dataclass(frozen=True, slots=True)
class ProjectionInfo:
    """What ``ProjectionCoordinator.get_projection_info()`` tells about one projection.

    ``event_types`` are the stored type names of the classes it subscribes to (empty:
    every event); ``position``, ``lag_events``, ``lag_seconds``, ``last_processed_at``
    and ``dead_letters`` are those of ``ProjectionHealth``; ``events_processed`` counts
    the events its handlers were given.
    """

    name: str
    event_types: tuple[str, ...]
    position: int
    lag_events: int
    lag_seconds: float
    events_processed: int
    last_processed_at: datetime | None
    dead_letters: int

    @property
    def healthy(self) -> bool:
        return self.dead_letters == 0


class ProjectionCoordinator:
    """Catches registered projections up from an event store, with checkpoints.

    Events are read in global order from each projection's checkpoint, handled with
    retries, dead-lettered when they keep failing, and the checkpoint moves once per
    batch. Without ``event_store`` the coordinator has an ``InMemoryEventStore`` of its
    own (``coordinator.event_store``), handy in tests and scripts; the repositories
    default to in-memory ones too.
    """

    def __init__(
        self,
        registry: ProjectionRegistry,
        event_store: EventStore | None = None,
        checkpoint_repo: CheckpointRepository | None = None,
        dlq_repo: DLQRepository | None = None,
        batch_size: int = 500,
    ) -> None:
        self.registry = registry
        self.event_store = InMemoryEventStore() if event_store is None else event_store
        self.checkpoint_repo = checkpoint_repo or InMemoryCheckpointRepository(self.event_store)
        self.dlq_repo = dlq_repo or InMemoryDLQRepository()
        self.batch_size = batch_size

    def dispatch(self, event: DomainEvent) -> None:
        """Live dispatch to every interested projection (see ``ProjectionRegistry``)."""
        self.registry.dispatch(event)

    def dispatch_events(self, events: Iterable[DomainEvent]) -> None:
        """Live dispatch of several events, in order (``ProjectionRegistry.dispatch_many``)."""
        self.registry.dispatch_many(events)

    async def adispatch_events(self, events: Iterable[DomainEvent]) -> None:
        await sync_to_async(self.dispatch_events)(list(events))

    def catch_up(self, names: list[str] | None = None) -> dict[str, int]:
        """Bring projections up to the store's safe high-water mark; events read per name."""
        projections = (
            [self.registry.get(n) for n in names] if names is not None else self.registry.get_all()
        )
        return {p.name: self._catch_up_one(p) for p in projections}

    def rebuild(self, name: str) -> int:
        """Reset a projection and replay every event into it; returns the events read."""
        projection = self.registry.get(name)
        projection.reset()
        # The coordinator's checkpoint, which a CheckpointTrackingProjection's own reset()
        # does not reach unless both share one repository; rewinding twice is harmless.
        self.checkpoint_repo.reset_checkpoint(name)
        return self._catch_up_one(projection)

    def rebuild_all(self) -> dict[str, int]:
        """``rebuild`` every registered projection; events read per name."""
        return {
            projection.name: self.rebuild(projection.name) for projection in self.registry.get_all()
        }

    async def arebuild_all(self) -> dict[str, int]:
        return await sync_to_async(self.rebuild_all)()

    def health(self) -> dict[str, ProjectionHealth]:
        """Position, lag and open dead letters of every registered projection."""
        failures = {
            c.projection_name: c.failure_count
            for c in self.dlq_repo.get_projection_failure_counts()
        }
        report = {}
        for projection in self.registry.get_all():
            name = projection.name
            lag = self.checkpoint_repo.get_lag_metrics(name)
            checkpoint = self.checkpoint_repo.get_checkpoint_data(name)
            report[name] = ProjectionHealth(
                name=name,
                position=self.checkpoint_repo.get_position(name),
                # A projection that never ran is behind by every stored event.
                lag_events=lag.lag_events if lag else self.event_store.get_global_position(),
                dead_letters=failures.get(name, 0),
                lag_seconds=lag.lag_seconds if lag else 0.0,
                last_processed_at=lag.last_processed_at if lag else None,
                paused=checkpoint.paused if checkpoint else False,
                last_error=checkpoint.last_error if checkpoint else "",
            )
        return report

    def get_projection_info(self) -> dict[str, ProjectionInfo]:
        """Name, subscribed event types, position, lag and dead letters of every projection."""
        info: dict[str, ProjectionInfo] = {}
        for name, health in self.health().items():
            projection = self.registry.get(name)
            checkpoint = self.checkpoint_repo.get_checkpoint_data(name)
            info[name] = ProjectionInfo(
                name=name,
                event_types=tuple(cls.event_type_name() for cls in projection.subscribed_to()),
                position=health.position,
                lag_events=health.lag_events,
                lag_seconds=health.lag_seconds,
                events_processed=checkpoint.events_processed if checkpoint else 0,
                last_processed_at=health.last_processed_at,
                dead_letters=health.dead_letters,
            )
        return info

    async def aget_projection_info(self) -> dict[str, ProjectionInfo]:
        return await sync_to_async(self.get_projection_info)()

    def _catch_up_one(self, projection: Projection) -> int:
        total = 0
        while True:
            position = self.checkpoint_repo.get_position(projection.name)
            batch = list(
                self.event_store.read_all(
                    ReadOptions(from_position=position, limit=self.batch_size)
                )
            )
            if not batch:
                return total
            handled = 0
            for stored in batch:
                if not projection.is_interested_in(stored.event):
                    continue
                handled += 1
                failure = apply_with_retries(projection, stored.event)
                if failure is not None:
                    self.dlq_repo.add_failed_event(
                        event_id=stored.event_id,
                        projection_name=projection.name,
                        event_type=stored.event_type,
                        event_data=stored.event.to_dict(),
                        error=failure.error,
                        retry_count=failure.attempts,
                        global_position=stored.global_position,
                    )
            last = batch[-1]
            self.checkpoint_repo.update_checkpoint(
                projection.name, last.event_id, last.event_type, last.global_position, handled
            )
            total += len(batch)

    def as_dict(self) -> dict[str, Any]:
        """``health()`` as plain data (for JSON views and logs)."""
        return {
            name: {
                "position": h.position,
                "lag_events": h.lag_events,
                "dead_letters": h.dead_letters,
                "healthy": h.healthy,
            }
            for name, h in self.health().items()
        }


__all__ = ["ProjectionCoordinator", "ProjectionHealth", "ProjectionInfo", "ProjectionRegistry"]
