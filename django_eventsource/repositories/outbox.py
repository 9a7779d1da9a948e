"""The transactional outbox: events waiting to be published to the event bus.

``DjangoEventStore`` writes one ``OutboxMessage`` row per event in the append transaction
(when the outbox is enabled); the relay (``django_eventsource.relay.publish_outbox``)
claims due rows, publishes them and marks them published. The repositories here hold
every query the relay needs, so the relay itself works on the Django tables and on the
in-memory implementation alike.

The relay never needs the event store's safe high-water mark: it does not follow a
position cursor but picks every committed pending row, so a row that commits late is
simply picked up by a later pass. Per-aggregate order is kept by never claiming a row
while an earlier version of the same aggregate is still pending.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from asgiref.sync import sync_to_async
from django.utils import timezone

from ..events.base import DomainEvent
from ..events.serialization import StoredEventData

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from ..models import OutboxMessage, OutboxMessageQuerySet

OutboxStatus = Literal["pending", "published", "failed"]

PENDING: OutboxStatus = "pending"
PUBLISHED: OutboxStatus = "published"
FAILED: OutboxStatus = "failed"


@dataclass(frozen=True)
class OutboxEntry:
    """One outbox row as the relay and the admin see it.

    ``event_data`` is the event's ``to_dict()`` (a ``dict``, or for a claimed row the
    stored JSON, decoded when first read). The fields after ``last_error`` are the
    relay's bookkeeping: the event's version in its aggregate, when the next attempt is
    due, and which relay holds the row (and since when).
    """

    id: int
    event_id: UUID
    event_type: str
    aggregate_id: UUID
    aggregate_type: str
    tenant_id: UUID | None
    event_data: Mapping[str, Any]
    created_at: datetime
    status: OutboxStatus
    published_at: datetime | None
    retry_count: int
    last_error: str
    aggregate_version: int = 0
    next_attempt_at: datetime | None = None
    claimed_by: str = ""
    claimed_at: datetime | None = None


@dataclass(frozen=True)
class OutboxStats:
    """Row counts by status and the creation time of the oldest pending row."""

    pending_count: int
    published_count: int
    failed_count: int
    oldest_pending: datetime | None


@dataclass(frozen=True)
class OutboxFailure:
    """A failed publishing attempt of one claimed row, as reported by the relay."""

    id: int
    error: str
    next_attempt_at: datetime


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
        """Counts by status and the oldest pending row's creation time."""

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
    ) -> list[OutboxEntry]:
        """Claim up to ``limit`` due pending rows for ``claimer`` and return them by id.

        A row is due when its ``next_attempt_at`` has passed and nobody holds it (or the
        holder's claim is older than ``claim_timeout`` seconds). A row is never claimed
        while an earlier version of the same aggregate is pending outside this claim.
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
    ) -> tuple[int, list[OutboxEntry]]:
        """``mark_published_many(ids)`` then ``claim_due(…)``: how many rows were marked,
        and the new claim.

        The relay calls this between two full batches. Storage that can do both in one
        transaction should, saving a commit per batch.
        """
        marked = self.mark_published_many(ids, now=now)
        claimed = self.claim_due(
            claimer, limit, now=now, claim_timeout=claim_timeout, exclude_ids=exclude_ids
        )
        return marked, claimed

    @abstractmethod
    def record_failures(self, failures: Sequence[OutboxFailure], *, max_attempts: int) -> int:
        """Count one failed attempt per row and release it; rows reaching
        ``max_attempts`` become ``failed``. Returns how many became ``failed``."""

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


def _entry_values(event: DomainEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "aggregate_id": event.aggregate_id,
        "aggregate_type": event.aggregate_type,
        "aggregate_version": event.aggregate_version,
        "tenant_id": event.tenant_id,
        "event_data": event.to_dict(),
    }


# ---------------------------------------------------------------------------------------
# Django


_ENTRY_FIELDS = (
    "id",
    "event_id",
    "event_type",
    "aggregate_id",
    "aggregate_type",
    "tenant_id",
    "event_data",
    "created_at",
    "status",
    "published_at",
    "retry_count",
    "last_error",
    "aggregate_version",
    "next_attempt_at",
    "claimed_by",
    "claimed_at",
)


#: Columns a failed attempt changes.
_FAILURE_FIELDS = [
    "retry_count",
    "last_error",
    "status",
    "next_attempt_at",
    "claimed_by",
    "claimed_at",
]


def _to_entry(row: Sequence[Any]) -> OutboxEntry:
    return OutboxEntry(*row)


def _entry_id(entry: OutboxEntry) -> int:
    return entry.id


#: The partial index of pending rows by id (``OutboxMessage.Meta.indexes``).
_PENDING_ID_INDEX = "es_outbox_pending_id_idx"

_ENTRY_UUIDS = [_ENTRY_FIELDS.index(name) for name in ("event_id", "aggregate_id", "tenant_id")]
_ENTRY_DATETIMES = [
    _ENTRY_FIELDS.index(name)
    for name in ("created_at", "published_at", "next_attempt_at", "claimed_at")
]
_ENTRY_DATA = _ENTRY_FIELDS.index("event_data")
_ENTRY_EVENT_ID = _ENTRY_FIELDS.index("event_id")
_ENTRY_EVENT_TYPE = _ENTRY_FIELDS.index("event_type")
_ENTRY_AGGREGATE_TYPE = _ENTRY_FIELDS.index("aggregate_type")
_ENTRY_AGGREGATE_ID = _ENTRY_FIELDS.index("aggregate_id")
_ENTRY_AGGREGATE_VERSION = _ENTRY_FIELDS.index("aggregate_version")


def _sqlite_converter(connection: Any) -> Any:
    """Turn a raw SQLite row of ``_ENTRY_FIELDS`` into Python values, as the ORM would.

    Timestamps are parsed with ``datetime.fromisoformat`` (C) rather than Django's
    regular-expression parser: a claim converts hundreds of rows.
    """
    from ..stores.sql import as_utc_datetime

    def convert(row: Sequence[Any]) -> list[Any]:
        values = list(row)
        for i in _ENTRY_UUIDS:
            if values[i] is not None:
                values[i] = UUID(values[i])
        for i in _ENTRY_DATETIMES:
            if values[i] is not None:
                values[i] = as_utc_datetime(values[i])
        return values

    return convert


def _id_list(connection: Any, ids: Iterable[int]) -> tuple[str, Any]:
    """``id IN (…)`` as one query parameter: (condition, parameter)."""
    if connection.vendor == "postgresql":
        return "id = ANY(%s)", list(ids)
    return "id IN (SELECT value FROM json_each(%s))", json.dumps(list(ids))


def _sql_string(value: str) -> str:
    """``value`` as an SQL string literal.

    The claim compares ``status`` with a literal, not a parameter: only then can the
    planner see that the condition matches the partial indexes on pending rows
    (SQLite refuses ``INDEXED BY`` otherwise, and a generic PostgreSQL plan skips them).
    """
    return "'" + value.replace("'", "''") + "'"


class DjangoOutboxRepository(OutboxRepository):
    """Outbox rows in the ``eventsource_outbox`` table (``OutboxMessage``).

    ``using`` names the database; by default the router's write database for
    ``OutboxMessage``. A claim is one ``UPDATE … RETURNING`` statement that picks, checks
    the per-aggregate order and claims; on PostgreSQL the pick is
    ``FOR UPDATE SKIP LOCKED``, so concurrent relays skip each other's rows instead of
    waiting, and SQLite (3.35 or later) runs one writing statement at a time. Claiming
    and ``mark_published_many`` support PostgreSQL and SQLite only and raise
    ``django.db.NotSupportedError`` on other databases.
    """

    def __init__(self, using: str | None = None) -> None:
        self._using = using

    @property
    def using(self) -> str:
        from django.db import router

        from ..models import OutboxMessage

        return self._using or router.db_for_write(OutboxMessage)

    def _rows(self) -> OutboxMessageQuerySet:
        from ..models import OutboxMessage

        return OutboxMessage.objects.using(self.using)

    def _relay_connection(self) -> Any:
        """The connection for the relay's SQL, once it is known to be one it is written for."""
        import sqlite3

        from django.db import NotSupportedError, connections

        connection = connections[self.using]
        if connection.vendor == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
            raise NotSupportedError(
                "The outbox relay needs SQLite 3.35 or later (UPDATE … RETURNING); "
                f"database {self.using!r} runs SQLite {sqlite3.sqlite_version}."
            )
        if connection.vendor not in ("postgresql", "sqlite"):
            raise NotSupportedError(
                "The outbox relay supports PostgreSQL and SQLite; database "
                f"{self.using!r} is {connection.display_name} (vendor {connection.vendor!r})."
            )
        return connection

    def _entries(self, queryset: QuerySet[OutboxMessage]) -> list[OutboxEntry]:
        return [_to_entry(row) for row in queryset.values_list(*_ENTRY_FIELDS)]

    def add_event(self, event: DomainEvent) -> int:
        return int(self._rows().create(**_entry_values(event)).pk)

    def get_pending_events(self, limit: int = 100) -> list[OutboxEntry]:
        return self._entries(self._rows().pending().order_by("id")[:limit])

    def get_entry(self, outbox_id: int) -> OutboxEntry | None:
        entries = self._entries(self._rows().filter(id=outbox_id))
        return entries[0] if entries else None

    def mark_published(self, outbox_id: int) -> None:
        self.mark_published_many([outbox_id], now=timezone.now())

    def mark_failed(self, outbox_id: int, error: str) -> None:
        self._rows().filter(id=outbox_id).mark_failed(error)

    def increment_retry(self, outbox_id: int, error: str) -> None:
        self._rows().filter(id=outbox_id).count_attempt(error)

    def cleanup_published(self, days: int = 7) -> int:
        cutoff = timezone.now() - timedelta(days=days)
        deleted, _ = self._rows().published_before(cutoff).delete()
        return deleted

    def get_stats(self) -> OutboxStats:
        figures = self._rows().status_summary()
        return OutboxStats(
            pending_count=figures["pending"],
            published_count=figures["published"],
            failed_count=figures["failed"],
            oldest_pending=figures["oldest_pending"],
        )

    def claim_due(
        self,
        claimer: str,
        limit: int,
        *,
        now: datetime,
        claim_timeout: float,
        exclude_ids: Iterable[int] = (),
    ) -> list[OutboxEntry]:
        connection = self._relay_connection()
        stale_before = now - timedelta(seconds=claim_timeout)
        return self._claim_in_one_statement(
            connection, claimer, limit, now, stale_before, list(exclude_ids)
        )

    def _claim_in_one_statement(
        self,
        connection: Any,
        claimer: str,
        limit: int,
        now: datetime,
        stale_before: datetime,
        excluded: list[int],
    ) -> list[OutboxEntry]:
        """Pick, order-check and claim in one ``UPDATE … RETURNING`` (PostgreSQL, SQLite).

        A single statement is its own short transaction. On PostgreSQL the pick is
        ``FOR UPDATE SKIP LOCKED``: concurrent relays skip the rows another one is
        claiming instead of waiting for them, and since a row locked by another relay is
        still visible as pending, its successors are left out (the ``behind`` step; the
        check errs on the side of waiting). SQLite runs one writing statement at a time,
        so the statement sees every other claim either entirely or not at all.
        """
        from ..models import OutboxMessage
        from ..stores.sql import fast_read_cursor

        postgresql = connection.vendor == "postgresql"
        pending = _sql_string(OutboxMessage.Status.PENDING.value)
        qn = connection.ops.quote_name
        table = qn(OutboxMessage._meta.db_table)
        returned = [qn(name) for name in _ENTRY_FIELDS]
        if not postgresql:
            # As expressions the timestamps skip the Python converter Django registers
            # with sqlite3 for the column type; ``_sqlite_converter`` parses them in C.
            for i in _ENTRY_DATETIMES:
                returned[i] = f"({returned[i]} || '')"
        columns = ", ".join(returned)
        in_excluded, excluded_param = _id_list(connection, excluded)
        not_excluded = f"NOT ({in_excluded})"
        if postgresql:
            # OFFSET 0 keeps the pick a separate step: rows come in id order and the
            # order check runs only until the batch is full, even when stale statistics
            # make the planner expect few pending rows.
            lock = "OFFSET 0 FOR UPDATE SKIP LOCKED"
            # In an EXISTS, OFFSET 0 keeps the order checks per picked row (a probe of
            # es_outbox_pending_stream_idx each) instead of a scan of every pending row.
            per_row = "OFFSET 0"
            pending_in_id_order = table
            params_now: list[Any] = [now, stale_before]
        else:
            lock = per_row = ""
            # Without statistics SQLite would fetch every pending row through the
            # status column of es_outbox_published_idx and sort them all.
            pending_in_id_order = f"{table} INDEXED BY {qn(_PENDING_ID_INDEX)}"
            params_now = [
                connection.ops.adapt_datetimefield_value(now),
                connection.ops.adapt_datetimefield_value(stale_before),
            ]
        # Predecessors that certainly cannot be claimed now (backing off, or held by a
        # live claim) rule their successors out of the pick, so a backlog behind one
        # stuck event does not fill every batch with rows that would only be given
        # back. Identifiers and the status come from the model; every value is a query
        # parameter.
        sql = f"""
            WITH picked AS MATERIALIZED (
                SELECT c.id, c.aggregate_type, c.aggregate_id, c.aggregate_version
                FROM (
                    SELECT id, aggregate_type, aggregate_id, aggregate_version
                    FROM {pending_in_id_order}
                    WHERE status = {pending}
                      AND (next_attempt_at IS NULL OR next_attempt_at <= %s)
                      AND (claimed_at IS NULL OR claimed_at < %s)
                      AND {not_excluded}
                    ORDER BY id
                    {lock}
                ) AS c
                WHERE NOT EXISTS (
                    SELECT 1 FROM {table} AS p
                    WHERE p.status = {pending}
                      AND p.aggregate_type = c.aggregate_type
                      AND p.aggregate_id = c.aggregate_id
                      AND p.aggregate_version < c.aggregate_version
                      AND (p.next_attempt_at > %s OR p.claimed_at >= %s)
                    {per_row}
                )
                LIMIT %s
            ),
            behind AS (
                -- Picked rows with an earlier pending version outside the pick (a row
                -- another relay is claiming right now, or one excluded): they wait.
                SELECT k.id FROM picked AS k
                WHERE EXISTS (
                    SELECT 1 FROM {table} AS p
                    WHERE p.status = {pending}
                      AND p.aggregate_type = k.aggregate_type
                      AND p.aggregate_id = k.aggregate_id
                      AND p.aggregate_version < k.aggregate_version
                      AND p.id NOT IN (SELECT id FROM picked)
                    {per_row}
                )
            )
            UPDATE {table} SET claimed_by = %s, claimed_at = %s
            WHERE id IN (SELECT id FROM picked EXCEPT SELECT id FROM behind)
            RETURNING {columns}
        """
        params = [*params_now, excluded_param, *params_now, limit, claimer, params_now[0]]
        with fast_read_cursor(connection) as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        # psycopg returns UUIDs and aware datetimes; SQLite needs Django's converters.
        convert = None if postgresql else _sqlite_converter(connection)
        entries = []
        for row in rows:
            values = list(row) if convert is None else convert(row)
            # The JSON text (Django reads jsonb as text) is kept as it is: the relay
            # passes it on to the bus without decoding and encoding it again.
            values[_ENTRY_DATA] = StoredEventData(
                values[_ENTRY_DATA],
                {
                    "event_id": str(values[_ENTRY_EVENT_ID]),
                    "event_type": values[_ENTRY_EVENT_TYPE],
                    "aggregate_type": values[_ENTRY_AGGREGATE_TYPE],
                    "aggregate_id": str(values[_ENTRY_AGGREGATE_ID]),
                    "aggregate_version": values[_ENTRY_AGGREGATE_VERSION],
                },
            )
            entries.append(OutboxEntry(*values))
        entries.sort(key=_entry_id)
        return entries

    def mark_published_many(self, ids: Sequence[int], *, now: datetime) -> int:
        from ..models import OutboxMessage

        if not ids:
            return 0
        connection = self._relay_connection()
        # The id list travels as one parameter (an array, or JSON on SQLite): a batch
        # of hundreds of ids as separate placeholders costs more to build and parse
        # than the update itself.
        in_ids, ids_param = _id_list(connection, ids)
        table = connection.ops.quote_name(OutboxMessage._meta.db_table)
        sql = (
            f"UPDATE {table} SET status = %s, published_at = %s, claimed_by = '', "
            f"claimed_at = NULL, next_attempt_at = NULL "
            f"WHERE {in_ids} AND status <> %s"
        )
        published = OutboxMessage.Status.PUBLISHED.value
        params = [published, connection.ops.adapt_datetimefield_value(now), ids_param, published]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return int(cursor.rowcount)

    def mark_published_and_claim(
        self,
        ids: Sequence[int],
        claimer: str,
        limit: int,
        *,
        now: datetime,
        claim_timeout: float,
        exclude_ids: Iterable[int] = (),
    ) -> tuple[int, list[OutboxEntry]]:
        """Both steps in one short transaction: one commit instead of two."""
        from django.db import transaction

        with transaction.atomic(using=self.using):
            return super().mark_published_and_claim(
                ids, claimer, limit, now=now, claim_timeout=claim_timeout, exclude_ids=exclude_ids
            )

    def record_failures(self, failures: Sequence[OutboxFailure], *, max_attempts: int) -> int:
        from django.db import transaction

        from ..models import OutboxMessage

        if not failures:
            return 0
        status = OutboxMessage.Status
        given_up = 0
        with transaction.atomic(using=self.using):
            counts = dict(
                self._rows()
                .pending()
                .filter(id__in=[f.id for f in failures])
                .select_for_update()
                .values_list("id", "retry_count")
            )
            updates = []
            for failure in failures:
                if failure.id not in counts:
                    continue
                attempts = counts[failure.id] + 1
                gives_up = attempts >= max_attempts
                given_up += gives_up
                updates.append(
                    OutboxMessage(
                        pk=failure.id,
                        retry_count=attempts,
                        last_error=failure.error,
                        status=status.FAILED if gives_up else status.PENDING,
                        next_attempt_at=None if gives_up else failure.next_attempt_at,
                        claimed_by="",
                        claimed_at=None,
                    )
                )
            # One statement for the whole batch: a bus outage fails every row at once.
            self._rows().bulk_update(updates, _FAILURE_FIELDS)
        return given_up

    def release(self, ids: Sequence[int]) -> None:
        if ids:
            self._rows().filter(id__in=ids).release()

    def retry_failed(self, ids: Sequence[int] | None = None) -> int:
        rows = self._rows().failed()
        if ids is not None:
            rows = rows.filter(id__in=list(ids))
        return rows.requeue()


