"""How ``DjangoEventStore`` reads many events: the shared filter conditions and keyset
pagination (no long transaction, no server-side cursor).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from operator import itemgetter
from typing import Any, Protocol

from django.db.backends.base.base import BaseDatabaseWrapper

from ..exceptions import SerializationError
from .interface import MAX_POSITION, ReadOptions, StoredEvent, make_stream_id
from .rows import RowDecoder, unreadable_row
from .sql import _Sql, as_utc_datetime, fetch_event_rows
from .validation import coerce_uuid


class PageSized(Protocol):
    """Whatever sets the page size (the store).

    It is read again at every page, so a change applies to iterators already open.
    """

    chunk_size: int


def time_filters(
    q: _Sql,
    where: list[str],
    params: list[Any],
    start: datetime | None,
    end: datetime | None,
) -> None:
    """Add ``start <= occurred_at <= end`` (either bound optional) to ``where``/``params``."""
    if start is not None:
        where.append(f"{q.c('occurred_at')} >= %s")
        params.append(q.datetime_to_db(start))
    if end is not None:
        where.append(f"{q.c('occurred_at')} <= %s")
        params.append(q.datetime_to_db(end))


def option_filters(q: _Sql, where: list[str], params: list[Any], opts: ReadOptions) -> None:
    """Add the tenant and time filters of ``opts`` to ``where``/``params``."""
    if opts.tenant_id is not None:
        where.append(f"{q.c('tenant_id')} = %s")
        params.append(q.uuid_to_db(coerce_uuid(opts.tenant_id, "tenant_id")))
    time_filters(q, where, params, opts.from_timestamp, opts.to_timestamp)
    if opts.buckets is not None:  # one unit of a segmented projection
        where.append(f"{q.c('bucket')} >= %s AND {q.c('bucket')} < %s")
        params.extend(opts.buckets)


def windowed(
    conn: BaseDatabaseWrapper,
    decoder: RowDecoder,
    sized: PageSized,
    where: list[str],
    params: list[Any],
    *,
    key: str,
    after: int,
    ceiling: int | None,
    limit: int | None,
) -> Iterator[StoredEvent]:
    """The events matching ``where`` with ``key`` in ``(after, ceiling]`` (no ceiling:
    to the end), at most ``limit``, in ``key`` order.

    ``key`` is ``position``, or ``aggregate_version`` within one stream. Each page is a
    window of ``chunk_size`` keys, ``key > a AND key <= a + chunk_size``, without
    ``ORDER BY`` or ``LIMIT`` (rows are put in order here). Whatever the planner knows
    about the table, a page then costs at most one window of the index: a table whose
    statistics are missing or stale (freshly loaded, never analyzed) cannot turn each
    page into a scan and sort of everything up to the ceiling, or of the whole table,
    which made a catch-up over N events cost O(N²). After a short window, one ``MIN``
    probe (a single index lookup) finds the next key, so a run of missing keys
    (rolled-back or deleted events) is crossed in one step and the end is seen at once.
    """
    q = _Sql.get(conn)
    column = q.c(key)
    index = 0 if key == "position" else 7
    head = f"FROM {q.table} WHERE " + "".join(f"{condition} AND " for condition in where)
    sql = f"{head}{column} > %s AND {column} <= %s"
    probe = f"SELECT MIN({column}) {head}{column} > %s"
    remaining = limit
    low = after
    stream_ids: dict[Any, str] = {}
    while (ceiling is None or low < ceiling) and (remaining is None or remaining > 0):
        width = max(int(sized.chunk_size), 1)
        high = min(low + width, MAX_POSITION if ceiling is None else ceiling)
        if high <= low:  # nothing can lie past the largest key
            return
        rows = fetch_event_rows(conn, q, sql, [*params, low, high])
        low = high
        if rows:
            rows.sort(key=itemgetter(index))
            if remaining is not None:
                rows = rows[:remaining]
                remaining -= len(rows)
            yield from _stored_events(decoder, rows, stream_ids)
            if remaining == 0:
                return
        if len(rows) < width and high != ceiling:
            with conn.cursor() as cursor:
                cursor.execute(probe, [*params, high])
                following = cursor.fetchone()[0]
            if following is None:
                return
            low = max(low, int(following) - 1)


def _stored_events(
    decoder: RowDecoder, rows: list[Any], stream_ids: dict[Any, str]
) -> Iterator[StoredEvent]:
    """``StoredEvent``s of ``rows``, one at a time (``stream_ids`` caches stream ids)."""
    # The events of one append share their ``recorded_at`` (the transaction's time):
    # the value read last is parsed once.
    recorded, stored_at = None, None
    for row, event in zip(rows, decoder.events(rows), strict=True):
        stream_key = (row[5], row[6])
        stream_id = stream_ids.get(stream_key)
        if stream_id is None:
            stream_id = make_stream_id(event.aggregate_id, event.aggregate_type)
            stream_ids[stream_key] = stream_id
        if row[12] != recorded or stored_at is None:
            try:
                stored_at = as_utc_datetime(row[12])
            except SerializationError as exc:
                raise unreadable_row(row, f"recorded_at: {exc}") from exc
            recorded = row[12]
        # Positional: event, stream_id, stream_position, global_position, stored_at.
        yield StoredEvent(event, stream_id, row[7], row[0], stored_at)


def paged(
    conn: BaseDatabaseWrapper,
    decoder: RowDecoder,
    sized: PageSized,
    where: list[str],
    params: list[Any],
    *,
    after: int,
    ceiling: int | None,
    limit: int | None,
    backward: bool = False,
    key: str = "position",
) -> Iterator[StoredEvent]:
    """The events matching ``where``, at most ``limit``, in pages of ``chunk_size``.

    Keyset pagination on ``key`` (``position``, or ``aggregate_version`` within one
    stream): forward, the events after ``after`` and up to ``ceiling``; backward, those
    before ``after`` (from the end when it is 0).

    The ceiling is applied here, not in the query (a planner without statistics would
    read every matching row up to it and sort them, on every page); a row past the
    ceiling ends the read and is never yielded. Unfiltered forward reads of the whole
    table go through ``windowed`` instead.
    """
    q = _Sql.get(conn)
    column = q.c(key)
    order = "DESC" if backward else "ASC"
    sql_head = f"FROM {q.table} WHERE "
    remaining = limit
    cursor_position = after
    first = True
    stream_ids: dict[Any, str] = {}
    while remaining is None or remaining > 0:
        page_size = sized.chunk_size if remaining is None else min(remaining, sized.chunk_size)
        conditions = list(where)
        page_params = list(params)
        if backward:
            if cursor_position > 0 or not first:
                conditions.append(f"{column} < %s")
                page_params.append(cursor_position)
        else:
            conditions.append(f"{column} > %s")
            page_params.append(cursor_position)
        sql = (
            sql_head
            + (" AND ".join(conditions) or "1 = 1")
            + f" ORDER BY {column} {order} LIMIT {int(page_size)}"
        )
        rows = fetch_event_rows(conn, q, sql, page_params)
        last_page = len(rows) < page_size
        if ceiling is not None and rows and rows[-1][0] > ceiling:
            # Keep only what the ceiling allows (the rows are in position order); the
            # read ends with them.
            rows = [row for row in rows if row[0] <= ceiling]
            last_page = True
        yield from _stored_events(decoder, rows, stream_ids)
        if last_page:
            return
        first = False
        last = rows[-1]
        cursor_position = int(last[0] if key == "position" else last[7])
        if remaining is not None:
            remaining -= len(rows)
