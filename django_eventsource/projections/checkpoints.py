"""Checkpoints: how far each projection has read the global event order.

A checkpoint is the last processed global position (an integer) plus a few facts for
operators (last event id and type, how many events were handled, when). The runner
writes it once per batch, in the same transaction as the projection's own writes.

This module is the contract, its data and the in-memory repository; it needs no Django
settings. ``DjangoCheckpointRepository`` is in :mod:`.django_checkpoints`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from uuid import UUID

from ..stores.interface import EventStore, ReadOptions


@dataclass(frozen=True, slots=True)
class CheckpointData:
    """One projection's checkpoint."""

    projection_name: str
    last_event_id: UUID | None
    last_event_type: str | None
    last_processed_at: datetime | None
    events_processed: int
    position: int = 0
    #: Stopped after ``EVENTSOURCE_PROJECTION_PAUSE_AFTER`` consecutive failed events.
    paused: bool = False
    #: The last error that dead-lettered one of its events (cleared on resume).
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class LagMetrics:
    """How far a projection is behind the newest stored event.

    ``lag_events`` is the distance in global positions from the checkpoint to the newest
    (matching) event: positions left unused by rolled-back transactions count too, so it
    is an upper bound that costs no count. ``lag_seconds`` is the age of the oldest
    (matching) event after the checkpoint (0 when caught up).
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
            oldest = newest = None
            for stored in self._event_store.read_all(ReadOptions(from_position=data.position)):
                if event_types is None or stored.event_type in event_types:
                    oldest = oldest or stored
                    newest = stored
            if oldest is not None and newest is not None:
                latest_event_id = newest.event_id
                lag_events = newest.global_position - data.position
                lag_seconds = (datetime.now(UTC) - oldest.stored_at).total_seconds()
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


__all__ = [
    "CheckpointData",
    "CheckpointRepository",
    "InMemoryCheckpointRepository",
    "LagMetrics",
]
