"""What a ``DjangoEventStore`` tracks about position gaps on PostgreSQL: the sessions
that may hold catch-up readers back and the settled floor below them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .interface import ReaderBlocker
from .sql import as_utc_datetime


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
