"""Snapshots: a saved aggregate state so that ``load`` only replays the newer events.

``DjangoSnapshotStore`` keeps them in the ``Snapshot`` model; ``InMemorySnapshotStore``
in a dict. A snapshot whose ``schema_version`` differs from the aggregate class's
``schema_version`` is ignored and the aggregate is rebuilt from all its events.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async


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


class DjangoSnapshotStore(SnapshotStore):
    """Snapshots in the ``Snapshot`` model, one row per aggregate (the latest)."""

    def __init__(self, using: str | None = None) -> None:
        self._using = using

    def _db(self, write: bool = False) -> str:
        from django.db import router

        from ..models import Snapshot

        if self._using:
            return self._using
        return (router.db_for_write if write else router.db_for_read)(Snapshot) or "default"

    def get_snapshot(self, aggregate_id: UUID, aggregate_type: str) -> SnapshotData | None:
        from ..models import Snapshot

        row = (
            Snapshot.objects.using(self._db())
            .filter(aggregate_type=aggregate_type, aggregate_id=aggregate_id)
            .values_list("version", "schema_version", "state", "tenant_id", "created_at")
            .first()
        )
        if row is None:
            return None
        version, schema_version, state, tenant_id, created_at = row
        return SnapshotData(
            aggregate_id=aggregate_id,
            aggregate_type=aggregate_type,
            version=version,
            schema_version=schema_version,
            state=state,
            tenant_id=tenant_id,
            created_at=created_at,
        )

    def save_snapshot(self, snapshot: SnapshotData) -> None:
        from ..models import Snapshot

        db = self._db(write=True)
        updated = (
            Snapshot.objects.using(db)
            .filter(
                aggregate_type=snapshot.aggregate_type,
                aggregate_id=snapshot.aggregate_id,
                version__lte=snapshot.version,
            )
            .update(
                version=snapshot.version,
                schema_version=snapshot.schema_version,
                state=snapshot.state,
                tenant_id=snapshot.tenant_id,
                created_at=snapshot.created_at,
            )
        )
        if updated:
            return
        exists = (
            Snapshot.objects.using(db)
            .filter(aggregate_type=snapshot.aggregate_type, aggregate_id=snapshot.aggregate_id)
            .exists()
        )
        if exists:  # a newer snapshot is already stored
            return
        from django.db import IntegrityError, transaction

        try:
            with transaction.atomic(using=db):
                Snapshot.objects.using(db).create(
                    aggregate_type=snapshot.aggregate_type,
                    aggregate_id=snapshot.aggregate_id,
                    version=snapshot.version,
                    schema_version=snapshot.schema_version,
                    state=snapshot.state,
                    tenant_id=snapshot.tenant_id,
                    created_at=snapshot.created_at,
                )
        except IntegrityError:
            # A concurrent save stored one first; snapshots are an optimisation only.
            pass

    def delete_snapshots(self, aggregate_id: UUID, aggregate_type: str) -> None:
        from ..models import Snapshot

        Snapshot.objects.using(self._db(write=True)).filter(
            aggregate_type=aggregate_type, aggregate_id=aggregate_id
        ).delete()


__all__ = ["DjangoSnapshotStore", "InMemorySnapshotStore", "SnapshotData", "SnapshotStore"]
