"""``DjangoEventStore``: the event store on the app's ``EventRecord`` model.

Appends are one multi-row ``INSERT … RETURNING`` per call, inside
``transaction.atomic`` (joining the caller's transaction through a savepoint). Reads
go through a raw cursor, skip model instantiation and rebuild events through the event
registry. Catch-up reads never pass ``safe_high_water_mark()``; see
``docs/event-store.md`` for how that mark is computed on PostgreSQL.

The store decides; its siblings do the mechanics: ``writes`` (the append statements),
``reads`` (filters and keyset pages), ``rows`` (rows back into events) and ``_gaps``
(the safe high-water mark and what holds it back).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import IntegrityError, connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper

from .. import tracing
from ..conf import conf
from ..events.base import DomainEvent
from ..events.registry import EventRegistry, default_registry
from ..exceptions import OptimisticLockError
from ..models import EventRecord
from ._gaps import GapTracker
from ._sqlite import retry_while_locked
from .interface import (
    AppendResult,
    EventStore,
    EventStream,
    ReadDirection,
    ReaderBlocker,
    ReadOptions,
    StoredEvent,
    parse_stream_id,
)
from .reads import option_filters, paged, time_filters, windowed
from .rows import RowDecoder
from .sql import _Sql, fetch_event_rows
from .validation import (
    check_existing_ids,
    check_position,
    check_versions,
    coerce_uuid,
    validate_append,
)
from .writes import NOTIFY_CHANNEL, insert_events, read_stream_state


class DjangoEventStore(EventStore):
    """Stores events in the ``eventsource_event`` table through the Django ORM connection.

    ``using`` picks the database alias (default: what the routers say for
    ``EventRecord``). ``outbox_enabled`` overrides ``EVENTSOURCE_OUTBOX_ENABLED``;
    ``registry`` is the ``EventRegistry`` used to rebuild events (default:
    ``default_registry``).
    """

    #: Rows fetched per query by the read iterators.
    chunk_size: int = 1000
    #: Positions examined per gap scan while a writer holds readers back (PostgreSQL).
    gap_scan_window: int = 10_000
    #: Seconds an append that owns its transaction is retried while SQLite reports
    #: "database is locked" (each attempt also waits the connection's ``timeout``).
    sqlite_lock_retry_seconds: float = 30.0

    def __init__(
        self,
        using: str | None = None,
        outbox_enabled: bool | None = None,
        registry: EventRegistry | None = None,
    ) -> None:
        self.using = using
        self.outbox_enabled = outbox_enabled
        self._rows = RowDecoder(registry if registry is not None else default_registry)
        self._gaps = GapTracker()

    @property
    def registry(self) -> EventRegistry:
        """The registry events are rebuilt with."""
        return self._rows.registry

    # -- databases and transactions ------------------------------------------------------

    def db_for_write(self) -> str:
        """The database alias appends go to."""
        return self.using or router.db_for_write(EventRecord)

    def db_for_read(self) -> str:
        """The database alias reads come from: the one appends go to.

        Never a router's read replica: a standby lags, and cannot see the primary's open
        transactions, so a safe mark read there can pass an uncommitted position (the
        event is then skipped for good), and a stream loaded there for a save is stale.
        """
        return self.db_for_write()

    def atomic(self) -> contextlib.AbstractContextManager[Any]:
        """``transaction.atomic`` on the write database."""
        return transaction.atomic(using=self.db_for_write())

    def on_commit(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` after the write database's transaction commits (now, if none)."""
        transaction.on_commit(callback, using=self.db_for_write(), robust=True)

    def _outbox_enabled(self) -> bool:
        if self.outbox_enabled is not None:
            return self.outbox_enabled
        return conf.OUTBOX_ENABLED

    # -- writing ------------------------------------------------------------------------

    def append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: Sequence[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        agg_id, event_list = validate_append(aggregate_id, aggregate_type, events, expected_version)
        alias = self.db_for_write()
        if not event_list:
            return AppendResult.successful(self._stream_version(alias, agg_id, aggregate_type), 0)
        attributes = {"aggregate_type": aggregate_type, "event_count": len(event_list)}
        try:
            with tracing.span("eventsource.append", attributes) as current:
                result = self._append_atomically(
                    alias, agg_id, aggregate_type, event_list, expected_version
                )
                tracing.set_attributes(
                    current, new_version=result.new_version, global_position=result.global_position
                )
                return result
        except IntegrityError:
            # A concurrent writer committed the same version or event id between our
            # read and our insert. Our savepoint is rolled back; decide from what won.
            resolved = self._resolve_conflict(
                alias, agg_id, aggregate_type, event_list, expected_version
            )
            if resolved is None:
                raise
            return resolved

    def _append_atomically(
        self,
        alias: str,
        agg_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        """``_append`` in ``transaction.atomic``; on SQLite retried while the database is locked.

        Only when the append owns the transaction: inside the caller's ``atomic`` block
        the failed statement belongs to the caller's transaction, which must roll back
        as a whole, so the error reaches the caller.
        """

        def attempt() -> AppendResult:
            with transaction.atomic(using=alias):
                return self._append(alias, agg_id, aggregate_type, events, expected_version)

        conn = connections[alias]
        if conn.vendor != "sqlite" or conn.in_atomic_block:
            return attempt()
        return retry_while_locked(attempt, self.sqlite_lock_retry_seconds)

    def _append(
        self,
        alias: str,
        agg_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        conn = connections[alias]
        with conn.cursor() as cursor:
            retried, _ = self._check_stream(
                conn, cursor, agg_id, aggregate_type, events, expected_version
            )
            if retried is not None:
                return retried
            # Imported here: projections sit above the store, which only hands them the
            # events.
            from ..projections.inline import plan_inline_projections, run_inline_projections

            inline = plan_inline_projections(alias, events)
            # The events and, when enabled, their outbox rows; on PostgreSQL in one
            # statement, which also claims the inline projections' checkpoints.
            inserted = insert_events(
                conn,
                cursor,
                events,
                outbox=self._outbox_enabled(),
                claims=inline.claims()
                if inline is not None and conn.vendor == "postgresql"
                else None,
            )
        if inline is not None:
            run_inline_projections(inline, inserted)
        return AppendResult.successful(events[-1].aggregate_version, inserted.last_position)

    def _resolve_conflict(
        self,
        alias: str,
        agg_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
        expected_version: int,
    ) -> AppendResult | None:
        """Turn a unique-constraint violation into the error a serialized writer would get."""
        conn = connections[alias]
        with conn.cursor() as cursor:
            retried, current = self._check_stream(
                conn, cursor, agg_id, aggregate_type, events, expected_version
            )
        if retried is not None:
            return retried
        if current >= events[0].aggregate_version:
            first = events[0].aggregate_version
            reported = expected_version if expected_version >= 0 else first - 1
            raise OptimisticLockError(agg_id, reported, current)
        return None  # not a conflict we know: let the IntegrityError surface

    def _check_stream(
        self,
        conn: BaseDatabaseWrapper,
        cursor: CursorWrapper,
        agg_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
        expected_version: int,
    ) -> tuple[AppendResult | None, int]:
        """Decide an append from the stored state: ``(result, current version)``.

        The result is set when every event is already stored (an idempotent retry);
        otherwise the version checks pass or raise, and the caller may insert.
        """
        current, existing, positions = self._read_stream_state(
            conn, cursor, agg_id, aggregate_type, events
        )
        if check_existing_ids(agg_id, aggregate_type, events, existing):
            last = events[-1]
            stored = AppendResult.successful(last.aggregate_version, positions[last.event_id])
            return stored, current
        check_versions(agg_id, events, expected_version, current)
        return None, current

    def _read_stream_state(
        self,
        conn: BaseDatabaseWrapper,
        cursor: CursorWrapper,
        agg_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
    ) -> tuple[int, dict[UUID, tuple[str, UUID, int]], dict[UUID, int]]:
        """The stream's version and which of ``events`` are already stored, in one query.

        A method, so that a subclass can change what a writer sees (the race tests do).
        """
        return read_stream_state(conn, cursor, agg_id, aggregate_type, events)

    # -- reading ------------------------------------------------------------------------

    def get_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str | None = None,
        from_version: int = 0,
        from_timestamp: datetime | None = None,
        to_timestamp: datetime | None = None,
    ) -> EventStream:
        agg_id = coerce_uuid(aggregate_id, "aggregate_id")
        check_position(from_version, "from_version")
        conn = connections[self.db_for_read()]
        q = _Sql.get(conn)
        where = [f"{q.c('aggregate_id')} = %s", f"{q.c('aggregate_version')} > %s"]
        params: list[Any] = [q.uuid_to_db(agg_id), from_version]
        if aggregate_type is not None:
            where.append(f"{q.c('aggregate_type')} = %s")
            params.append(aggregate_type)
            order = f"{q.c('aggregate_version')}"
        else:
            order = f"{q.c('position')}"
        time_filters(q, where, params, from_timestamp, to_timestamp)
        rows = fetch_event_rows(
            conn, q, f"FROM {q.table} WHERE {' AND '.join(where)} ORDER BY {order}", params
        )
        events = list(self._rows.events(rows))
        return EventStream.of(agg_id, aggregate_type, events, from_version)

    def get_events_by_type(
        self,
        aggregate_type: str,
        tenant_id: UUID | None = None,
        from_timestamp: datetime | None = None,
    ) -> list[DomainEvent]:
        conn = connections[self.db_for_read()]
        q = _Sql.get(conn)
        where = [f"{q.c('aggregate_type')} = %s"]
        params: list[Any] = [aggregate_type]
        if tenant_id is not None:
            where.append(f"{q.c('tenant_id')} = %s")
            params.append(q.uuid_to_db(coerce_uuid(tenant_id, "tenant_id")))
        time_filters(q, where, params, from_timestamp, None)
        return [
            stored.event
            for stored in paged(
                conn, self._rows, self, where, params, after=0, ceiling=None, limit=None
            )
        ]

    def event_exists(self, event_id: UUID) -> bool:
        key = coerce_uuid(event_id, "event_id")
        conn = connections[self.db_for_read()]
        q = _Sql.get(conn)
        with conn.cursor() as cursor:
            cursor.execute(
                f"SELECT 1 FROM {q.table} WHERE {q.c('event_id')} = %s", [q.uuid_to_db(key)]
            )
            return cursor.fetchone() is not None

    def get_stream_version(self, aggregate_id: UUID, aggregate_type: str) -> int:
        agg_id = coerce_uuid(aggregate_id, "aggregate_id")
        return self._stream_version(self.db_for_read(), agg_id, aggregate_type)

    def _stream_version(self, alias: str, agg_id: UUID, aggregate_type: str) -> int:
        conn = connections[alias]
        q = _Sql.get(conn)
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT {q.stream_version}", [q.uuid_to_db(agg_id), aggregate_type])
            return int(cursor.fetchone()[0])

    def get_global_position(self) -> int:
        conn = connections[self.db_for_read()]
        q = _Sql.get(conn)
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT COALESCE(MAX({q.c('position')}), 0) FROM {q.table}")
            return int(cursor.fetchone()[0])

    def read_stream(
        self, stream_id: str, options: ReadOptions | None = None
    ) -> Iterator[StoredEvent]:
        aggregate_id, aggregate_type = parse_stream_id(stream_id)
        opts = options or ReadOptions()
        conn = connections[self.db_for_read()]
        q = _Sql.get(conn)
        where = [f"{q.c('aggregate_id')} = %s", f"{q.c('aggregate_type')} = %s"]
        params: list[Any] = [q.uuid_to_db(aggregate_id), aggregate_type]
        filtered = len(where)
        option_filters(q, where, params, opts)
        backward = opts.direction == ReadDirection.BACKWARD
        if not backward and len(where) == filtered:
            # Windows of versions, whatever the statistics (see ``windowed``).
            return windowed(
                conn,
                self._rows,
                self,
                where,
                params,
                key="aggregate_version",
                after=max(opts.from_position, 0),
                ceiling=None,
                limit=opts.limit,
            )
        return paged(
            conn,
            self._rows,
            self,
            where,
            params,
            after=opts.from_position,
            ceiling=None,
            limit=opts.limit,
            backward=backward,
            key="aggregate_version",
        )

    def read_all(self, options: ReadOptions | None = None) -> Iterator[StoredEvent]:
        opts = options or ReadOptions()
        conn = connections[self.db_for_read()]
        q = _Sql.get(conn)
        where: list[str] = []
        params: list[Any] = []
        option_filters(q, where, params, opts)
        if opts.direction == ReadDirection.BACKWARD:
            return paged(
                conn,
                self._rows,
                self,
                where,
                params,
                after=opts.from_position,
                ceiling=None,
                limit=opts.limit,
                backward=True,
            )
        return self._read_all_forward(conn, where, params, opts)

    def _read_all_forward(
        self,
        conn: BaseDatabaseWrapper,
        where: list[str],
        params: list[Any],
        opts: ReadOptions,
    ) -> Iterator[StoredEvent]:
        """Forward ``read_all``: pages up to the safe mark, which is recomputed as it moves."""
        position = max(opts.from_position, 0)
        remaining = opts.limit
        end: int | None = None
        while remaining is None or remaining > 0:
            mark, visible_max = self._high_water_mark(conn.alias, after=position)
            if end is None:
                # Stop at the end as it was when reading started, so a busy store
                # does not keep one iterator running forever.
                end = visible_max
            mark = min(mark, end)
            if mark <= position:
                return
            if where:
                page = paged(
                    conn,
                    self._rows,
                    self,
                    where,
                    params,
                    after=position,
                    ceiling=mark,
                    limit=remaining,
                )
            else:
                # The catch-up read: windows of positions, whatever the statistics.
                page = windowed(
                    conn,
                    self._rows,
                    self,
                    [],
                    [],
                    key="position",
                    after=position,
                    ceiling=mark,
                    limit=remaining,
                )
            for stored in page:
                yield stored
                if remaining is not None:
                    remaining -= 1
            position = mark
            if position >= end:
                return

    # -- gap-safe catch-up --------------------------------------------------------------

    def safe_high_water_mark(self) -> int:
        """The highest position below which no committed event can still appear.

        On SQLite (writers are serialized) it is the last position. On PostgreSQL it
        stops below any position that an open transaction may still commit; see
        ``docs/event-store.md``.
        """
        return self._high_water_mark(self.db_for_read(), after=0)[0]

    def first_raw_event_after(
        self, position: int, buckets: tuple[int, int] | None = None
    ) -> Mapping[str, Any] | None:
        """The stored row of the first event after ``position``, not deserialized.

        Its envelope columns and ``payload``, for a reader that must deal with an event
        ``read_all`` cannot turn back into a ``DomainEvent`` (the projection runner
        dead-letters it). Like ``read_all``, it never looks past the safe high-water mark.
        Ids that are not UUIDs and a payload that is not JSON come back as the stored text.
        ``buckets`` (``(low, high)``) keeps to the events of one unit of a segmented projection.
        """
        check_position(position, "position")
        return self._gaps.first_row_after(
            self.db_for_read(), position, ceiling=self.safe_high_water_mark(), buckets=buckets
        )

    def get_reader_blockers(self) -> list[ReaderBlocker]:
        """Sessions whose open transactions may hold catch-up readers back (PostgreSQL).

        Always empty on other databases, where writers never leave a gap behind them.
        """
        return self._gaps.blockers(self.db_for_read())

    def _high_water_mark(self, alias: str, *, after: int) -> tuple[int, int]:
        """``(safe mark, max visible position)`` for a reader that has read up to ``after``."""
        return self._gaps.high_water_mark(alias, after=after, scan_window=self.gap_scan_window)


__all__ = ["NOTIFY_CHANNEL", "DjangoEventStore", "ReaderBlocker"]
