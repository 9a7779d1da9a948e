"""The statements of a ``DjangoEventStore`` append: the stream-state lookup and the
multi-row ``INSERT … RETURNING``.

The decisions around them (versions, idempotent retries, lost races) stay with the
store; these functions only talk to the database.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper

from ..events.base import DomainEvent
from ..events.serialization import OutboxRowValues, outbox_row_values
from ..models import Checkpoint, DeadLetter, OutboxMessage
from ..partitioning import event_bucket
from .sql import _INSERT_COLUMNS, _as_uuid, _Sql
from .validation import storable_event_json

#: PostgreSQL ``LISTEN`` channel notified (at commit) with the last appended position.
NOTIFY_CHANNEL = "eventsource_events"


def read_stream_state(
    conn: BaseDatabaseWrapper,
    cursor: CursorWrapper,
    agg_id: UUID,
    aggregate_type: str,
    events: list[DomainEvent],
) -> tuple[int, dict[UUID, tuple[str, UUID, int]], dict[UUID, int]]:
    """The stream's version and which of ``events`` are already stored, in one query.

    ``(version, {event_id: (aggregate_type, aggregate_id, version)}, {event_id:
    position})``; more queries only when the ids pass the parameter limit.
    """
    q = _Sql.get(conn)
    to_db = q.uuid_to_db
    if q.is_postgres:
        # One array parameter, whatever the number of events.
        cursor.execute(
            f"SELECT NULL, NULL, NULL, {q.stream_version}, NULL "
            f"UNION ALL SELECT {q.cols('event_id', 'aggregate_type', 'aggregate_id')}, "
            f"{q.cols('aggregate_version', 'position')} FROM {q.table} "
            f"WHERE {q.c('event_id')} = ANY(%s::uuid[])",
            [agg_id, aggregate_type, "{" + ",".join([e.event_id.hex for e in events]) + "}"],
        )
        return _stream_state(cursor.fetchall())
    ids = [to_db(e.event_id) for e in events]
    limit = q.max_params - 2
    head_ids, rest = ids[:limit], ids[limit:]
    cursor.execute(
        f"SELECT NULL, NULL, NULL, {q.stream_version}, NULL "
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
    return _stream_state(rows)


def _stream_state(
    rows: list[Any],
) -> tuple[int, dict[UUID, tuple[str, UUID, int]], dict[UUID, int]]:
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


@dataclass(frozen=True)
class CheckpointClaims:
    """Checkpoints an append moves past its own events, in its statement (PostgreSQL).

    ``claims`` holds, per projection, its name, the number of the appended events it
    handles and their sequence keys. A claim succeeds when the checkpoint sits just
    before the appended events, which hold consecutive positions, the projection is
    not paused and none of the keys has an open dead letter (see
    ``projections/inline.py``).
    """

    claims: list[tuple[str, int, list[str]]]
    last_event_id: UUID
    last_event_type: str
    now: datetime


@dataclass(frozen=True)
class Inserted:
    """What an append's insert took: its positions and, with claims, which succeeded."""

    last_position: int
    #: The lowest position taken; ``None`` when not read (no claims were asked for).
    first_position: int | None = None
    #: Claimed projection -> its checkpoint's position as the statement's snapshot saw
    #: it. When that is not the position just before the events, the row was moved by a
    #: transaction that committed while the statement waited for it.
    claimed: dict[str, int] = field(default_factory=dict)


def insert_events(
    conn: BaseDatabaseWrapper,
    cursor: CursorWrapper,
    events: list[DomainEvent],
    *,
    outbox: bool,
    claims: CheckpointClaims | None = None,
) -> Inserted:
    """Insert ``events``, and their outbox rows when ``outbox`` is set.

    On PostgreSQL, one statement whatever the number of events (see
    ``_insert_postgres``), which also makes the checkpoint ``claims`` (ignored
    elsewhere); other databases get one multi-row INSERT per parameter-limit chunk and
    one ``executemany`` of the outbox rows.
    """
    q = _Sql.get(conn)
    if q.is_postgres:
        return _insert_postgres(q, cursor, events, outbox, claims)
    last_position = _insert_chunks(q, cursor, events)
    if outbox:
        _insert_outbox_rows(q, conn, cursor, events)
    return Inserted(last_position)


