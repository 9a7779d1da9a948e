"""At most one runner per projection: advisory locks on PostgreSQL, leases elsewhere.

On PostgreSQL a runner holds a session advisory lock per projection on a dedicated
connection (and LISTENs for new events on the events database); on other databases, and
behind a transaction-mode pooler (``EVENTSOURCE_PROJECTION_LOCK = "lease"``), it holds a
lease on the projection's ``Checkpoint`` row and polls. Either way a runner that cannot
take a projection skips it until it is free.
"""

from __future__ import annotations

import hashlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.db import connections, router
from django.db.models import Q
from django.utils import timezone

from .._runtime import worker_id, worker_is_gone
from ..conf import conf
from ..exceptions import ProjectionBusyError
from ..models import Checkpoint, EventRecord
from ..stores.django import NOTIFY_CHANNEL


class Exclusivity(ABC):
    """Who may run which projection: advisory locks or leases."""

    held: set[str]

    @abstractmethod
    def acquire(self, name: str) -> bool:
        """Take (or keep) the right to run ``name``; ``False`` if another runner has it."""

    @abstractmethod
    def release(self, name: str) -> None: ...

    def release_all(self) -> None:
        for name in list(self.held):
            self.release(name)

    def wait(self, timeout: float, stop_event: threading.Event) -> None:
        """Sleep up to ``timeout`` seconds, waking early on a stop request (or a new event)."""
        stop_event.wait(timeout)

    def close(self) -> None:
        self.release_all()


def advisory_lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` derived from the projection name."""
    digest = hashlib.blake2b(f"django_eventsource.projection:{name}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class AdvisoryLocks(Exclusivity):
    """PostgreSQL session advisory locks held on a dedicated connection.

    A dedicated connection keeps the locks independent of Django's connection
    management (``close_old_connections`` may close the request connection between
    batches); if this process dies, PostgreSQL drops the connection and its locks.
    The same connection LISTENs for the store's notifications to wake the loop.
    """

    def __init__(self, using: str, listen: bool, listen_using: str | None = None) -> None:
        self.using = using
        self.listen = listen
        # Appends notify on the events database, which may not be the checkpoints' one.
        self.listen_using = listen_using or using
        self.held = set()
        self._conn: Any = None
        self._listener: Any = None

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.held.clear()
            self._conn = _dedicated(self.using)
            if self.listen and self.listen_using == self.using:
                self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return self._conn

    def _listening(self) -> Any:
        if self.listen_using == self.using:
            return self._connection()
        if self._listener is None or self._listener.closed or self._listener.broken:
            self._listener = _dedicated(self.listen_using)
            self._listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return self._listener

    def acquire(self, name: str) -> bool:
        conn = self._connection()
        if name in self.held:
            return True
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (advisory_lock_key(name),)).fetchone()
        if row and row[0]:
            self.held.add(name)
            return True
        return False

    def release(self, name: str) -> None:
        if name not in self.held:
            return
        self.held.discard(name)
        if self._conn is not None and not self._conn.closed:
            self._conn.execute("SELECT pg_advisory_unlock(%s)", (advisory_lock_key(name),))

    def wait(self, timeout: float, stop_event: threading.Event) -> None:
        if not self.listen:
            stop_event.wait(timeout)
            return
        conn = self._listening()
        deadline = time.monotonic() + timeout
        while not stop_event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # Short slices so that a stop request is noticed promptly.
            for _ in conn.notifies(timeout=min(remaining, 0.25), stop_after=1):
                return

    def close(self) -> None:
        conn, self._conn = self._conn, None
        listener, self._listener = self._listener, None
        self.held.clear()
        for dedicated in (conn, listener):
            if dedicated is not None and not dedicated.closed:
                dedicated.close()


def _dedicated(using: str) -> Any:
    """A psycopg connection of its own (autocommit) to the database ``using``."""
    import psycopg

    params = connections[using].get_connection_params()
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    return psycopg.connect(**params, autocommit=True)


class Leases(Exclusivity):
    """Leases on ``Checkpoint`` rows (SQLite and other databases without advisory locks).

    A lease lasts ``EVENTSOURCE_PROJECTION_LEASE_SECONDS`` and is renewed before every
    batch. A lease left by a dead process on this host is taken over at once; elsewhere
    it is taken over when it expires.
    """

    def __init__(self, using: str) -> None:
        self.using = using
        self.held = set()
        self.owner = worker_id()

    def acquire(self, name: str) -> bool:
        Checkpoint.objects.using(self.using).ensure(name)
        now = timezone.now()
        rows = Checkpoint.objects.using(self.using).for_projection(name)
        expires = now + timedelta(seconds=conf.PROJECTION_LEASE_SECONDS)
        available = (
            Q(lease_owner="")
            | Q(lease_owner=self.owner)
            | Q(lease_expires_at__isnull=True)
            | Q(lease_expires_at__lt=now)
        )
        taken = rows.filter(available).update(lease_owner=self.owner, lease_expires_at=expires)
        if not taken:
            current = rows.values_list("lease_owner", flat=True).first() or ""
            if worker_is_gone(current):
                taken = rows.filter(lease_owner=current).update(
                    lease_owner=self.owner, lease_expires_at=expires
                )
        if taken:
            self.held.add(name)
        else:
            self.held.discard(name)
        return bool(taken)

    def release(self, name: str) -> None:
        self.held.discard(name)
        Checkpoint.objects.using(self.using).for_projection(name).filter(
            lease_owner=self.owner
        ).update(lease_owner="", lease_expires_at=None)


def exclusivity_for(using: str, listen: bool) -> Exclusivity:
    """Advisory locks when ``using`` is PostgreSQL, else leases (and always with
    ``EVENTSOURCE_PROJECTION_LOCK = "lease"``, for transaction-mode poolers).

    With ``listen``, advisory locks LISTEN on the events database when it is PostgreSQL;
    leases poll.
    """
    if connections[using].vendor == "postgresql" and conf.PROJECTION_LOCK != "lease":
        events = router.db_for_write(EventRecord)
        listen = listen and connections[events].vendor == "postgresql"
        return AdvisoryLocks(using, listen=listen, listen_using=events)
    return Leases(using)


@contextmanager
def exclusive(name: str, using: str) -> Iterator[Exclusivity]:
    """Hold the projection ``name`` for the block; ``ProjectionBusyError`` if a runner has it."""
    guard = exclusivity_for(using, listen=False)
    try:
        if not guard.acquire(name):
            raise ProjectionBusyError(
                f"Projection {name!r} is being run by another process; stop it first"
            )
        yield guard
    finally:
        guard.close()


__all__ = [
    "AdvisoryLocks",
    "Exclusivity",
    "Leases",
    "advisory_lock_key",
    "exclusive",
    "exclusivity_for",
]
