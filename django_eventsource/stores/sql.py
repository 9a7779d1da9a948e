"""SQL plumbing for ``DjangoEventStore``: column lists, quoted names, value adapters
and the conversion of raw rows.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.utils.dateparse import parse_datetime

from ..exceptions import SerializationError
from ..models import EventRecord

#: Columns written by ``append_events``, in order (``position`` and ``recorded_at`` come
#: from the database).
_INSERT_COLUMNS = (
    "event_id",
    "aggregate_type",
    "aggregate_id",
    "aggregate_version",
    "event_type",
    "event_version",
    "tenant_id",
    "actor_id",
    "correlation_id",
    "causation_id",
    "occurred_at",
    "payload",
    "metadata",
    "bucket",  # segmented projections: models.event_bucket(aggregate_id)
)

#: Columns read to rebuild a ``StoredEvent``, in order.
_READ_COLUMNS = (
    "position",
    "event_id",
    "event_type",
    "event_version",
    "occurred_at",
    "aggregate_id",
    "aggregate_type",
    "aggregate_version",
    "tenant_id",
    "actor_id",
    "correlation_id",
    "causation_id",
    "recorded_at",
    "payload",
    "metadata",
)

#: Columns of the raw row handed over for an event that cannot be rebuilt.
_RAW_COLUMNS = (
    "position",
    "event_id",
    "event_type",
    "event_version",
    "aggregate_id",
    "aggregate_type",
    "aggregate_version",
    "payload",
)

#: Event fields filled from ``_READ_COLUMNS[1:12]``.
_ENVELOPE_KEYS = _READ_COLUMNS[1:12]

#: Characters of a blocking session's current query kept in ``ReaderBlocker.query``.
_QUERY_PREVIEW = 200


@contextlib.contextmanager
def fast_read_cursor(conn: BaseDatabaseWrapper) -> Iterator[CursorWrapper]:
    """``conn.cursor()``, reading timestamps with the driver's C loader on PostgreSQL.

    Django's own ``timestamptz`` loader is written in Python (to apply the connection
    time zone); callers that only need aware datetimes (UTC or not) get them several
    times faster per row from psycopg's loader.
    """
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            from psycopg import postgres
            from psycopg.pq import Format

            timestamptz = postgres.types["timestamptz"].oid
            loader = postgres.adapters.get_loader(timestamptz, Format.TEXT)
            cursor.cursor.adapters.register_loader("timestamptz", loader)
        yield cursor


class _Sql:
    """Quoted names and value adapters for one database connection, built once per alias."""

    _cache: dict[tuple[str, str], _Sql] = {}
    _cache_lock = threading.Lock()

    def __init__(self, conn: BaseDatabaseWrapper) -> None:
        qn = conn.ops.quote_name
        meta = EventRecord._meta
        self._columns = {f.name: qn(str(f.column)) for f in meta.concrete_fields}
        self.raw_table = str(meta.db_table)
        self.table = qn(self.raw_table)
        self.is_postgres = conn.vendor == "postgresql"
        self.insert_columns = ", ".join(self._columns[c] for c in _INSERT_COLUMNS)
        version = self._columns["aggregate_version"]
        #: A stream's version (0 when empty); parameters: aggregate id, aggregate type.
        #: Written as the newest row, not ``MAX()``: with ``ORDER BY … LIMIT 1`` the
        #: planner walks the unique (id, type, version) index backwards even on a table
        #: it has no statistics for, where it would otherwise read every event of the
        #: aggregate type through the (type, position) index.
        self.stream_version = (
            f"COALESCE((SELECT {version} FROM {self.table} "
            f"WHERE {self._columns['aggregate_id']} = %s "
            f"AND {self._columns['aggregate_type']} = %s "
            f"ORDER BY {version} DESC LIMIT 1), 0)"
        )
        read = [self._columns[c] for c in _READ_COLUMNS]
        if conn.vendor == "sqlite":
            # SQLite keeps naive UTC text; reading it as ISO text with an offset lets
            # pydantic and ``datetime.fromisoformat`` parse it in C instead of the
            # Python converter Django registers for the column type.
            for name in ("occurred_at", "recorded_at"):
                index = _READ_COLUMNS.index(name)
                read[index] = f"({read[index]} || '+00:00')"
        if self.is_postgres:
            # ISO text that ``datetime.fromisoformat`` and pydantic parse. With the ids
            # read as text too (``fetch_event_rows``), a row becomes one JSON document
            # that pydantic-core validates without building Python values first, and a
            # timestamp Python cannot hold (``infinity``, a year past 9999) fails only
            # its own row, not the driver's conversion of the whole page.
            for name in ("occurred_at", "recorded_at"):
                index = _READ_COLUMNS.index(name)
                read[index] = f"(to_json({read[index]}) #>> '{{}}')"
        self.read_columns = ", ".join(read)
        self.row_placeholder = "(" + ", ".join(["%s"] * len(_INSERT_COLUMNS)) + ")"
        self.max_params = int(getattr(conn.features, "max_query_params", None) or 65_535)
        ops = conn.ops
        self.uuid_to_db: Callable[[UUID], Any] = (
            _identity if conn.features.has_native_uuid_field else _uuid_hex
        )
        self.datetime_to_db: Callable[[datetime], Any] = ops.adapt_datetimefield_value
        # JSON text from ``storable_event_json``, written as Django's adapter writes it.
        self.json_text_to_db: Callable[[str], Any] = _identity_text
        if self.is_postgres:
            from psycopg.types.json import Jsonb

            self.json_text_to_db = lambda text: Jsonb(text, dumps=_identity_text)
        self.blockers_sql = (
            "(SELECT COALESCE(json_agg(json_build_array(l.virtualtransaction, a.pid, "
            "a.xact_start, EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start), a.state, "
            f"a.application_name, left(a.query, {_QUERY_PREVIEW}))), '[]'::json) "
            "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'relation' AND l.relation = to_regclass(%s) "
            # Relation oids repeat across databases (clones of one template).
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.mode = 'RowExclusiveLock' AND l.granted "
            "AND l.pid IS DISTINCT FROM pg_backend_pid())"
        )

    @classmethod
    def get(cls, conn: BaseDatabaseWrapper) -> _Sql:
        key = (conn.alias, conn.vendor)
        sql = cls._cache.get(key)
        if sql is None:
            with cls._cache_lock:
                sql = cls._cache[key] = cls(conn)
        return sql

    def c(self, name: str) -> str:
        """The quoted column of field ``name``."""
        return self._columns[name]

    def cols(self, *names: str) -> str:
        return ", ".join(self._columns[n] for n in names)


def fetch_event_rows(
    conn: BaseDatabaseWrapper, q: _Sql, sql_from: str, params: Sequence[Any]
) -> list[Any]:
    """The rows of ``SELECT <the read columns> <sql_from>``, every column as the text
    (or number) the event's JSON document is written from.

    On PostgreSQL the ids come back as text (no ``UUID`` objects to build and print
    again) and the timestamps as ISO text (see ``_Sql``); ``payload`` and ``metadata``
    are JSON text with Django's loaders.
    """
    with conn.cursor() as cursor:
        if q.is_postgres:
            cursor.cursor.adapters.register_loader("uuid", _text_loader())
        cursor.execute(f"SELECT {q.read_columns} {sql_from}", params)
        rows: list[Any] = cursor.fetchall()
        return rows


def _text_loader() -> Any:
    """psycopg's loader of values as the text PostgreSQL sends (imported on first use)."""
    global _TEXT_LOADER
    if _TEXT_LOADER is None:
        from psycopg.types.string import TextLoader

        _TEXT_LOADER = TextLoader
    return _TEXT_LOADER


