"""Checkpoints: how far each projection has read the global event order.

A checkpoint is the last processed global position (an integer) plus a few facts for
operators (last event id and type, how many events were handled, when). The runner
writes it once per batch, in the same transaction as the projection's own writes.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from ..stores.interface import EventStore


@dataclass(frozen=True, slots=True)
class CheckpointData:
    """One projection's checkpoint."""

    projection_name: str
    last_event_id: UUID | None
    last_event_type: str | None
    last_processed_at: datetime | None
    events_processed: int
    position: int = 0


@dataclass(frozen=True, slots=True)
class LagMetrics:
    """How far a projection is behind the newest stored event.

    ``lag_events`` counts the (matching) events stored after the checkpoint;
    ``lag_seconds`` is the age of the oldest of them (0 when caught up).
    """

    projection_name: str
    last_event_id: UUID | None
    latest_event_id: UUID | None
    lag_seconds: float
    events_processed: int
    last_processed_at: datetime | None
    lag_events: int = 0


class CheckpointRepository(ABC):
    """Stores one checkpoint per projection name."""

    @abstractmethod
    def get_checkpoint(self, projection_name: str) -> UUID | None:
        """The id of the last event the projection processed, ``None`` when it never ran."""

    @abstractmethod
    def get_position(self, projection_name: str) -> int:
        """The last processed global position (0 when the projection never ran)."""

    @abstractmethod
    def update_checkpoint(
        self,
        projection_name: str,
        event_id: UUID,
        event_type: str,
        position: int,
        events_processed_delta: int = 1,
    ) -> None:
        """Record that the projection has processed everything up to ``position``."""

    @abstractmethod
    def get_lag_metrics(
        self, projection_name: str, event_types: list[str] | None = None
    ) -> LagMetrics | None:
        """Lag of the projection (only counting ``event_types`` when given), ``None`` if unknown."""

    @abstractmethod
    def reset_checkpoint(self, projection_name: str) -> None:
        """Forget the checkpoint: the projection starts again from position 0."""

    @abstractmethod
    def get_all_checkpoints(self) -> list[CheckpointData]:
        """Every checkpoint, ordered by projection name."""

    def get_checkpoint_data(self, projection_name: str) -> CheckpointData | None:
        """The full checkpoint of one projection, ``None`` when it never ran."""
        for data in self.get_all_checkpoints():
            if data.projection_name == projection_name:
                return data
        return None


class InMemoryCheckpointRepository(CheckpointRepository):
    """Checkpoints in process memory (tests, prototypes).

    Pass ``event_store`` to get real lag figures from ``get_lag_metrics``.
    """

    def __init__(self, event_store: EventStore | None = None) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, CheckpointData] = {}
        self._event_store = event_store

    def get_checkpoint(self, projection_name: str) -> UUID | None:
        data = self._data.get(projection_name)
        return data.last_event_id if data else None

    def get_position(self, projection_name: str) -> int:
        data = self._data.get(projection_name)
        return data.position if data else 0

    def update_checkpoint(
        self,
        projection_name: str,
        event_id: UUID,
        event_type: str,
        position: int,
        events_processed_delta: int = 1,
    ) -> None:
        with self._lock:
            previous = self._data.get(projection_name)
            processed = (previous.events_processed if previous else 0) + events_processed_delta
            self._data[projection_name] = CheckpointData(
                projection_name=projection_name,
                last_event_id=event_id,
                last_event_type=event_type,
                last_processed_at=datetime.now(UTC),
                events_processed=processed,
                position=position,
            )

    def get_lag_metrics(
        self, projection_name: str, event_types: list[str] | None = None
    ) -> LagMetrics | None:
        data = self._data.get(projection_name)
        if data is None:
            return None
        latest_event_id = data.last_event_id
        lag_events = 0
        lag_seconds = 0.0
        if self._event_store is not None:
            from ..stores.interface import ReadOptions

            pending = [
                stored
                for stored in self._event_store.read_all(ReadOptions(from_position=data.position))
                if event_types is None or stored.event_type in event_types
            ]
            if pending:
                latest_event_id = pending[-1].event_id
                lag_events = len(pending)
                lag_seconds = (datetime.now(UTC) - pending[0].stored_at).total_seconds()
        return LagMetrics(
            projection_name=projection_name,
            last_event_id=data.last_event_id,
            latest_event_id=latest_event_id,
            lag_seconds=max(lag_seconds, 0.0),
            events_processed=data.events_processed,
            last_processed_at=data.last_processed_at,
            lag_events=lag_events,
        )

    def reset_checkpoint(self, projection_name: str) -> None:
        with self._lock:
            self._data.pop(projection_name, None)

    def get_all_checkpoints(self) -> list[CheckpointData]:
        return [replace(self._data[name]) for name in sorted(self._data)]