# ---------------------------------------------------------------------------------------
# In memory


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
            values = _entry_values(event)
            self._entries[outbox_id] = OutboxEntry(
                id=outbox_id,
                event_id=values["event_id"],
                event_type=values["event_type"],
                aggregate_id=values["aggregate_id"],
                aggregate_type=values["aggregate_type"],
                tenant_id=values["tenant_id"],
                event_data=values["event_data"],
                created_at=timezone.now(),
                status=PENDING,
                published_at=None,
                retry_count=0,
                last_error="",
                aggregate_version=values["aggregate_version"],
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
                self._update(outbox_id, retry_count=entry.retry_count + 1, last_error=error)

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
        )

    def claim_due(
        self,
        claimer: str,
        limit: int,
        *,
        now: datetime,
        claim_timeout: float,
        exclude_ids: Iterable[int] = (),
    ) -> list[OutboxEntry]:
        stale_before = now - timedelta(seconds=claim_timeout)
        excluded = set(exclude_ids)
        with self._lock:
            claimed: list[OutboxEntry] = []
            blocked: set[tuple[str, UUID]] = set()
            for outbox_id, entry in sorted(self._entries.items()):
                if len(claimed) >= limit:
                    break
                if entry.status != PENDING:
                    continue
                stream = (entry.aggregate_type, entry.aggregate_id)
                free = entry.claimed_at is None or entry.claimed_at < stale_before
                due = entry.next_attempt_at is None or entry.next_attempt_at <= now
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

    def record_failures(self, failures: Sequence[OutboxFailure], *, max_attempts: int) -> int:
        given_up = 0
        with self._lock:
            for failure in failures:
                entry = self._entries.get(failure.id)
                if entry is None or entry.status != PENDING:
                    continue
                attempts = entry.retry_count + 1
                gives_up = attempts >= max_attempts
                given_up += gives_up
                self._update(
                    failure.id,
                    retry_count=attempts,
                    last_error=failure.error,
                    status=FAILED if gives_up else PENDING,
                    next_attempt_at=None if gives_up else failure.next_attempt_at,
                    claimed_by="",
                    claimed_at=None,
                )
        return given_up

    def release(self, ids: Sequence[int]) -> None:
        with self._lock:
            for outbox_id in ids:
                self._update(outbox_id, claimed_by="", claimed_at=None)

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
                    claimed_by="",
                    claimed_at=None,
                )
            return len(targets)


__all__ = [
    "DjangoOutboxRepository",
    "InMemoryOutboxRepository",
    "OutboxEntry",
    "OutboxFailure",
    "OutboxRepository",
    "OutboxStats",
    "OutboxStatus",
]
