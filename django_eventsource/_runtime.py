"""Runtime helpers shared by the long-running parts of the app.

The outbox relay, the projection runner, the Redis bus and the ``run_projections``,
``publish_outbox`` and ``consume_events`` commands all back off, name themselves, call
handlers that may be coroutines, stop on SIGTERM/SIGINT and outlive database restarts;
each of those is written once, here. Django is imported only by the database helpers,
when they are called.
"""

from __future__ import annotations

import functools
import gc
import importlib
import inspect
import os
import random
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any

from asgiref.sync import async_to_sync


def full_jitter_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    The upper bound doubles with every attempt (``base * 2 ** (attempt - 1)``, never past
    ``cap``) and the delay is drawn uniformly below it ("full jitter"), so workers that
    failed together do not retry in lockstep.
    """
    # The exponent is bounded: past ~1,024 doublings a float overflows, and a loop that
    # retries through an hours-long outage reaches that many attempts.
    ceiling = min(cap, base * 2 ** min(max(attempt - 1, 0), 64))
    return random.uniform(0, ceiling)


def worker_id() -> str:
    """``host:pid:token``: names one worker in leases, claims and Redis consumer groups.

    The host and pid let a worker on the same host see that an owner's process is gone;
    the token tells apart two workers of one process.
    """
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def worker_is_gone(owner: str) -> bool:
    """Whether ``owner`` (a :func:`worker_id`) is a process of this host that has exited.

    Owners on other hosts, and strings that are not worker ids, are never called gone.
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def run_to_completion(result: Any) -> Any:
    """Return ``result``, first awaiting it when a handler returned an awaitable."""
    if result is not None and inspect.isawaitable(result):

        async def _await() -> Any:
            return await result

        return async_to_sync(_await)()
    return result


def call_handler(func: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or ``async`` handler from sync code and return its result."""
    return run_to_completion(func(*args))


_collector_lock = threading.Lock()
_collector_pauses = 0
_collector_paused_here = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold Python's cyclic garbage collector off while a batch of events is handled.

    A batch keeps its page of events alive (thousands of events, their fields, their
    ``StoredEvent`` wrappers), and every few hundred allocations the collector walked
    them all again, which made reading a page of 5,000 events a third slower. Events
    form no reference cycles; whatever cyclic garbage the handlers leave (exceptions
    with their tracebacks, say) is collected as soon as the outermost pause ends, so it
    lives at most one batch. Nested and concurrent pauses share one count; a collector
    that was already disabled stays disabled.
    """
    global _collector_pauses, _collector_paused_here
    with _collector_lock:
        if _collector_pauses == 0:
            _collector_paused_here = gc.isenabled()
            if _collector_paused_here:
                gc.disable()
        _collector_pauses += 1
    try:
        yield
    finally:
        with _collector_lock:
            _collector_pauses -= 1
            if _collector_pauses == 0 and _collector_paused_here:
                _collector_paused_here = False
                gc.enable()


@contextmanager
def stop_on_signals(stop_event: threading.Event) -> Iterator[threading.Event]:
    """Make SIGTERM and SIGINT set ``stop_event`` while the block runs.

    The previous handlers come back afterwards. Signal handlers can only be installed from
    the main thread; elsewhere (a command called from a test thread) the block runs
    without them and only ``stop_event.set()`` stops it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop_event
        return

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_event.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop_event
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


#: SQLSTATEs of a lost or refused connection: class 08 (connection exception) and the
#: server shutting down, crashing or still starting up.
_LOST_CONNECTION_SQLSTATES = ("08", "57P01", "57P02", "57P03")


@functools.cache
def _driver_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """The installed PostgreSQL drivers' (``InterfaceError`` …, ``OperationalError`` …)."""
    interface: list[type[Exception]] = []
    operational: list[type[Exception]] = []
    for name in ("psycopg", "psycopg2"):
        with suppress(ImportError):
            driver = importlib.import_module(name)
            interface.append(driver.InterfaceError)
            operational.append(driver.OperationalError)
    return tuple(interface), tuple(operational)


def database_errors() -> tuple[type[Exception], ...]:
    """Django's and the PostgreSQL drivers' ``InterfaceError`` and ``OperationalError``."""
    from django.db import InterfaceError, OperationalError

    interface, operational = _driver_errors()
    return (InterfaceError, OperationalError, *interface, *operational)


def is_database_outage(error: BaseException) -> bool:
    """Whether ``error``, raised by an event handler, means the database is unavailable.

    It does when ``error`` is, or was raised from (``__cause__``/``__context__``), an
    ``InterfaceError`` or ``OperationalError`` of Django or the PostgreSQL driver, and
    either the driver reports a lost or refused connection (an ``OperationalError``
    without SQLSTATE, raised when the client lost the server or could not reach it, or
    with SQLSTATE class 08, 57P01, 57P02 or 57P03), or a database connection of this
    thread fails Django's ``is_usable()`` check afterwards. Anything else is the
    handler's own failure, including an ``OperationalError`` on a connection that still
    works: a deadlock, a lock or statement timeout, a missing table, SQLite's "database
    is locked".
    """
    failures = [e for e in _exception_chain(error) if isinstance(e, database_errors())]
    if not failures:
        return False
    return any(_reports_lost_connection(e) for e in failures) or _a_connection_is_broken()


def close_broken_connections() -> None:
    """Close this thread's database connections that no longer work, so that the next
    query opens a new one (outside requests, Django never does)."""
    for connection in _thread_connections():
        if connection.connection is not None and not connection.is_usable():
            with suppress(*database_errors()):
                connection.close()


def close_stale_connections() -> None:
    """``close_old_connections()`` for a worker loop, between two batches: connections
    past ``CONN_MAX_AGE`` or left unusable by an error are closed. A connection inside a
    transaction (a caller's ``atomic`` block) is left alone."""
    for connection in _thread_connections():
        with suppress(*database_errors()):
            connection.close_if_unusable_or_obsolete()


def _thread_connections() -> list[Any]:
    from django.conf import settings

    if not settings.configured:  # the Redis bus used without Django settings
        return []
    from django.db import connections

    return [c for c in connections.all(initialized_only=True) if not c.in_atomic_block]


def _exception_chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _reports_lost_connection(error: BaseException) -> bool:
    # Django's wrapper is judged by the driver error it was raised from. An
    # InterfaceError ("the connection is closed", but also "the cursor is closed") is
    # judged by the connection's state instead, and SQLite never loses a server.
    if not isinstance(error, _driver_errors()[1]):
        return False
    sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return sqlstate is None or str(sqlstate).startswith(_LOST_CONNECTION_SQLSTATES)


def _a_connection_is_broken() -> bool:
    return any(c.connection is not None and not c.is_usable() for c in _thread_connections())
