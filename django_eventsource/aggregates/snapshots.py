"""Snapshots: a saved aggregate state so that ``load`` only replays the newer events.

``DjangoSnapshotStore`` keeps them in the ``Snapshot`` model; ``InMemorySnapshotStore``
in a dict. A snapshot whose ``schema_version`` differs from the aggregate class's
``schema_version`` is ignored and the aggregate is rebuilt from all its events.

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


class DjangoSnapshotStore(SnapshotStore):
    """Snapshots in the ``Snapshot`` model, one row per aggregate (the latest).

    ``using`` names the database; by default the router's choice for ``Snapshot``,
    which must be the event store's database for snapshots to share its transaction.
    """

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

        rows = list(
            Snapshot.objects.using(self._db())
            .filter(aggregate_type=aggregate_type, aggregate_id=aggregate_id)
            .values_list("version", "schema_version", "state", "tenant_id", "created_at")[:1]
        )
        if not rows:
            return None
        version, schema_version, state, tenant_id, created_at = rows[0]
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
        """Store ``snapshot`` unless a newer one is already stored.

        Inside ``AggregateRepository.save`` this joins the save's transaction, so the
        snapshot commits or rolls back with the events. It runs in a savepoint: a failed
        snapshot write (a concurrent writer, a serialization error) is logged and rolled
        back alone, never failing the save — snapshots are only an optimisation.
        """
        from django.db import DatabaseError, transaction

        db = self._db(write=True)
        try:
            with transaction.atomic(using=db):
                self._write(db, snapshot)
        except DatabaseError:
            logger.warning(
                "Could not store the snapshot of %s %s at version %s",
                snapshot.aggregate_type,
                snapshot.aggregate_id,
                snapshot.version,
                exc_info=True,
            )

    def _write(self, db: str, snapshot: SnapshotData) -> None:
        from django.db import IntegrityError, transaction

        from ..models import Snapshot

        if self._replace_older(db, snapshot):
            return
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
            # The row exists: it is newer than ours, or a concurrent writer inserted it
            # first. Replace it only if it is older.
            self._replace_older(db, snapshot)

    @staticmethod
    def _replace_older(db: str, snapshot: SnapshotData) -> bool:
        """Overwrite the stored snapshot if it is not newer; whether a row was updated."""
        from ..models import Snapshot

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
        return updated > 0

    def delete_snapshots(self, aggregate_id: UUID, aggregate_type: str) -> None:
        from ..models import Snapshot

        Snapshot.objects.using(self._db(write=True)).filter(
            aggregate_type=aggregate_type, aggregate_id=aggregate_id
        ).delete()


__all__ = ["DjangoSnapshotStore", "InMemorySnapshotStore", "SnapshotData", "SnapshotStore"]