def _insert_outbox_rows(
    q: _Sql, conn: BaseDatabaseWrapper, cursor: CursorWrapper, events: list[DomainEvent]
) -> None:
    """The outbox rows of ``events``, as ``OutboxMessage(**outbox_row_values(e))`` would
    be saved, with one ``executemany`` (no model instances)."""
    qn = conn.ops.quote_name
    uuid_db = q.uuid_to_db
    columns: list[str] = []
    from_event: list[str | None] = []
    defaults: list[Any] = []
    for outbox_field in OutboxMessage._meta.concrete_fields:
        if outbox_field.primary_key or outbox_field.has_db_default():
            continue
        columns.append(qn(str(outbox_field.column)))
        if outbox_field.name in _OUTBOX_FROM_EVENT:
            from_event.append(outbox_field.name)
            defaults.append(None)
        else:
            from_event.append(None)
            defaults.append(outbox_field.get_db_prep_save(outbox_field.get_default(), conn))
    converters: dict[str, Callable[[Any], Any]] = {
        "event_id": uuid_db,
        "aggregate_id": uuid_db,
        "tenant_id": lambda value: None if value is None else uuid_db(value),
        # What the model field writes: ``json.dumps`` of ``to_dict()``.
        "event_data": lambda value: json.dumps(value),
    }
    rows = []
    for e in events:
        values = outbox_row_values(e)
        rows.append(
            [
                default if name is None else converters.get(name, _same)(values[name])  # type: ignore[literal-required]
                for name, default in zip(from_event, defaults, strict=True)
            ]
        )
    placeholders = ", ".join(["%s"] * len(columns))
    cursor.executemany(
        f"INSERT INTO {qn(OutboxMessage._meta.db_table)} ({', '.join(columns)}) "
        f"VALUES ({placeholders})",
        rows,
    )


def _same(value: Any) -> Any:
    return value


def _insert_postgres(
    q: _Sql,
    cursor: CursorWrapper,
    events: list[DomainEvent],
    outbox: bool,
    claims: CheckpointClaims | None,
) -> Inserted:
    """The events (and outbox rows) of one append in one statement on PostgreSQL.

    The rows travel as one ``jsonb`` array (a single parameter, parsed by the server in
    C): per event, the event as ``to_dict()`` writes it (pydantic's serializer, which
    also gives the outbox row its ``event_data``), its checked payload and metadata.
    The envelope columns are read from the first on the server. Ordering by version
    gives positions and outbox ids in the events' order. The notification is delivered
    at commit, so LISTENing projection runners wake up only for events they can read.
    """
    documents = []
    for e in events:
        payload, metadata = storable_event_json(e)
        # The fourth element: the bucket of segmented projections.
        documents.append(
            f"[{e.model_dump_json()},{payload},{metadata},{event_bucket(e.aggregate_id)}]"
        )
    ctes, params = _postgres_append_statement(q, cursor.db, outbox)
    rows = "[" + ",".join(documents) + "]"
    pos = q.c("position")
    if claims is None:
        cursor.execute(
            f"WITH {ctes} SELECT MAX({pos}), pg_notify(%s, MAX({pos})::text) FROM inserted",
            [rows, *params, NOTIFY_CHANNEL],
        )
        return Inserted(int(cursor.fetchone()[0]))
    claim_ctes, claim_params = _claim_ctes(cursor.db, claims)
    claimed = " UNION ALL ".join(
        f"SELECT name, seen FROM claimed_{i}" for i in range(len(claims.claims))
    )
    cursor.execute(
        f"WITH {ctes}, {claim_ctes} SELECT b.last, b.first, "
        f"(SELECT COALESCE(jsonb_agg(jsonb_build_array(name, seen)), '[]') FROM ({claimed}) AS c)"
        "::text, pg_notify(%s, b.last::text) FROM bounds AS b",
        [rows, *params, *claim_params, NOTIFY_CHANNEL],
    )
    last, first, outcome, _ = cursor.fetchone()
    seen = json.loads(outcome) if isinstance(outcome, str) else outcome
    return Inserted(int(last), int(first), {name: int(at) for name, at in seen})


