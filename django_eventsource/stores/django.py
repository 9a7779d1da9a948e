"""``DjangoEventStore``: the event store on the app's ``EventRecord`` model.

Appends are one multi-row ``INSERT … RETURNING`` per call, inside
``transaction.atomic`` (joining the caller's transaction through a savepoint). Reads
go through a raw cursor, skip model instantiation and rebuild events through the event
registry. Catch-up reads never pass ``safe_high_water_mark()``; see
``docs/event-store.md`` for how that mark is computed on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from django.db import IntegrityError, connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from pydantic import ValidationError

from .. import tracing
from ..conf import conf
from ..events.base import DomainEvent
from ..events.registry import EventRegistry, default_registry
from ..events.serialization import outbox_row_values
from ..exceptions import EventSourceError, OptimisticLockError, SerializationError
from ..models import EventRecord, OutboxMessage
from ._gaps import _GapState, _parse_blockers
from ._sqlite import retry_while_locked
from .interface import (
    AppendResult,
    EventStore,
    EventStream,
    ReadDirection,
    ReaderBlocker,
    ReadOptions,
    StoredEvent,
    make_stream_id,
    parse_stream_id,
)
from .sql import (
    _ENVELOPE_KEYS,
    _INSERT_COLUMNS,
    _RAW_COLUMNS,
    _as_uuid,
    _document,
    _Sql,
    as_utc_datetime,
    fetch_event_rows,
    json_object,
    raw_event_values,
    unreadable_row,
)
from .validation import (
    check_existing_ids,
    check_position,
    check_versions,
    coerce_uuid,
    storable_event_json,
    validate_append,
)

logger = logging.getLogger("django_eventsource")

#: PostgreSQL ``LISTEN`` channel notified (at commit) with the last appended position.
NOTIFY_CHANNEL = "eventsource_events"


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
        self._registry = registry
        self._gap_states: dict[str, _GapState] = {}
        self._gap_states_lock = threading.Lock()
        self._versions: dict[type[DomainEvent], int] = {}

    @property
    def registry(self) -> EventRegistry:
        """The registry events are rebuilt with."""
        return self._registry if self._registry is not None else default_registry

    # -- databases and transactions ------------------------------------------------------

    def db_for_write(self) -> str:
        """The database alias appends go to."""
        return self.using or router.db_for_write(EventRecord)

    def db_for_read(self) -> str:
        """The database alias reads come from."""
        return self.using or router.db_for_read(EventRecord)

    def atomic(self) -> contextlib.AbstractContextManager[Any]:
        """``transaction.atomic`` on the write database."""
        return transaction.atomic(using=self.db_for_write())

    def on_commit(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` after the write database's transaction commits (now, if none)."""
        transaction.on_commit(callback, using=self.db_for_write(), robust=True)

    def _outbox_enabled(self) -> bool:
        if self.outbox_enabled is not None:
            return self.outbox_enabled
        return bool(conf.OUTBOX_ENABLED)

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
            last_position = self._insert(conn, cursor, events)
        if self._outbox_enabled():
            OutboxMessage.objects.using(alias).bulk_create(
                [OutboxMessage(**outbox_row_values(e)) for e in events]
            )
        return AppendResult.successful(events[-1].aggregate_version, last_position)

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
        """The stream's version and which of ``events`` are already stored, in one query."""
        q = _Sql.get(conn)
        to_db = q.uuid_to_db
        ids = [to_db(e.event_id) for e in events]
        limit = q.max_params - 2
        head_ids, rest = ids[:limit], ids[limit:]
        cursor.execute(
            f"SELECT NULL, NULL, NULL, COALESCE(MAX({q.c('aggregate_version')}), 0), NULL "
            f"FROM {q.table} WHERE {q.c('aggregate_id')} = %s AND {q.c('aggregate_type')} = %s "
            f"UNION ALL SELECT {q.cols('event_id', 'aggregate_type', 'aggregate_id')}, "
            f"{q.cols('aggregate_version', 'position')} FROM {q.table} "
            f"WHERE {q.c('event_id')} IN ({', '.join(['%s'] * len(head_ids))})",
            [to_db(agg_id), aggregate_type, *head_ids],
        )
        rows = cursor.fetchall()
        while rest:
            chunk, rest = rest[:limit], rest[limit:]
            cursor.execute(
                f"SELECT {q.cols('event_id', 'aggregate_type', 'aggregate_id')}, "
                f"{q.cols('aggregate_version', 'position')} FROM {q.table} "
                f"WHERE {q.c('event_id')} IN ({', '.join(['%s'] * len(chunk))})",
                chunk,
            )
            rows.extend(cursor.fetchall())
        current = 0
        existing: dict[UUID, tuple[str, UUID, int]] = {}
        positions: dict[UUID, int] = {}
        for event_id, stored_type, stored_id, version, position in rows:
            if event_id is None:
                current = int(version)
                continue
            key = _as_uuid(event_id)
            existing[key] = (stored_type, _as_uuid(stored_id), int(version))
            positions[key] = int(position)
        return current, existing, positions

    def _insert(
        self, conn: BaseDatabaseWrapper, cursor: CursorWrapper, events: list[DomainEvent]
    ) -> int:
        """Insert ``events`` with one multi-row INSERT (per parameter-limit chunk)."""
        q = _Sql.get(conn)
        uuid_db, dt_db, json_db = q.uuid_to_db, q.datetime_to_db, q.json_text_to_db
        per_row = len(_INSERT_COLUMNS)
        rows_per_statement = max(1, q.max_params // per_row)
        last_position = 0
        for start in range(0, len(events), rows_per_statement):
            chunk = events[start : start + rows_per_statement]
            params: list[Any] = []
            for e in chunk:
                payload, metadata = storable_event_json(e)
                params += (
                    uuid_db(e.event_id),
                    e.aggregate_type,
                    uuid_db(e.aggregate_id),
                    e.aggregate_version,
                    e.event_type,
                    e.event_version,
                    None if e.tenant_id is None else uuid_db(e.tenant_id),
                    e.actor_id,
                    uuid_db(e.correlation_id),
                    None if e.causation_id is None else uuid_db(e.causation_id),
                    dt_db(e.occurred_at),
                    json_db(payload),
                    json_db(metadata),
                )
            values = ", ".join([q.row_placeholder] * len(chunk))
            insert = f"INSERT INTO {q.table} ({q.insert_columns}) VALUES {values}"
            if q.is_postgres:
                # The notification is delivered at commit, so LISTENing projection runners
                # wake up only for events they can read.
                cursor.execute(
                    f"WITH inserted AS ({insert} RETURNING {q.c('position')}) "
                    f"SELECT MAX({q.c('position')}), "
                    f"pg_notify(%s, MAX({q.c('position')})::text) FROM inserted",
                    [*params, NOTIFY_CHANNEL],
                )
                last_position = max(last_position, int(cursor.fetchone()[0]))
            else:
                cursor.execute(f"{insert} RETURNING {q.c('position')}", params)
                last_position = max([last_position, *(int(r[0]) for r in cursor.fetchall())])
        return last_position

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
        self._time_filters(q, where, params, from_timestamp, to_timestamp)
        rows = fetch_event_rows(
            conn, q, f"FROM {q.table} WHERE {' AND '.join(where)} ORDER BY {order}", params
        )
        events = list(self._events(rows))
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
        self._time_filters(q, where, params, from_timestamp, None)
        return [
            stored.event
            for stored in self._paged(conn, where, params, after=0, ceiling=None, limit=None)
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
            cursor.execute(
                f"SELECT COALESCE(MAX({q.c('aggregate_version')}), 0) FROM {q.table} "
                f"WHERE {q.c('aggregate_id')} = %s AND {q.c('aggregate_type')} = %s",
                [q.uuid_to_db(agg_id), aggregate_type],
            )
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
        self._option_filters(q, where, params, opts)
        backward = opts.direction == ReadDirection.BACKWARD
        return self._paged(
            conn,
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
        self._option_filters(q, where, params, opts)
        if opts.direction == ReadDirection.BACKWARD:
            return self._paged(
                conn,
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
            for stored in self._paged(
                conn, where, params, after=position, ceiling=mark, limit=remaining
            ):
                yield stored
                if remaining is not None:
                    remaining -= 1
            position = mark
            if position >= end:
                return

    def _paged(
        self,
        conn: BaseDatabaseWrapper,
        where: list[str],
        params: list[Any],
        *,
        after: int,
        ceiling: int | None,
        limit: int | None,
        backward: bool = False,
        key: str = "position",
    ) -> Iterator[StoredEvent]:
        """Keyset pagination over ``key``: no long transaction, no server-side cursor."""
        q = _Sql.get(conn)
        column = q.c(key)
        order = "DESC" if backward else "ASC"
        sql_head = f"FROM {q.table} WHERE "
        remaining = limit
        cursor_position = after
        first = True
        stream_ids: dict[Any, str] = {}
        while remaining is None or remaining > 0:
            page_size = self.chunk_size if remaining is None else min(remaining, self.chunk_size)
            conditions = list(where)
            page_params = list(params)
            if backward:
                if cursor_position > 0 or not first:
                    conditions.append(f"{column} < %s")
                    page_params.append(cursor_position)
            else:
                conditions.append(f"{column} > %s")
                page_params.append(cursor_position)
            if ceiling is not None:
                conditions.append(f"{column} <= %s")
                page_params.append(ceiling)
            sql = (
                sql_head
                + (" AND ".join(conditions) or "1 = 1")
                + f" ORDER BY {column} {order} LIMIT {int(page_size)}"
            )
            rows = fetch_event_rows(conn, q, sql, page_params)
            for row, event in zip(rows, self._events(rows), strict=True):
                stream_key = (row[5], row[6])
                stream_id = stream_ids.get(stream_key)
                if stream_id is None:
                    stream_id = make_stream_id(event.aggregate_id, event.aggregate_type)
                    stream_ids[stream_key] = stream_id
                try:
                    stored_at = as_utc_datetime(row[12])
                except SerializationError as exc:
                    raise unreadable_row(row, f"recorded_at: {exc}") from exc
                yield StoredEvent(
                    event=event,
                    stream_id=stream_id,
                    stream_position=row[7],
                    global_position=row[0],
                    stored_at=stored_at,
                )
            if len(rows) < page_size:
                return
            first = False
            last = rows[-1]
            cursor_position = int(last[0] if key == "position" else last[7])
            if remaining is not None:
                remaining -= len(rows)

    @staticmethod
    def _time_filters(
        q: _Sql,
        where: list[str],
        params: list[Any],
        start: datetime | None,
        end: datetime | None,
    ) -> None:
        if start is not None:
            where.append(f"{q.c('occurred_at')} >= %s")
            params.append(q.datetime_to_db(start))
        if end is not None:
            where.append(f"{q.c('occurred_at')} <= %s")
            params.append(q.datetime_to_db(end))

    def _option_filters(
        self, q: _Sql, where: list[str], params: list[Any], opts: ReadOptions
    ) -> None:
        if opts.tenant_id is not None:
            where.append(f"{q.c('tenant_id')} = %s")
            params.append(q.uuid_to_db(coerce_uuid(opts.tenant_id, "tenant_id")))
        self._time_filters(q, where, params, opts.from_timestamp, opts.to_timestamp)

    # -- rebuilding events --------------------------------------------------------------

    def _events(self, rows: Sequence[Sequence[Any]]) -> Iterator[DomainEvent]:
        """Rebuild the events of ``rows`` (of ``_READ_COLUMNS``), one at a time.

        Lazily, so that a caller handles every event before one that fails to rebuild.
        """
        registry = self.registry
        # (event_type, event_version) -> the class's JSON validator, or None for rows
        # that take the full path.
        validators: dict[tuple[str, int], Callable[[str], Any] | None] = {}
        for row in rows:
            try:
                version_key = (row[2], row[3])
                try:
                    validate = validators[version_key]
                except KeyError:
                    validate = validators[version_key] = self._json_validator(registry, row)
                if validate is None:
                    event = self._event_from_values(row, registry.get_or_none(row[2]))
                else:
                    # SQLite returns every column as text: write them into one JSON
                    # document that pydantic-core parses and validates without building
                    # Python values first. A failure is retried on the full path, which
                    # explains it.
                    try:
                        event = validate(_document(row))
                    except ValidationError:
                        event = self._event_from_values(row, registry.get_or_none(row[2]))
            except EventSourceError:
                raise
            except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
                # A row no check foresaw (text where a number belongs…): still a typed
                # error naming the row, which the projection runner dead-letters.
                raise unreadable_row(row, exc) from exc
            yield event

    def _json_validator(
        self, registry: EventRegistry, row: Sequence[Any]
    ) -> Callable[[str], Any] | None:
        """``validate_json`` of the row's event class, if the row can use it."""
        if type(row[1]) is not str:  # not SQLite text
            return None
        event_class = registry.get_or_none(row[2])
        if event_class is None or row[3] < self._current_version(event_class):
            return None
        return event_class.__pydantic_validator__.validate_json

    def _event_from_values(
        self, row: Sequence[Any], event_class: type[DomainEvent] | None
    ) -> DomainEvent:
        """``_event`` from the row's values as the driver returns them."""
        data = json_object(row, 13)
        data.update(zip(_ENVELOPE_KEYS, row[1:12], strict=True))
        occurred_at = row[4]
        if type(occurred_at) is datetime and occurred_at.tzinfo is None:
            data["occurred_at"] = occurred_at.replace(tzinfo=UTC)
        data["metadata"] = {} if row[14] == "{}" else json_object(row, 14)
        registry = self.registry
        if event_class is None or row[3] < self._current_version(event_class):
            # Unknown types and old schema versions take the full path: a clear error
            # naming the registered types, or the upcaster chain.
            return registry.deserialize(data)
        try:
            return event_class.model_validate(data)
        except ValidationError as exc:
            reason = f"it no longer validates as {event_class.__qualname__}: {exc}"
            raise unreadable_row(row, reason) from exc

    def _current_version(self, event_class: type[DomainEvent]) -> int:
        version = self._versions.get(event_class)
        if version is None:
            version = self._versions[event_class] = event_class.current_event_version()
        return version

    # -- gap-safe catch-up --------------------------------------------------------------

    def safe_high_water_mark(self) -> int:
        """The highest position below which no committed event can still appear.

        On SQLite (writers are serialized) it is the last position. On PostgreSQL it
        stops below any position that an open transaction may still commit; see
        ``docs/event-store.md``.
        """
        return self._high_water_mark(self.db_for_read(), after=0)[0]

    def first_raw_event_after(self, position: int) -> Mapping[str, Any] | None:
        """The stored row of the first event after ``position``, not deserialized.

        Its envelope columns and ``payload``, for a reader that must deal with an event
        ``read_all`` cannot turn back into a ``DomainEvent`` (the projection runner
        dead-letters it). Like ``read_all``, it never looks past the safe high-water mark.
        Ids that are not UUIDs and a payload that is not JSON come back as the stored text.
        """
        check_position(position, "position")
        conn = connections[self.db_for_read()]
        q = _Sql.get(conn)
        pos = q.c("position")
        with conn.cursor() as cursor:
            # A raw cursor, not the ORM: its converters would fail on the very values
            # that make the row unreadable.
            cursor.execute(
                f"SELECT {q.cols(*_RAW_COLUMNS)} FROM {q.table} "
                f"WHERE {pos} > %s AND {pos} <= %s ORDER BY {pos} LIMIT 1",
                [position, self.safe_high_water_mark()],
            )
            found = cursor.fetchone()
        return None if found is None else raw_event_values(found)

    def get_reader_blockers(self) -> list[ReaderBlocker]:
        """Sessions whose open transactions may hold catch-up readers back (PostgreSQL).

        Always empty on other databases, where writers never leave a gap behind them.
        """
        conn = connections[self.db_for_read()]
        if conn.vendor != "postgresql":
            return []
        q = _Sql.get(conn)
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT 0, {q.blockers_sql}", [q.raw_table])
            _, blockers = cursor.fetchone()
        return [blocker for _, blocker in _parse_blockers(blockers)]

    def _high_water_mark(self, alias: str, *, after: int) -> tuple[int, int]:
        """``(safe mark, max visible position)`` for a reader that has read up to ``after``."""
        conn = connections[alias]
        q = _Sql.get(conn)
        if conn.vendor != "postgresql":
            with conn.cursor() as cursor:
                cursor.execute(f"SELECT COALESCE(MAX({q.c('position')}), 0) FROM {q.table}")
                visible_max = int(cursor.fetchone()[0])
            return visible_max, visible_max
        with conn.cursor() as cursor:
            # One statement: its snapshot gives M, and pg_locks is read after that
            # snapshot was taken. Every position <= M was allocated before the snapshot,
            # so a transaction holding one of them is either finished or listed.
            cursor.execute(
                f"SELECT (SELECT COALESCE(MAX({q.c('position')}), 0) FROM {q.table}), "
                f"{q.blockers_sql}",
                [q.raw_table],
            )
            visible_max, raw_blockers = cursor.fetchone()
            visible_max = int(visible_max)
            blockers = _parse_blockers(raw_blockers)
            state = self._gap_state(alias)
            with state.lock:
                holders = frozenset(vxid for vxid, _ in blockers)
                if state.pending is not None and not (state.pending[1] & holders):
                    state.floor = max(state.floor, state.pending[0])
                    state.pending = None
                if state.floor > visible_max:  # the table was emptied
                    state.floor, state.pending = 0, None
                if not blockers:
                    state.floor, state.pending = visible_max, None
                    state.warned.clear()
                    return visible_max, visible_max
                if state.pending is None:
                    state.pending = (visible_max, holders)
                floor = state.floor
                self._warn_long_blockers(state, blockers)
            base = max(after, floor)
            if base >= visible_max:
                return visible_max, visible_max
            bound = min(visible_max, base + self.gap_scan_window)
            pos = q.c("position")
            # The end of the contiguous run of visible positions after ``base``: one
            # index-only range scan of at most ``gap_scan_window`` entries.
            cursor.execute(
                f"SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM {q.table} WHERE {pos} = %s) "
                f"THEN %s ELSE (SELECT MIN(run.{pos}) FROM (SELECT {pos}, "
                f"lead({pos}) OVER (ORDER BY {pos}) AS next FROM {q.table} "
                f"WHERE {pos} > %s AND {pos} <= %s) run "
                f"WHERE run.next IS NULL OR run.next <> run.{pos} + 1) END",
                [base + 1, base, base, bound],
            )
            return int(cursor.fetchone()[0]), visible_max

    def _gap_state(self, alias: str) -> _GapState:
        with self._gap_states_lock:
            state = self._gap_states.get(alias)
            if state is None:
                state = self._gap_states[alias] = _GapState()
            return state

    @staticmethod
    def _warn_long_blockers(state: _GapState, blockers: list[tuple[str, ReaderBlocker]]) -> None:
        threshold = float(conf.HELD_BACK_WARNING_SECONDS)
        state.warned &= {vxid for vxid, _ in blockers}
        for vxid, blocker in blockers:
            if blocker.duration_seconds >= threshold and vxid not in state.warned:
                state.warned.add(vxid)
                logger.warning(
                    "Event readers are held back by a transaction open for %.0f s "
                    "(pid %s, state %r, application %r): %s",
                    blocker.duration_seconds,
                    blocker.pid,
                    blocker.state,
                    blocker.application_name,
                    blocker.query,
                    extra={
                        "pid": blocker.pid,
                        "duration_seconds": round(blocker.duration_seconds, 3),
                        "state": blocker.state,
                        "application_name": blocker.application_name,
                    },
                )


__all__ = ["NOTIFY_CHANNEL", "DjangoEventStore", "ReaderBlocker"]
