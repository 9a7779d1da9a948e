"""Dead letters: events a projection could not handle after its retries.

One entry per ``(event_id, projection_name)``: recording the same failure again updates
the entry (error, attempts, last failure) instead of adding a row.

Entries form sequences: the runner gives each the projection's ``sequence_key(event)``
(by default the aggregate id), and once an event is dead-lettered the later events of
its sequence are *parked* behind it (``parked=True``: stored, never handled) until the
head is retried successfully or skipped.

This module is the contract, its data and the in-memory repository; it needs no Django
settings. ``DjangoDLQRepository`` is in :mod:`.django_dead_letters`.
"""

from __future__ import annotations

import itertools
import threading
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

DLQStatus = Literal["failed", "retrying", "resolved"]


@dataclass(frozen=True, slots=True)
class DLQEntry:
    """One dead-lettered event of one projection."""

    id: int
    event_id: UUID
    projection_name: str
    event_type: str
    event_data: dict[str, Any]
    error_message: str
    error_stacktrace: str
    retry_count: int
    first_failed_at: datetime
    last_failed_at: datetime
    status: DLQStatus
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    global_position: int | None = None
    #: The projection's ``sequence_key(event)``; ``""`` for an entry outside any sequence.
    sequence_key: str = ""
    #: Waiting, never handled, behind the head of its sequence.
    parked: bool = False


@dataclass(frozen=True, slots=True)
class DLQStats:
    """Totals over the whole dead-letter queue (``total_failed`` counts no parked event)."""

    total_failed: int
    total_retrying: int
    affected_projections: int
    oldest_failure: datetime | None
    total_parked: int = 0


@dataclass(frozen=True, slots=True)
class ProjectionFailureCount:
    """Unresolved dead letters of one projection."""

    projection_name: str
    failure_count: int
    oldest_failure: datetime | None
    most_recent_failure: datetime | None


def describe_error(error: BaseException | str) -> tuple[str, str]:
    """``(message, stack trace)`` of an exception (or a plain message and no trace)."""
    if isinstance(error, BaseException):
        message = f"{type(error).__name__}: {error}"
        return message, "".join(traceback.format_exception(error))
    return str(error), ""


class DLQRepository(ABC):
    """Stores the dead letters of every projection."""

    @abstractmethod
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
        """Record (or update) the failure of ``projection_name`` on ``event_id``; returns its id.

        The stack trace is taken from ``error`` when it is an exception. The entry is the
        head of its sequence (not parked).
        """

    @abstractmethod
    def get_failed_events(
        self,
        projection_name: str | None = None,
        status: DLQStatus | None = "failed",
        limit: int = 100,
    ) -> list[DLQEntry]:
        """Entries with ``status`` (all statuses for ``None``), oldest first."""

    @abstractmethod
    def get_failed_event_by_id(self, dlq_id: int) -> DLQEntry | None:
        """One entry, ``None`` when there is no such id."""

    @abstractmethod
    def mark_resolved(self, dlq_id: int, resolved_by: str) -> None:
        """The event was handled after all (or deliberately dismissed)."""

    @abstractmethod
    def mark_retrying(self, dlq_id: int) -> None:
        """A retry of the entry is in progress."""

    @abstractmethod
    def get_failure_stats(self) -> DLQStats:
        """Totals over unresolved entries."""

    @abstractmethod
    def get_projection_failure_counts(self) -> list[ProjectionFailureCount]:
        """Unresolved entries per projection, most failures first."""

    @abstractmethod
    def delete_resolved_events(self, older_than_days: int = 30) -> int:
        """Delete entries resolved more than ``older_than_days`` ago; returns how many."""


