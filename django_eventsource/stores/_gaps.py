"""Gap-safe catch-up for ``DjangoEventStore``: the safe high-water mark, the sessions
that may hold catch-up readers back, and the settled floor below them.

On PostgreSQL a position can become visible after a higher one; see
``docs/event-store.md`` for why the mark computed here never passes a position that an
open transaction may still commit. Other databases serialize writers, so there the mark
is simply the last position.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import connections

from ..conf import conf
from .interface import ReaderBlocker
from .rows import raw_event_values
from .sql import _RAW_COLUMNS, _Sql, as_utc_datetime

logger = logging.getLogger("django_eventsource")


@dataclass
class _GapState:
    """What one store knows about permanent gaps on one database (PostgreSQL only)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Every position at or below it is committed or permanently missing.
    floor: int = 0
    #: ``(M, transactions)``: once none of these transactions holds the table lock,
    #: every position at or below ``M`` is settled.
    pending: tuple[int, frozenset[str]] | None = None
    #: Blocking transactions already reported in the log.
    warned: set[str] = field(default_factory=set)


def _parse_blockers(raw: Any) -> list[tuple[str, ReaderBlocker]]:
    """``(virtual transaction id, ReaderBlocker)`` pairs from the blockers JSON column."""
    items: Iterable[list[Any]] = json.loads(raw) if isinstance(raw, str | bytes) else raw or []
    seen: dict[str, ReaderBlocker] = {}
    for vxid, pid, xact_start, duration, state, application, query in items:
        seen[str(vxid)] = ReaderBlocker(
            pid=pid,
            xact_start=as_utc_datetime(xact_start) if xact_start else None,
            duration_seconds=float(duration or 0.0),
            state=state or "",
            application_name=application or "",
            query=query or "",
        )
    return list(seen.items())


class GapTracker:
    """What one store knows about the gaps on each of its databases (by alias).

    The settled floor is kept between calls: a permanent gap (a rolled-back insert)
    stops holding readers back once the transactions that might have filled it ended.
    """

    def __init__(self) -> None:
        self._states: dict[str, _GapState] = {}
        self._states_lock = threading.Lock()

    def high_water_mark(self, alias: str, *, after: int, scan_window: int) -> tuple[int, int]:
        """``(safe mark, max visible position)`` for a reader that has read up to ``after``.

        While writers hold readers back, at most ``scan_window`` positions above the
        reader's base are examined per call.
        """
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
            state = self._state(alias)
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
            bound = min(visible_max, base + scan_window)
            pos = q.c("position")
            # The end of the contiguous run of visible positions after ``base``: one
            # index-only range scan of at most ``scan_window`` entries.
            cursor.execute(
                f"SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM {q.table} WHERE {pos} = %s) "
                f"THEN %s ELSE (SELECT MIN(run.{pos}) FROM (SELECT {pos}, "
                f"lead({pos}) OVER (ORDER BY {pos}) AS next FROM {q.table} "
                f"WHERE {pos} > %s AND {pos} <= %s) run "
                f"WHERE run.next IS NULL OR run.next <> run.{pos} + 1) END",
                [base + 1, base, base, bound],
            )
            return int(cursor.fetchone()[0]), visible_max

    @staticmethod
    def blockers(alias: str) -> list[ReaderBlocker]:
        """Sessions whose open transactions may hold catch-up readers back (PostgreSQL)."""
        conn = connections[alias]
        if conn.vendor != "postgresql":
            return []
        q = _Sql.get(conn)
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT 0, {q.blockers_sql}", [q.raw_table])
            _, blockers = cursor.fetchone()
        return [blocker for _, blocker in _parse_blockers(blockers)]

    @staticmethod
    def first_row_after(
        alias: str, position: int, *, ceiling: int, buckets: tuple[int, int] | None = None
    ) -> Mapping[str, Any] | None:
        """The raw row of the first event in ``(position, ceiling]``, not deserialized.

        Ids that are not UUIDs and a payload that is not JSON come back as stored.
        ``buckets`` keeps to one unit's buckets (segmented projections).
        """
        conn = connections[alias]
        q = _Sql.get(conn)
        pos = q.c("position")
        where, params = f"{pos} > %s", [position]
        if buckets is not None:  # one unit of a segmented projection
            where += f" AND {q.c('bucket')} >= %s AND {q.c('bucket')} < %s"
            params += buckets
        with conn.cursor() as cursor:
            # A raw cursor, not the ORM: its converters would fail on the very values
            # that make the row unreadable.
            # The first row after ``position``, ceiling checked on the row found: with
            # ``LIMIT 1`` and no upper bound the plan is an index scan whatever the
            # table's statistics (a bound lets a planner without them sort every row
            # up to the ceiling).
            cursor.execute(
                f"SELECT {q.cols(*_RAW_COLUMNS)} FROM {q.table} "
                f"WHERE {where} ORDER BY {pos} LIMIT 1",
                params,
            )
            found = cursor.fetchone()
        if found is None or found[0] > ceiling:
            return None
        return raw_event_values(found)

    def _state(self, alias: str) -> _GapState:
        with self._states_lock:
            state = self._states.get(alias)
            if state is None:
                state = self._states[alias] = _GapState()
            return state

    @staticmethod
    def _warn_long_blockers(state: _GapState, blockers: list[tuple[str, ReaderBlocker]]) -> None:
        threshold = conf.HELD_BACK_WARNING_SECONDS
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
