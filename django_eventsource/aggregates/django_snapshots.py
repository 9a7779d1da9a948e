"""``DjangoSnapshotStore``: snapshots in the ``Snapshot`` model, one row per aggregate."""

from __future__ import annotations

import logging
from uuid import UUID

from django.db import DatabaseError, IntegrityError, router, transaction

from ..models import Snapshot
from .snapshots import SnapshotData, SnapshotStore

logger = logging.getLogger("django_eventsource")


class DjangoSnapshotStore(SnapshotStore):
    """Snapshots in the ``Snapshot`` model, one row per aggregate (the latest).

    ``using`` names the database; by default the router's choice for ``Snapshot``,
    which must be the event store's database for snapshots to share its transaction.
    """

    def __init__(self, using: str | None = None) -> None:
        self._using = using

    def _db(self, write: bool = False) -> str:
        if self._using:
            return self._using
        return (router.db_for_write if write else router.db_for_read)(Snapshot) or "default"

    def get_snapshot(self, aggregate_id: UUID, aggregate_type: str) -> SnapshotData | None:
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
        Snapshot.objects.using(self._db(write=True)).filter(
            aggregate_type=aggregate_type, aggregate_id=aggregate_id
        ).delete()


__all__ = ["DjangoSnapshotStore"]