#: The event table's columns in a PostgreSQL append, from an event's ``to_dict()``
#: document ``d``.
_FROM_DOCUMENT = {
    "event_id": "(d->>'event_id')::uuid",
    "aggregate_type": "d->>'aggregate_type'",
    "aggregate_id": "(d->>'aggregate_id')::uuid",
    "aggregate_version": "(d->>'aggregate_version')::bigint",
    "event_type": "d->>'event_type'",
    "event_version": "(d->>'event_version')::bigint",
    "tenant_id": "(d->>'tenant_id')::uuid",
    "actor_id": "d->>'actor_id'",
    "correlation_id": "(d->>'correlation_id')::uuid",
    "causation_id": "(d->>'causation_id')::uuid",
    "occurred_at": "(d->>'occurred_at')::timestamptz",
    "payload": "payload",
    "metadata": "metadata",
    "bucket": "bucket",  # segmented projections: partitioning.event_bucket(aggregate_id)
    "event_data": "d",
}

_statements: dict[tuple[str, bool], tuple[str, list[Any]]] = {}

#: A dead letter in this status no longer holds its sequence back.
_RESOLVED = DeadLetter.Status.RESOLVED.value


def _postgres_append_statement(
    q: _Sql, conn: BaseDatabaseWrapper, outbox: bool
) -> tuple[str, list[Any]]:
    """The ``WITH`` steps of ``_insert_postgres`` (``batch``, ``inserted``, and
    ``outboxed`` with the outbox) and their parameters after the rows."""
    key = (conn.alias, outbox)
    cached = _statements.get(key)
    if cached is not None:
        return cached
    pos = q.c("position")
    source = ", ".join(_FROM_DOCUMENT[name] for name in _INSERT_COLUMNS)
    # Versions are contiguous within an append: their order is the events' order.
    order = f"ORDER BY {_FROM_DOCUMENT['aggregate_version']}"
    ctes = [
        "batch AS MATERIALIZED (SELECT r->0 AS d, r->1 AS payload, r->2 AS metadata, "
        "(r->>3)::smallint AS bucket "
        "FROM jsonb_array_elements(%s::jsonb) AS r)",
        f"inserted AS (INSERT INTO {q.table} ({q.insert_columns}) SELECT {source} "
        f"FROM batch {order} RETURNING {pos})",
    ]
    params: list[Any] = []
    if outbox:
        qn = conn.ops.quote_name
        columns, values = [], []
        for outbox_field in OutboxMessage._meta.concrete_fields:
            if outbox_field.primary_key or outbox_field.has_db_default():
                continue
            columns.append(qn(str(outbox_field.column)))
            if outbox_field.name in _OUTBOX_FROM_EVENT:
                values.append(_FROM_DOCUMENT[outbox_field.name])
            else:
                # What the model would write: its Python-side default.
                values.append("%s")
                params.append(outbox_field.get_db_prep_save(outbox_field.get_default(), conn))
        ctes.append(
            f"outboxed AS (INSERT INTO {qn(OutboxMessage._meta.db_table)} "
            f"({', '.join(columns)}) SELECT {', '.join(values)} FROM batch {order})"
        )
    _statements[key] = (", ".join(ctes), params)
    return _statements[key]


