"""Several projections together: live dispatch, catch-up from a store, rebuilds and health.

``ProjectionRegistry`` is the in-process fan-out (hand it to an event bus, or call
``dispatch`` yourself). ``ProjectionCoordinator`` adds a store and checkpoints: it catches
projections up from their checkpoints, rebuilds one from position 0 and reports health.
Under Django, ``run_projections`` (``projections.runner``) does the same catch-up with
database transactions, leases and signals; the coordinator is the framework-free form.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .._runtime import run_to_completion
from ..events.base import DomainEvent
from ..exceptions import ProjectionError
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

    def unregister_projection(self, name: str) -> None:
        with self._lock:
            self._projections.pop(name, None)

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
        """Hand ``event`` to every interested projection.

        A failing projection does not stop the others; the first failure is raised as a
        ``ProjectionError`` once all have been called.
        """
        first_error: ProjectionError | None = None
        for projection in self.get_all():
            if not projection.is_interested_in(event):
                continue
            try:
                run_to_completion(projection.handle(event))
            except Exception as exc:
                logger.exception(
                    "Projection %s failed on %s",
                    projection.name,
                    event.event_type,
                    extra={"projection": projection.name, "event_id": str(event.event_id)},
                )
                if first_error is None:
                    first_error = ProjectionError(projection.name, event.event_id, str(exc))
                    first_error.__cause__ = exc
        if first_error is not None:
            raise first_error

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
    every unresolved one. ``healthy`` is true when there is none.
    """

    name: str
    position: int
    lag_events: int
    dead_letters: int
    lag_seconds: float = 0.0
    last_processed_at: datetime | None = None

    @property
    def healthy(self) -> bool:
        return self.dead_letters == 0


class ProjectionCoordinator:
    """Catches registered projections up from an event store, with checkpoints.

    Events are read in global order from each projection's checkpoint, handled with
    retries, dead-lettered when they keep failing, and the checkpoint moves once per
    batch.
    """

    def __init__(
        self,
        registry: ProjectionRegistry,
        event_store: EventStore,
        checkpoint_repo: CheckpointRepository | None = None,
        dlq_repo: DLQRepository | None = None,
        batch_size: int = 500,
    ) -> None:
        self.registry = registry
        self.event_store = event_store
        self.checkpoint_repo = checkpoint_repo or InMemoryCheckpointRepository(event_store)
        self.dlq_repo = dlq_repo or InMemoryDLQRepository()
        self.batch_size = batch_size

    def dispatch(self, event: DomainEvent) -> None:
        """Live dispatch to every interested projection (see ``ProjectionRegistry``)."""
        self.registry.dispatch(event)

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
        self.checkpoint_repo.reset_checkpoint(name)
        return self._catch_up_one(projection)

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
            report[name] = ProjectionHealth(
                name=name,
                position=self.checkpoint_repo.get_position(name),
                # A projection that never ran is behind by every stored event.
                lag_events=lag.lag_events if lag else self.event_store.get_global_position(),
                dead_letters=failures.get(name, 0),
                lag_seconds=lag.lag_seconds if lag else 0.0,
                last_processed_at=lag.last_processed_at if lag else None,
            )
        return report

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


__all__ = ["ProjectionCoordinator", "ProjectionHealth", "ProjectionRegistry"]
