"""Snapshots: a saved aggregate state so that ``load`` only replays the newer events.

``DjangoSnapshotStore`` (in :mod:`.django_snapshots`) keeps them in the ``Snapshot``
model; ``InMemorySnapshotStore`` in a dict. A snapshot whose
``schema_version`` differs from the aggregate class's ``schema_version`` is ignored and
the aggregate is rebuilt from all its events.

Pair each snapshot store with the event store of the same kind: ``DjangoSnapshotStore``
with ``DjangoEventStore`` on the same database (so a snapshot commits or rolls back with
the events of the save that took it), ``InMemorySnapshotStore`` with
``InMemoryEventStore``.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async

logger = logging.getLogger("django_eventsource")


@dataclass(frozen=True, slots=True)
class SnapshotData:
    """An aggregate's state at ``version``."""

    aggregate_id: UUID
    aggregate_type: str
    version: int
    schema_version: int
    state: dict[str, Any]
    tenant_id: UUID | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class SnapshotStore(ABC):
    """Where snapshots live. Sync methods with async twins."""

    @abstractmethod
    def get_snapshot(self, aggregate_id: UUID, aggregate_type: str) -> SnapshotData | None:
        """The latest snapshot of an aggregate, or ``None``."""

    @abstractmethod
    def save_snapshot(self, snapshot: SnapshotData) -> None:
        """Store ``snapshot`` (replacing an older one of the same aggregate)."""

    @abstractmethod
    def delete_snapshots(self, aggregate_id: UUID, aggregate_type: str) -> None:
        """Forget every snapshot of an aggregate."""

    async def aget_snapshot(self, aggregate_id: UUID, aggregate_type: str) -> SnapshotData | None:
        return await sync_to_async(self.get_snapshot)(aggregate_id, aggregate_type)

    async def asave_snapshot(self, snapshot: SnapshotData) -> None:
        await sync_to_async(self.save_snapshot)(snapshot)

    async def adelete_snapshots(self, aggregate_id: UUID, aggregate_type: str) -> None:
        await sync_to_async(self.delete_snapshots)(aggregate_id, aggregate_type)


class InMemorySnapshotStore(SnapshotStore):
    """Snapshots in a dict; for tests and single processes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[tuple[str, UUID], SnapshotData] = {}

    def get_snapshot(self, aggregate_id: UUID, aggregate_type: str) -> SnapshotData | None:
        with self._lock:
            return self._snapshots.get((aggregate_type, aggregate_id))

    def save_snapshot(self, snapshot: SnapshotData) -> None:
        key = (snapshot.aggregate_type, snapshot.aggregate_id)
        with self._lock:
            current = self._snapshots.get(key)
            if current is None or current.version <= snapshot.version:
                self._snapshots[key] = snapshot

    def delete_snapshots(self, aggregate_id: UUID, aggregate_type: str) -> None:
        with self._lock:
            self._snapshots.pop((aggregate_type, aggregate_id), None)


__all__ = ["InMemorySnapshotStore", "SnapshotData", "SnapshotStore"]
