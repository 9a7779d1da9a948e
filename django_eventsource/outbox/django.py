"""``DjangoOutboxRepository``: outbox rows in the ``eventsource_outbox`` table.

The plain queries are ``OutboxMessage.objects`` QuerySet methods; what stays here is the
SQL of the relay's hot statements (claiming a batch, marking it published), written for
PostgreSQL and SQLite. Another database gets a ``NotSupportedError`` from those two
rather than SQL nobody has run on it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.db import NotSupportedError, connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import QuerySet
from django.utils import timezone

from ..events.base import DomainEvent
from ..events.serialization import StoredEventData
from ..models import OutboxMessage, OutboxMessageQuerySet
from ..stores.sql import as_utc_datetime, fast_read_cursor
from .repository import OutboxRepository
from .rows import OutboxEntry, OutboxFailure, OutboxStats, gives_up, outbox_row_values

#: Columns read into an ``OutboxEntry``, in its field order.
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
    "first_failed_at",
)

#: Columns a failed attempt changes.
_FAILURE_FIELDS = [
    "retry_count",
    "last_error",
    "status",
    "next_attempt_at",
    "first_failed_at",
    "claimed_by",
    "claimed_at",
]

#: The partial index of pending rows by id (``OutboxMessage.Meta.indexes``).
_PENDING_ID_INDEX = "es_outbox_pending_id_idx"

_ENTRY_UUIDS = [_ENTRY_FIELDS.index(name) for name in ("event_id", "aggregate_id", "tenant_id")]
_ENTRY_DATETIMES = [
    _ENTRY_FIELDS.index(name)
    for name in ("created_at", "published_at", "next_attempt_at", "claimed_at", "first_failed_at")
]
_ENTRY_DATA = _ENTRY_FIELDS.index("event_data")
_ENTRY_EVENT_ID = _ENTRY_FIELDS.index("event_id")
_ENTRY_EVENT_TYPE = _ENTRY_FIELDS.index("event_type")
_ENTRY_AGGREGATE_TYPE = _ENTRY_FIELDS.index("aggregate_type")
_ENTRY_AGGREGATE_ID = _ENTRY_FIELDS.index("aggregate_id")
_ENTRY_AGGREGATE_VERSION = _ENTRY_FIELDS.index("aggregate_version")


def _sql_string(value: str) -> str:
    """``value`` as an SQL string literal.

    The claim compares ``status`` with a literal, not a parameter: only then can the
    planner see that the condition matches the partial indexes on pending rows
    (SQLite refuses ``INDEXED BY`` otherwise, and a generic PostgreSQL plan skips them).
    """
    return "'" + value.replace("'", "''") + "'"


_PENDING_SQL = _sql_string(OutboxMessage.Status.PENDING.value)


def _entry_id(entry: OutboxEntry) -> int:
    return entry.id


def _from_sqlite(row: Sequence[Any]) -> list[Any]:
    """A raw SQLite row of ``_ENTRY_FIELDS`` as Python values, as the ORM would give them.

    Timestamps are parsed with ``datetime.fromisoformat`` (C) rather than Django's
    regular-expression parser: a claim converts hundreds of rows.
    """
    values = list(row)
    for i in _ENTRY_UUIDS:
        if values[i] is not None:
            values[i] = UUID(values[i])
    for i in _ENTRY_DATETIMES:
        if values[i] is not None:
            values[i] = as_utc_datetime(values[i])
    return values


def _id_list(connection: BaseDatabaseWrapper, ids: Iterable[int]) -> tuple[str, Any]:
    """``id IN (…)`` as one query parameter: (condition, parameter)."""
    if connection.vendor == "postgresql":
        return "id = ANY(%s)", list(ids)
    return "id IN (SELECT value FROM json_each(%s))", json.dumps(list(ids))


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
        return self._using or router.db_for_write(OutboxMessage)

    def _rows(self) -> OutboxMessageQuerySet:
        return OutboxMessage.objects.using(self.using)

    def _relay_connection(self) -> BaseDatabaseWrapper:
        """The connection for the relay's SQL, once it is known to be one it is written for."""
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
        return [OutboxEntry(*row) for row in queryset.values_list(*_ENTRY_FIELDS)]

    def add_event(self, event: DomainEvent) -> int:
        return int(self._rows().create(**outbox_row_values(event)).pk)

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
            avg_retries=float(figures["avg_retries"] or 0.0),
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
        """Pick, order-check and claim in one ``UPDATE … RETURNING``.

        A single statement is its own short transaction. On PostgreSQL the pick is
        ``FOR UPDATE SKIP LOCKED``: concurrent relays skip the rows another one is
        claiming instead of waiting for them, and since a row locked by another relay is
        still visible as pending, its successors are left out (the ``behind`` step; the
        check errs on the side of waiting). SQLite runs one writing statement at a time,
        so the statement sees every other claim either entirely or not at all.

        ``scan_limit`` caps the due rows the pick reads (and, on PostgreSQL, locks): with
        a few hot aggregates whose next rows all wait behind rows in flight, a claim
        without it reads the whole backlog to find nothing.
        """
        connection = self._relay_connection()
        stale_before = now - timedelta(seconds=claim_timeout)
        postgresql = connection.vendor == "postgresql"
        qn = connection.ops.quote_name
        table = qn(OutboxMessage._meta.db_table)
        returned = [qn(name) for name in _ENTRY_FIELDS]
        if not postgresql:
            # As expressions the timestamps skip the Python converter Django registers
            # with sqlite3 for the column type; ``_from_sqlite`` parses them in C.
            for i in _ENTRY_DATETIMES:
                returned[i] = f"({returned[i]} || '')"
        columns = ", ".join(returned)
        in_excluded, excluded_param = _id_list(connection, exclude_ids)
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
                    WHERE status = {_PENDING_SQL}
                      AND (next_attempt_at IS NULL OR next_attempt_at <= %s)
                      AND (claimed_at IS NULL OR claimed_at < %s)
                      AND {not_excluded}
                    ORDER BY id
                    LIMIT %s
                    {lock}
                ) AS c
                WHERE NOT EXISTS (
                    SELECT 1 FROM {table} AS p
                    WHERE p.status = {_PENDING_SQL}
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
                    WHERE p.status = {_PENDING_SQL}
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
        # LIMIT NULL (PostgreSQL) and LIMIT -1 (SQLite) mean no limit.
        scan = scan_limit if scan_limit is not None else (None if postgresql else -1)
        params = [
            *params_now,
            excluded_param,
            scan,
            *params_now,
            limit,
            claimer,
            params_now[0],
        ]
        with fast_read_cursor(connection) as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        entries = []
        for row in rows:
            # psycopg returns UUIDs and aware datetimes; SQLite needs converting.
            values = list(row) if postgresql else _from_sqlite(row)
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
        scan_limit: int | None = None,
    ) -> tuple[int, list[OutboxEntry]]:
        """Both steps in one short transaction: one commit instead of two."""
        with transaction.atomic(using=self.using):
            return super().mark_published_and_claim(
                ids,
                claimer,
                limit,
                now=now,
                claim_timeout=claim_timeout,
                exclude_ids=exclude_ids,
                scan_limit=scan_limit,
            )

    def record_failures(
        self,
        failures: Sequence[OutboxFailure],
        *,
        now: datetime | None = None,
        give_up_after: float | None = None,
        max_attempts: int | None = None,
    ) -> int:
        if not failures:
            return 0
        failed_at = now or timezone.now()
        status = OutboxMessage.Status
        given_up = 0
        with transaction.atomic(using=self.using):
            rows = {
                outbox_id: (retry_count, first_failed_at)
                for outbox_id, retry_count, first_failed_at in self._rows()
                .pending()
                .filter(id__in=[f.id for f in failures])
                .select_for_update()
                .values_list("id", "retry_count", "first_failed_at")
            }
            updates = []
            for failure in failures:
                if failure.id not in rows:
                    continue
                retry_count, first_failed_at = rows[failure.id]
                attempts = retry_count + 1
                first_failed_at = first_failed_at or failed_at
                giving_up = gives_up(
                    first_failed_at,
                    attempts,
                    failed_at,
                    give_up_after=give_up_after,
                    max_attempts=max_attempts,
                )
                given_up += giving_up
                updates.append(
                    OutboxMessage(
                        pk=failure.id,
                        retry_count=attempts,
                        last_error=failure.error,
                        status=status.FAILED if giving_up else status.PENDING,
                        next_attempt_at=None if giving_up else failure.next_attempt_at,
                        first_failed_at=first_failed_at,
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

    supports_claim_renewal = True

    def renew_claims(self, ids: Sequence[int], claimer: str, *, now: datetime) -> int:
        if not ids:
            return 0
        return int(
            self._rows()
            .pending()
            .filter(id__in=list(ids), claimed_by=claimer)
            .update(claimed_at=now)
        )

    def retry_failed(self, ids: Sequence[int] | None = None) -> int:
        rows = self._rows().failed()
        if ids is not None:
            rows = rows.filter(id__in=list(ids))
        return rows.requeue()


__all__ = ["DjangoOutboxRepository"]
