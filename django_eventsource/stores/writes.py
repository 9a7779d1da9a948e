"""The statements of a ``DjangoEventStore`` append: the stream-state lookup and the
multi-row ``INSERT … RETURNING``.

The decisions around them (versions, idempotent retries, lost races) stay with the
store; these functions only talk to the database.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper

from ..events.base import DomainEvent
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


def insert_events(
    conn: BaseDatabaseWrapper, cursor: CursorWrapper, events: list[DomainEvent]
) -> int:
    """Insert ``events`` with one multi-row INSERT (per parameter-limit chunk).

    Returns the highest position taken.
    """
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
                event_bucket(e.aggregate_id),  # segmented projections
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