_TEXT_LOADER: Any = None


def _identity(value: UUID) -> Any:
    return value


def _identity_text(text: str) -> str:
    return text


def _uuid_hex(value: UUID) -> str:
    return value.hex


def _as_uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


#: ``json.dumps`` of the event and aggregate type names seen in rows.
_quoted_names: dict[str, str] = {}


def _quoted(name: str) -> str:
    quoted = _quoted_names.get(name)
    if quoted is None:
        quoted = json.dumps(name)
        if len(_quoted_names) < 10_000:
            _quoted_names[name] = quoted
    return quoted


def _document(row: Sequence[Any]) -> str:
    """The JSON document of an event from a row of ``_READ_COLUMNS``.

    Identifiers are hex or canonical UUID text (pydantic takes both), timestamps ISO text with an
    offset, ``payload`` and ``metadata`` JSON objects as stored. Missing optional
    fields take their defaults.
    """
    (
        _,
        event_id,
        event_type,
        event_version,
        occurred_at,
        aggregate_id,
        aggregate_type,
        aggregate_version,
        tenant_id,
        actor_id,
        correlation_id,
        causation_id,
        _,
        payload,
        metadata,
    ) = row
    # The payload comes first: on a duplicate key the envelope's value wins, as it does
    # when the row is read into a dict.
    document = "{" if payload == "{}" else f"{payload[:-1]},"
    document += (
        f'"event_id":"{event_id}","event_type":{_quoted(event_type)},'
        f'"event_version":{event_version},"occurred_at":"{occurred_at}",'
        f'"aggregate_id":"{aggregate_id}","aggregate_type":{_quoted(aggregate_type)},'
        f'"aggregate_version":{aggregate_version},"correlation_id":"{correlation_id}",'
        f'"metadata":{metadata}'
    )
    if tenant_id is not None:
        document += f',"tenant_id":"{tenant_id}"'
    if causation_id is not None:
        document += f',"causation_id":"{causation_id}"'
    if actor_id is not None:
        document += f',"actor_id":{json.dumps(actor_id)}'
    return document + "}"


def as_utc_datetime(value: Any) -> datetime:
    """A column value as an aware UTC datetime (SQLite returns naive UTC or text)."""
    stored = value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            value = parse_datetime(value)
    if not isinstance(value, datetime):
        raise SerializationError(f"Unreadable timestamp {stored!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value if value.tzinfo is UTC else value.astimezone(UTC)
