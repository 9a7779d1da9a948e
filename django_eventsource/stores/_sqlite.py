"""SQLite's single writer: retrying an append while the database is locked, and the
connection settings that make writers wait for the lock instead of failing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from django.db import OperationalError

from .._runtime import full_jitter_delay

T = TypeVar("T")

#: The ``OPTIONS`` the docs and system check W003 recommend for a SQLite database.
RECOMMENDED_OPTIONS = {"transaction_mode": "IMMEDIATE", "timeout": 20}

#: Seam for tests: what the retry loop waits with between attempts.
sleep: Callable[[float], Any] = time.sleep


def is_database_locked(error: OperationalError) -> bool:
    """Whether ``error`` is SQLite's "database is locked" (another writer holds the lock)."""
    code = getattr(error.__cause__, "sqlite_errorcode", None)
    if isinstance(code, int):
        # Extended codes (SQLITE_BUSY_SNAPSHOT…) carry the primary code in the low byte.
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "database is locked" in str(error)


def retry_while_locked(attempt: Callable[[], T], retry_seconds: float) -> T:
    """``attempt()``, run again while it fails with "database is locked", for up to
    ``retry_seconds`` (the last attempt may add up to the connection's busy timeout).

    SQLite's busy handler polls instead of queueing writers, so under many concurrent
    writers an unlucky one can wait out its whole ``timeout`` and fail. ``attempt`` must
    own its transaction and be safe to repeat; the append is, being idempotent by event id.
    """
    deadline = time.monotonic() + retry_seconds
    failures = 0
    while True:
        try:
            return attempt()
        except OperationalError as error:
            failures += 1
            if not is_database_locked(error) or time.monotonic() >= deadline:
                raise
        # Jittered, so writers that failed together do not come back in step.
        sleep(full_jitter_delay(failures, base=0.01, cap=0.2))


def lock_settings_problem(options: Mapping[str, Any]) -> str | None:
    """What is missing from a SQLite database's ``OPTIONS`` for concurrent writers, if anything.

    Without ``transaction_mode = "IMMEDIATE"`` a transaction that reads before it writes
    fails with "database is locked" instead of waiting; without a ``timeout`` (seconds of
    the busy handler) a writer waits 5 seconds, or none with ``0``.
    """
    missing = []
    if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
        missing.append('"transaction_mode": "IMMEDIATE"')
    timeout = options.get("timeout")
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        missing.append('a "timeout" in seconds')
    return " and ".join(missing) or None
