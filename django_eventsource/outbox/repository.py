"""The outbox repository contract and its in-memory implementation.

``DjangoEventStore`` writes one outbox row per event in the append transaction (when the
outbox is enabled); the relay (``django_eventsource.outbox.relay.publish_outbox``) claims
due rows, publishes them and marks them published. A repository holds every query the
relay needs, so the relay works on the Django table (``outbox.django``) and on the
in-memory implementation here alike.

The relay never needs the event store's safe high-water mark: it does not follow a
position cursor but picks every committed pending row, so a row that commits late is
simply picked up by a later pass. Per-aggregate order is kept by never claiming a row
while an earlier version of the same aggregate is still pending.

Framework-free: importing this module needs no configured Django.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async
from django.utils import timezone

from ..events.base import DomainEvent
from .rows import (
    FAILED,
    PENDING,
    PUBLISHED,
    OutboxEntry,
    OutboxFailure,
    OutboxStats,
    gives_up,
    outbox_row_values,
)


class OutboxRepository(ABC):
    """Storage of outbox rows.

    The first group of methods is the seed's repository API; the ``claim_due`` family is
    what the relay uses to share the work between several relays safely.
    """

    @abstractmethod
    def add_event(self, event: DomainEvent) -> int:
        """Store ``event`` as a pending row; returns the row id."""

    @abstractmethod
    def get_pending_events(self, limit: int = 100) -> list[OutboxEntry]:
        """Up to ``limit`` pending rows, oldest first."""

    @abstractmethod
    def get_entry(self, outbox_id: int) -> OutboxEntry | None:
        """One row by id, or ``None``."""

    @abstractmethod
    def mark_published(self, outbox_id: int) -> None:
        """Mark one row published now."""

    @abstractmethod
    def mark_failed(self, outbox_id: int, error: str) -> None:
        """Give up on one row: status ``failed`` with ``error`` (it stays visible)."""

    @abstractmethod
    def increment_retry(self, outbox_id: int, error: str) -> None:
        """Count one failed attempt of a row and record ``error``; it stays pending."""

    @abstractmethod
    def cleanup_published(self, days: int = 7) -> int:
        """Delete rows published more than ``days`` days ago; returns how many."""

    @abstractmethod
    def get_stats(self) -> OutboxStats:
        """Counts by status, the oldest pending row's creation time and the mean
        ``retry_count`` of the pending rows (``OutboxStats``)."""

    # -- relay support ----------------------------------------------------------------

    @abstractmethod
    def claim_due(
        self,
        claimer: str,
        limit: int,
        *,
        now: datetime,
        claim_timeout: float,
        exclude_ids: Iterable[int] = (),
        scan_limit: int | None = None,
    ) -> list[OutboxEntry]:
        """Claim up to ``limit`` due pending rows for ``claimer`` and return them by id.

        A row is due when its ``next_attempt_at`` has passed and nobody holds it (or the
        holder's claim is older than ``claim_timeout`` seconds). A row is never claimed
        while an earlier version of the same aggregate is pending outside this claim.
        ``scan_limit`` bounds how many due rows (in id order) are examined: a look-ahead
        claim gives up early when the rows it meets all wait for earlier versions.
        """

    @abstractmethod
    def mark_published_many(self, ids: Sequence[int], *, now: datetime) -> int:
        """Mark the given claimed rows published and release them; returns how many."""

    def mark_published_and_claim(
        self,
        ids: Sequence[int],
        claimer: str,
        limit: int,
        *,
        now: datetime,
        claim_timeout: float,
        exclude_ids: Iterable[int] = (),
        scan_limit: int | None = None,
    ) -> tuple[int, list[OutboxEntry]]:
        """``mark_published_many(ids)`` then ``claim_due(…)``: how many rows were marked,
        and the new claim.

        The relay calls this between two full batches. Storage that can do both in one
        transaction should, saving a commit per batch.
        """
        marked = self.mark_published_many(ids, now=now)
        claimed = self.claim_due(
            claimer,
            limit,
            now=now,
            claim_timeout=claim_timeout,
            exclude_ids=exclude_ids,
            scan_limit=scan_limit,
        )
        return marked, claimed

    #: Whether ``renew_claims`` is implemented. A relay on a repository without it keeps
    #: its claims for ``EVENTSOURCE_OUTBOX_CLAIM_TIMEOUT`` instead of a renewed lease.
    supports_claim_renewal: bool = False

    def renew_claims(self, ids: Sequence[int], claimer: str, *, now: datetime) -> int:
        """Move the claim time of the pending rows of ``ids`` that ``claimer`` still holds
        to ``now`` (the relay's heartbeat); returns how many rows were renewed."""
        raise NotImplementedError(f"{type(self).__name__} cannot renew claims")

    @abstractmethod
    def record_failures(
        self,
        failures: Sequence[OutboxFailure],
        *,
        now: datetime | None = None,
        give_up_after: float | None = None,
        max_attempts: int | None = None,
    ) -> int:
        """Count one failed attempt per row, made at ``now``, and release the row.

        A row's first failed attempt sets its ``first_failed_at``. The row becomes
        ``failed`` when ``give_up_after`` seconds have passed since then, or it has
        failed ``max_attempts`` times (``rows.gives_up``; ``None`` disables either
        limit). Returns how many became ``failed``.
        """

    @abstractmethod
    def release(self, ids: Sequence[int]) -> None:
        """Drop claims without counting an attempt (rows left unpublished on purpose)."""

    @abstractmethod
    def retry_failed(self, ids: Sequence[int] | None = None) -> int:
        """Put failed rows (all of them when ``ids`` is None) back to pending, due now."""

    # -- async twins ------------------------------------------------------------------

    async def aadd_event(self, event: DomainEvent) -> int:
        return await sync_to_async(self.add_event)(event)

    async def aget_pending_events(self, limit: int = 100) -> list[OutboxEntry]:
        return await sync_to_async(self.get_pending_events)(limit)

    async def amark_published(self, outbox_id: int) -> None:
        await sync_to_async(self.mark_published)(outbox_id)

    async def amark_failed(self, outbox_id: int, error: str) -> None:
        await sync_to_async(self.mark_failed)(outbox_id, error)

    async def aincrement_retry(self, outbox_id: int, error: str) -> None:
        await sync_to_async(self.increment_retry)(outbox_id, error)

    async def acleanup_published(self, days: int = 7) -> int:
        return await sync_to_async(self.cleanup_published)(days)

    async def aget_stats(self) -> OutboxStats:
        return await sync_to_async(self.get_stats)()

    async def aretry_failed(self, ids: Sequence[int] | None = None) -> int:
        return await sync_to_async(self.retry_failed)(ids)


class InMemoryOutboxRepository(OutboxRepository):
    """Outbox rows in a dict, for tests and the framework-free setup. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._entries: dict[int, OutboxEntry] = {}
        self._next_id = 1

    def add_event(self, event: DomainEvent) -> int:
        with self._lock:
            if any(e.event_id == event.event_id for e in self._entries.values()):
                raise ValueError(f"Event {event.event_id} is already in the outbox")
            outbox_id = self._next_id
            self._next_id += 1
            self._entries[outbox_id] = OutboxEntry(
                id=outbox_id,
                **outbox_row_values(event),
                created_at=timezone.now(),
                status=PENDING,
                published_at=None,
                retry_count=0,
                last_error="",
            )
            return outbox_id

    def get_pending_events(self, limit: int = 100) -> list[OutboxEntry]:
        with self._lock:
            return [e for _, e in sorted(self._entries.items()) if e.status == PENDING][:limit]

    def get_entry(self, outbox_id: int) -> OutboxEntry | None:
        with self._lock:
            return self._entries.get(outbox_id)

    def _update(self, outbox_id: int, **changes: Any) -> None:
        entry = self._entries.get(outbox_id)
        if entry is not None:
            self._entries[outbox_id] = replace(entry, **changes)

    def mark_published(self, outbox_id: int) -> None:
        self.mark_published_many([outbox_id], now=timezone.now())

    def mark_failed(self, outbox_id: int, error: str) -> None:
        with self._lock:
            self._update(outbox_id, status=FAILED, last_error=error, claimed_by="", claimed_at=None)

    def increment_retry(self, outbox_id: int, error: str) -> None:
        with self._lock:
            entry = self._entries.get(outbox_id)
            if entry is not None:
                self._update(
                    outbox_id,
                    retry_count=entry.retry_count + 1,
                    last_error=error,
                    first_failed_at=entry.first_failed_at or timezone.now(),
                )

    def cleanup_published(self, days: int = 7) -> int:
        cutoff = timezone.now() - timedelta(days=days)
        with self._lock:
            old = [
                i
                for i, e in self._entries.items()
                if e.status == PUBLISHED and e.published_at is not None and e.published_at < cutoff
            ]
            for outbox_id in old:
                del self._entries[outbox_id]
            return len(old)

    def get_stats(self) -> OutboxStats:
        with self._lock:
            entries = list(self._entries.values())
        pending = [e for e in entries if e.status == PENDING]
        return OutboxStats(
            pending_count=len(pending),
            published_count=sum(e.status == PUBLISHED for e in entries),
            failed_count=sum(e.status == FAILED for e in entries),
            oldest_pending=min((e.created_at for e in pending), default=None),
            avg_retries=sum(e.retry_count for e in pending) / len(pending) if pending else 0.0,
        )

    def claim_due(
        self,
        claimer: str,
        limit: int,
        *,
        now: datetime,
        claim_timeout: float,
        exclude_ids: Iterable[int] = (),
        scan_limit: int | None = None,
    ) -> list[OutboxEntry]:
        stale_before = now - timedelta(seconds=claim_timeout)
        excluded = set(exclude_ids)
        with self._lock:
            claimed: list[OutboxEntry] = []
            blocked: set[tuple[str, UUID]] = set()
            scanned = 0
            for outbox_id, entry in sorted(self._entries.items()):
                if len(claimed) >= limit:
                    break
                if entry.status != PENDING:
                    continue
                stream = (entry.aggregate_type, entry.aggregate_id)
                free = entry.claimed_at is None or entry.claimed_at < stale_before
                due = entry.next_attempt_at is None or entry.next_attempt_at <= now
                if free and due and outbox_id not in excluded:
                    scanned += 1
                    if scan_limit is not None and scanned > scan_limit:
                        break
                if stream in blocked or not free or not due or outbox_id in excluded:
                    # Everything later in this aggregate waits for this row.
                    blocked.add(stream)
                    continue
                claimed_entry = replace(entry, claimed_by=claimer, claimed_at=now)
                self._entries[outbox_id] = claimed_entry
                claimed.append(claimed_entry)
            return claimed

    def mark_published_many(self, ids: Sequence[int], *, now: datetime) -> int:
        count = 0
        with self._lock:
            for outbox_id in ids:
                entry = self._entries.get(outbox_id)
                if entry is not None and entry.status != PUBLISHED:
                    count += 1
                    self._update(
                        outbox_id,
                        status=PUBLISHED,
                        published_at=now,
                        claimed_by="",
                        claimed_at=None,
                        next_attempt_at=None,
                    )
        return count

    def record_failures(
        self,
        failures: Sequence[OutboxFailure],
        *,
        now: datetime | None = None,
        give_up_after: float | None = None,
        max_attempts: int | None = None,
    ) -> int:
        failed_at = now or timezone.now()
        given_up = 0
        with self._lock:
            for failure in failures:
                entry = self._entries.get(failure.id)
                if entry is None or entry.status != PENDING:
                    continue
                attempts = entry.retry_count + 1
                first_failed_at = entry.first_failed_at or failed_at
                giving_up = gives_up(
                    first_failed_at,
                    attempts,
                    failed_at,
                    give_up_after=give_up_after,
                    max_attempts=max_attempts,
                )
                given_up += giving_up
                self._update(
                    failure.id,
                    retry_count=attempts,
                    last_error=failure.error,
                    status=FAILED if giving_up else PENDING,
                    next_attempt_at=None if giving_up else failure.next_attempt_at,
                    first_failed_at=first_failed_at,
                    claimed_by="",
                    claimed_at=None,
                )
        return given_up

    def release(self, ids: Sequence[int]) -> None:
        with self._lock:
            for outbox_id in ids:
                self._update(outbox_id, claimed_by="", claimed_at=None)

    supports_claim_renewal = True

    def renew_claims(self, ids: Sequence[int], claimer: str, *, now: datetime) -> int:
        renewed = 0
        with self._lock:
            for outbox_id in ids:
                entry = self._entries.get(outbox_id)
                if entry is not None and entry.status == PENDING and entry.claimed_by == claimer:
                    self._update(outbox_id, claimed_at=now)
                    renewed += 1
        return renewed

    def retry_failed(self, ids: Sequence[int] | None = None) -> int:
        with self._lock:
            targets = [
                i
                for i, e in self._entries.items()
                if e.status == FAILED and (ids is None or i in set(ids))
            ]
            for outbox_id in targets:
                self._update(
                    outbox_id,
                    status=PENDING,
                    retry_count=0,
                    next_attempt_at=None,
                    first_failed_at=None,
                    claimed_by="",
                    claimed_at=None,
                )
            return len(targets)


__all__ = ["InMemoryOutboxRepository", "OutboxRepository"]
