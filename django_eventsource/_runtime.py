"""Runtime helpers shared by the long-running parts of the app.

The outbox relay, the projection runner, the Redis bus and the ``run_projections``,
``publish_outbox`` and ``consume_events`` commands all back off, name themselves, call
handlers that may be coroutines and stop on SIGTERM/SIGINT; each of those is written once,
here.
"""

from __future__ import annotations

import inspect
import os
import random
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from asgiref.sync import async_to_sync


def full_jitter_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    The upper bound doubles with every attempt (``base * 2 ** (attempt - 1)``, never past
    ``cap``) and the delay is drawn uniformly below it ("full jitter"), so workers that
    failed together do not retry in lockstep.
    """
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
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
