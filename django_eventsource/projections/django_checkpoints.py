"""Checkpoints in the ``Checkpoint`` model (the contract is in :mod:`.checkpoints`)."""

from __future__ import annotations

from uuid import UUID

from django.db import IntegrityError, router, transaction
from django.utils import timezone

from ..models import Checkpoint
from .checkpoints import CheckpointData, CheckpointRepository, LagMetrics


class DjangoCheckpointRepository(CheckpointRepository):
    """Checkpoints in the ``Checkpoint`` model, on the database the routers choose.

    ``using`` pins a database alias; by default ``router.db_for_write(Checkpoint)``.
    Lag figures are read from the ``EventRecord`` table of that database.
    """

    def __init__(self, using: str | None = None) -> None:
        self._using = using

    @property
    def db(self) -> str:
        """The database alias the checkpoints are written to."""
        return self._using or router.db_for_write(Checkpoint)

    def get_checkpoint(self, projection_name: str) -> UUID | None:
        return (
            Checkpoint.objects.using(self.db)
            .for_projection(projection_name)
            .values_list("last_event_id", flat=True)
            .first()
        )

    def get_position(self, projection_name: str) -> int:
        position = (
            Checkpoint.objects.using(self.db)
            .for_projection(projection_name)
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
        rows = Checkpoint.objects.using(self.db).for_projection(projection_name)
        if rows.advance(position, event_id, event_type, events_processed_delta):
            return
        try:
            with transaction.atomic(using=self.db):
                Checkpoint.objects.using(self.db).create(
                    projection_name=projection_name,
                    position=position,
                    last_event_id=event_id,
                    last_event_type=event_type,
                    last_processed_at=timezone.now(),
                    events_processed=events_processed_delta,
                )
        except IntegrityError:
            # Another process created the row between our UPDATE and INSERT.
            rows.advance(position, event_id, event_type, events_processed_delta)

    def get_lag_metrics(
        self, projection_name: str, event_types: list[str] | None = None
    ) -> LagMetrics | None:
        row = (
            Checkpoint.objects.using(self.db)
            .for_projection(projection_name)
            .with_lag(event_types)
            .first()
        )
        if row is None or not _has_run(row):
            return None
        return LagMetrics(
            projection_name=projection_name,
            last_event_id=row.last_event_id,
            latest_event_id=row.head_event_id,
            lag_seconds=row.lag_seconds(),
            events_processed=row.events_processed,
            last_processed_at=row.last_processed_at,
            lag_events=row.lag_events,
        )

    def reset_checkpoint(self, projection_name: str) -> None:
        Checkpoint.objects.using(self.db).for_projection(projection_name).rewind()

    def get_all_checkpoints(self) -> list[CheckpointData]:
        return [
            _to_data(row) for row in Checkpoint.objects.using(self.db).order_by("projection_name")
        ]

    def get_checkpoint_data(self, projection_name: str) -> CheckpointData | None:
        row = Checkpoint.objects.using(self.db).for_projection(projection_name).first()
        if row is None or not _has_run(row):
            return None
        return _to_data(row)


def _has_run(row: Checkpoint) -> bool:
    # The runner creates a row at position 0 before a projection's first batch (for its
    # lease and lock); until something is recorded in it, the projection never ran.
    return row.last_event_id is not None or row.position != 0 or row.paused


def _to_data(row: Checkpoint) -> CheckpointData:
    return CheckpointData(
        projection_name=row.projection_name,
        last_event_id=row.last_event_id,
        last_event_type=row.last_event_type or None,
        last_processed_at=row.last_processed_at,
        events_processed=row.events_processed,
        position=row.position,
        paused=row.paused,
        last_error=row.last_error,
    )


__all__ = ["DjangoCheckpointRepository"]