class DjangoCheckpointRepository(CheckpointRepository):
    """Checkpoints in the ``Checkpoint`` model, on the database the routers choose.

    ``using`` pins a database alias; by default ``router.db_for_write(Checkpoint)``.
    Lag figures are read from the ``EventRecord`` table.
    """

    def __init__(self, using: str | None = None) -> None:
        self._using = using

    @property
    def db(self) -> str:
        """The database alias the checkpoints are written to."""
        from django.db import router

        from ..models import Checkpoint

        return self._using or router.db_for_write(Checkpoint)

    def get_checkpoint(self, projection_name: str) -> UUID | None:
        from ..models import Checkpoint

        return (
            Checkpoint.objects.using(self.db)
            .filter(projection_name=projection_name)
            .values_list("last_event_id", flat=True)
            .first()
        )

    def get_position(self, projection_name: str) -> int:
        from ..models import Checkpoint

        position = (
            Checkpoint.objects.using(self.db)
            .filter(projection_name=projection_name)
            .values_list("position", flat=True)
            .first()
        )
        return position or 0

    def update_checkpoint(
        self,
        projection_name: str,
        event_id: UUID,
        event_type: str,
        position: int,
        events_processed_delta: int = 1,
    ) -> None:
        from django.db import IntegrityError, transaction
        from django.db.models import F
        from django.utils import timezone

        from ..models import Checkpoint

        values = {
            "position": position,
            "last_event_id": event_id,
            "last_event_type": event_type,
            "last_processed_at": timezone.now(),
            "updated_at": timezone.now(),
        }
        rows = Checkpoint.objects.using(self.db).filter(projection_name=projection_name)
        if rows.update(events_processed=F("events_processed") + events_processed_delta, **values):
            return
        try:
            with transaction.atomic(using=self.db):
                Checkpoint.objects.using(self.db).create(
                    projection_name=projection_name,
                    events_processed=events_processed_delta,
                    **values,
                )
        except IntegrityError:
            # Another process created the row between our UPDATE and INSERT.
            rows.update(events_processed=F("events_processed") + events_processed_delta, **values)

    def get_lag_metrics(
        self, projection_name: str, event_types: list[str] | None = None
    ) -> LagMetrics | None:
        from django.utils import timezone

        from ..models import EventRecord

        data = self.get_checkpoint_data(projection_name)
        if data is None:
            return None
        events = EventRecord.objects.using(self.db)
        if event_types is not None:
            events = events.filter(event_type__in=event_types)
        pending = events.filter(position__gt=data.position)
        latest = events.order_by("-position").values_list("event_id", flat=True).first()
        oldest_recorded = pending.order_by("position").values_list("recorded_at", flat=True).first()
        lag_events = pending.count() if oldest_recorded is not None else 0
        lag_seconds = (
            max((timezone.now() - oldest_recorded).total_seconds(), 0.0)
            if oldest_recorded is not None
            else 0.0
        )
        return LagMetrics(
            projection_name=projection_name,
            last_event_id=data.last_event_id,
            latest_event_id=latest,
            lag_seconds=lag_seconds,
            events_processed=data.events_processed,
            last_processed_at=data.last_processed_at,
            lag_events=lag_events,
        )

    def reset_checkpoint(self, projection_name: str) -> None:
        from ..models import Checkpoint

        Checkpoint.objects.using(self.db).filter(projection_name=projection_name).update(
            position=0,
            last_event_id=None,
            last_event_type="",
            events_processed=0,
            last_processed_at=None,
        )

    def get_all_checkpoints(self) -> list[CheckpointData]:
        from ..models import Checkpoint

        return [
            _to_data(row) for row in Checkpoint.objects.using(self.db).order_by("projection_name")
        ]

    def get_checkpoint_data(self, projection_name: str) -> CheckpointData | None:
        from ..models import Checkpoint

        row = Checkpoint.objects.using(self.db).filter(projection_name=projection_name).first()
        if row is None or (row.last_event_id is None and row.position == 0):
            return None
        return _to_data(row)


def _to_data(row: object) -> CheckpointData:
    from ..models import Checkpoint

    assert isinstance(row, Checkpoint)
    return CheckpointData(
        projection_name=row.projection_name,
        last_event_id=row.last_event_id,
        last_event_type=row.last_event_type or None,
        last_processed_at=row.last_processed_at,
        events_processed=row.events_processed,
        position=row.position,
    )


__all__ = [
    "CheckpointData",
    "CheckpointRepository",
    "DjangoCheckpointRepository",
    "InMemoryCheckpointRepository",
    "LagMetrics",
]
