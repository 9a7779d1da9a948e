"""Dead letters in the ``DeadLetter`` model (the contract is in :mod:`.dead_letters`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast
from uuid import UUID

from django.db import router, transaction
from django.utils import timezone

from ..models import DeadLetter
from .dead_letters import (
    DLQEntry,
    DLQRepository,
    DLQStats,
    DLQStatus,
    ProjectionFailureCount,
    describe_error,
)


class DjangoDLQRepository(DLQRepository):
    """Dead letters in the ``DeadLetter`` model, on the database the routers choose."""

    def __init__(self, using: str | None = None) -> None:
        self._using = using

    @property
    def db(self) -> str:
        """The database alias the dead letters are written to."""
        return self._using or router.db_for_write(DeadLetter)

    def add_failed_event(
        self,
        event_id: UUID,
        projection_name: str,
        event_type: str,
        event_data: dict[str, Any],
        error: BaseException | str,
        retry_count: int = 0,
        global_position: int | None = None,
        sequence_key: str = "",
    ) -> int:
        message, stacktrace = describe_error(error)
        defaults: dict[str, Any] = {
            "event_type": event_type,
            "event_data": event_data,
            "error_message": message,
            "error_stacktrace": stacktrace,
            "retry_count": retry_count,
            "last_failed_at": timezone.now(),
            "status": DeadLetter.Status.FAILED,
            "resolved_at": None,
            "resolved_by": "",
            "parked": False,
        }
        if sequence_key:
            defaults["sequence_key"] = sequence_key
        if global_position is not None:
            defaults["global_position"] = global_position
        with transaction.atomic(using=self.db):
            entry, _ = DeadLetter.objects.using(self.db).update_or_create(
                event_id=event_id, projection_name=projection_name, defaults=defaults
            )
        return entry.pk

    def park_event(
        self,
        event_id: UUID,
        projection_name: str,
        event_type: str,
        event_data: dict[str, Any],
        sequence_key: str,
        global_position: int,
        head_id: int | None = None,
    ) -> int:
        """Store an event, not handled, behind the open head of its sequence; returns its id."""
        behind = f" #{head_id}" if head_id is not None else ""
        entry, _ = DeadLetter.objects.using(self.db).update_or_create(
            event_id=event_id,
            projection_name=projection_name,
            defaults={
                "event_type": event_type,
                "event_data": event_data,
                "error_message": f"Not handled yet: waiting behind dead letter{behind} "
                f"of sequence {sequence_key}.",
                "error_stacktrace": "",
                "retry_count": 0,
                "status": DeadLetter.Status.FAILED,
                "resolved_at": None,
                "resolved_by": "",
                "sequence_key": sequence_key,
                "parked": True,
                "global_position": global_position,
            },
        )
        return int(entry.pk)

    def get_failed_events(
        self,
        projection_name: str | None = None,
        status: DLQStatus | None = "failed",
        limit: int = 100,
    ) -> list[DLQEntry]:
        rows = DeadLetter.objects.using(self.db).order_by("id")
        if projection_name is not None:
            rows = rows.for_projection(projection_name)
        if status is not None:
            rows = rows.filter(status=status)
        if status == "failed":
            rows = rows.filter(parked=False)
        return [_to_entry(row) for row in rows[:limit]]

    def get_open_events(
        self, projection_name: str | None = None, limit: int = 100
    ) -> list[DLQEntry]:
        """Entries not resolved yet (failed, or retrying), oldest first."""
        rows = DeadLetter.objects.using(self.db).open().order_by("id")
        if projection_name is not None:
            rows = rows.for_projection(projection_name)
        return [_to_entry(row) for row in rows[:limit]]

    def get_failed_event_by_id(self, dlq_id: int) -> DLQEntry | None:
        row = DeadLetter.objects.using(self.db).filter(pk=dlq_id).first()
        return _to_entry(row) if row else None

    def mark_resolved(self, dlq_id: int, resolved_by: str) -> None:
        DeadLetter.objects.using(self.db).filter(pk=dlq_id).mark_resolved(resolved_by)

    def mark_retrying(self, dlq_id: int) -> None:
        DeadLetter.objects.using(self.db).filter(pk=dlq_id).mark_retrying()

    def get_failure_stats(self) -> DLQStats:
        totals = DeadLetter.objects.using(self.db).status_summary()
        return DLQStats(
            total_failed=totals["failed"],
            total_retrying=totals["retrying"],
            affected_projections=totals["projections"],
            oldest_failure=totals["oldest"],
            total_parked=totals["parked"],
        )

    def get_projection_failure_counts(self) -> list[ProjectionFailureCount]:
        return [
            ProjectionFailureCount(
                projection_name=row["projection_name"],
                failure_count=row["failures"],
                oldest_failure=row["oldest"],
                most_recent_failure=row["newest"],
            )
            for row in DeadLetter.objects.using(self.db).open().per_projection()
        ]

    def delete_resolved_events(self, older_than_days: int = 30) -> int:
        cutoff = timezone.now() - timedelta(days=older_than_days)
        deleted, _ = DeadLetter.objects.using(self.db).resolved(before=cutoff).delete()
        return deleted


def _to_entry(row: DeadLetter) -> DLQEntry:
    return DLQEntry(
        id=row.pk,
        event_id=row.event_id,
        projection_name=row.projection_name,
        event_type=row.event_type,
        event_data=row.event_data,
        error_message=row.error_message,
        error_stacktrace=row.error_stacktrace,
        retry_count=row.retry_count,
        first_failed_at=row.first_failed_at,
        last_failed_at=row.last_failed_at,
        status=cast(DLQStatus, row.status),
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by or None,
        global_position=row.global_position,
        sequence_key=row.sequence_key,
        parked=row.parked,
    )


__all__ = ["DjangoDLQRepository"]