class InMemoryDLQRepository(DLQRepository):
    """Dead letters in process memory (tests, prototypes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, DLQEntry] = {}
        self._ids = itertools.count(1)

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
        now = datetime.now(UTC)
        with self._lock:
            for entry in self._entries.values():
                if entry.event_id == event_id and entry.projection_name == projection_name:
                    self._entries[entry.id] = replace(
                        entry,
                        event_data=event_data,
                        error_message=message,
                        error_stacktrace=stacktrace,
                        retry_count=retry_count,
                        last_failed_at=now,
                        status="failed",
                        resolved_at=None,
                        resolved_by=None,
                        global_position=global_position
                        if global_position is not None
                        else entry.global_position,
                        sequence_key=sequence_key or entry.sequence_key,
                        parked=False,
                    )
                    return entry.id
            dlq_id = next(self._ids)
            self._entries[dlq_id] = DLQEntry(
                id=dlq_id,
                event_id=event_id,
                projection_name=projection_name,
                event_type=event_type,
                event_data=event_data,
                error_message=message,
                error_stacktrace=stacktrace,
                retry_count=retry_count,
                first_failed_at=now,
                last_failed_at=now,
                status="failed",
                global_position=global_position,
                sequence_key=sequence_key,
            )
            return dlq_id

    def get_failed_events(
        self,
        projection_name: str | None = None,
        status: DLQStatus | None = "failed",
        limit: int = 100,
    ) -> list[DLQEntry]:
        entries = [
            entry
            for entry in sorted(self._entries.values(), key=lambda e: e.id)
            if (projection_name is None or entry.projection_name == projection_name)
            and (status is None or entry.status == status)
            and not (status == "failed" and entry.parked)
        ]
        return entries[:limit]

    def get_failed_event_by_id(self, dlq_id: int) -> DLQEntry | None:
        return self._entries.get(dlq_id)

    def mark_resolved(self, dlq_id: int, resolved_by: str) -> None:
        with self._lock:
            entry = self._entries.get(dlq_id)
            if entry is not None:
                self._entries[dlq_id] = replace(
                    entry, status="resolved", resolved_at=datetime.now(UTC), resolved_by=resolved_by
                )

    def mark_retrying(self, dlq_id: int) -> None:
        with self._lock:
            entry = self._entries.get(dlq_id)
            if entry is not None:
                self._entries[dlq_id] = replace(entry, status="retrying")

    def get_failure_stats(self) -> DLQStats:
        open_entries = [e for e in self._entries.values() if e.status != "resolved"]
        return DLQStats(
            total_failed=sum(1 for e in open_entries if e.status == "failed" and not e.parked),
            total_retrying=sum(1 for e in open_entries if e.status == "retrying" and not e.parked),
            affected_projections=len({e.projection_name for e in open_entries}),
            oldest_failure=min((e.first_failed_at for e in open_entries), default=None),
            total_parked=sum(1 for e in open_entries if e.parked),
        )

    def get_projection_failure_counts(self) -> list[ProjectionFailureCount]:
        by_projection: dict[str, list[DLQEntry]] = {}
        for entry in self._entries.values():
            if entry.status != "resolved":
                by_projection.setdefault(entry.projection_name, []).append(entry)
        counts = [
            ProjectionFailureCount(
                projection_name=name,
                failure_count=len(entries),
                oldest_failure=min(e.first_failed_at for e in entries),
                most_recent_failure=max(e.last_failed_at for e in entries),
            )
            for name, entries in by_projection.items()
        ]
        return sorted(counts, key=lambda c: (-c.failure_count, c.projection_name))

    def delete_resolved_events(self, older_than_days: int = 30) -> int:
        cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
        with self._lock:
            doomed = [
                dlq_id
                for dlq_id, entry in self._entries.items()
                if entry.status == "resolved" and entry.resolved_at and entry.resolved_at < cutoff
            ]
            for dlq_id in doomed:
                del self._entries[dlq_id]
        return len(doomed)


__all__ = [
    "DLQEntry",
    "DLQRepository",
    "DLQStats",
    "InMemoryDLQRepository",
    "ProjectionFailureCount",
]