def checkpoint_claim(
    conn: BaseDatabaseWrapper,
    name: str,
    count: int,
    keys: list[str],
    last: tuple[Any, str, Any],
    *,
    moved_from: tuple[str, list[Any]],
    moved_to: tuple[str, list[Any]],
    source: str = "",
    condition: str = "",
) -> tuple[str, list[Any]]:
    """The ``UPDATE`` that claims projection ``name``'s checkpoint, and its parameters.

    It moves the checkpoint from ``moved_from`` to ``moved_to`` (SQL expressions with
    their parameters), counting ``count`` events and recording ``last`` (the last
    event's id and type and the time, as the database takes them), only while the
    projection is not paused and none of ``keys`` (the sequence keys of the events to
    apply) has an open dead letter; see ``projections/inline.py``. ``source`` (a
    ``FROM`` clause) and ``condition`` (``AND …``) are added for a caller whose
    positions come from another step of its statement.
    """
    qn = conn.ops.quote_name
    to_sql, to_params = moved_to
    from_sql, from_params = moved_from
    blocked, blocked_params = "", []
    if keys:
        blocked = (
            f" AND NOT EXISTS (SELECT 1 FROM {qn(str(DeadLetter._meta.db_table))} WHERE "
            f"{qn('projection_name')} = %s AND {qn('status')} <> %s AND "
            f"{qn('sequence_key')} IN ({', '.join(['%s'] * len(keys))}))"
        )
        blocked_params = [name, _RESOLVED, *keys]
    last_id, last_type, now = last
    sql = (
        f"UPDATE {qn(str(Checkpoint._meta.db_table))} SET {qn('position')} = {to_sql}, "
        f"{qn('last_event_id')} = %s, {qn('last_event_type')} = %s, "
        f"{qn('last_processed_at')} = %s, {qn('updated_at')} = %s, "
        f"{qn('events_processed')} = {qn('events_processed')} + %s{source} "
        f"WHERE {qn('projection_name')} = %s AND {qn('position')} = {from_sql}{condition} "
        f"AND {qn('paused_at')} IS NULL{blocked}"
    )
    params = [
        *to_params,
        last_id,
        last_type,
        now,
        now,
        count,
        name,
        *from_params,
        *blocked_params,
    ]
    return sql, params


def _claim_ctes(conn: BaseDatabaseWrapper, claims: CheckpointClaims) -> tuple[str, list[Any]]:
    """The ``bounds`` step and one ``claimed_<i>`` step per claim, with their parameters.

    Each ``claimed_<i>`` is the ``checkpoint_claim`` of one projection, from the
    position before the inserted rows to the last of them, written out with plain
    parameters (what the planner handles fastest). Its row also returns the
    checkpoint's position as of the statement's snapshot: when the row had to be waited
    for, the ``UPDATE`` ran against the version another transaction committed
    meanwhile, while the dead-letter check still saw the snapshot (see
    ``run_inline_projections``).
    """
    qn = conn.ops.quote_name
    checkpoints = qn(str(Checkpoint._meta.db_table))
    name, position = qn("projection_name"), qn("position")
    ctes = [
        f"bounds AS (SELECT MIN({position}) AS first, MAX({position}) AS last, "
        "COUNT(*) AS n FROM inserted)"
    ]
    params: list[Any] = []
    last = (claims.last_event_id, claims.last_event_type, claims.now)
    for index, (projection, count, keys) in enumerate(claims.claims):
        update, update_params = checkpoint_claim(
            conn,
            projection,
            count,
            keys,
            last,
            moved_from=("b.first - 1", []),
            moved_to=("b.last", []),
            source=" FROM bounds AS b",
            condition=" AND b.last - b.first + 1 = b.n",
        )
        ctes.append(
            f"claimed_{index} AS ({update} RETURNING {name} AS name, "
            f"(SELECT s.{position} FROM {checkpoints} AS s WHERE s.{name} = %s) AS seen)"
        )
        params += [*update_params, projection]
    return ", ".join(ctes), params


#: Outbox columns filled from the event (what ``outbox_row_values`` returns).
_OUTBOX_FROM_EVENT = frozenset(OutboxRowValues.__annotations__)


def _insert_chunks(q: _Sql, cursor: CursorWrapper, events: list[DomainEvent]) -> int:
    """``events`` in multi-row INSERTs of at most the database's parameter limit."""
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
                event_bucket(e.aggregate_id),  # segmented projections
            )
        values = ", ".join([q.row_placeholder] * len(chunk))
        cursor.execute(
            f"INSERT INTO {q.table} ({q.insert_columns}) VALUES {values} "
            f"RETURNING {q.c('position')}",
            params,
        )
        last_position = max([last_position, *(int(r[0]) for r in cursor.fetchall())])
    return last_position
