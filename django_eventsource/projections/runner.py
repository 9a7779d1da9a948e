"""The projection runner: the one loop behind ``run_projections`` and the Celery task.

For each projection it reads events after the checkpoint, in batches, never past the
store's safe high-water mark. A batch is one ``transaction.atomic``: each event's handler
runs in its own savepoint (a failed attempt leaves no partial writes), is retried with
backoff, and is dead-lettered after the last attempt; the checkpoint moves once, at the
end of the batch, in the same transaction. A projection writing to the checkpoint's
database therefore sees every event exactly once, even across crashes; one writing
elsewhere sees every event at least once.

At most one runner works on a projection at a time: on PostgreSQL through a session
advisory lock held on a dedicated connection (which also LISTENs for new events), on
other databases through a lease on the ``Checkpoint`` row. The checkpoint row is also
locked for the length of each batch, so even overlapping runners cannot apply an event
twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.db import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connections,
    router,
    transaction,
)
from django.db.models import Q
from django.utils import timezone
from django.utils.module_loading import import_string

from .. import tracing
from ..conf import conf
from ..context import event_context
from ..events.registry import default_registry
from ..exceptions import EventSourceError, EventTypeNotFoundError
from ..stores.interface import ReadOptions, StoredEvent
from .base import Projection, RetryPolicy, apply_with_retries
from .django_checkpoints import DjangoCheckpointRepository
from .django_dead_letters import DjangoDLQRepository

if TYPE_CHECKING:
    from ..stores.interface import EventStore

logger = logging.getLogger("django_eventsource")

#: Channel the Django event store notifies after each append (payload: the position).
NOTIFY_CHANNEL = "eventsource_events"

Progress = Callable[[str], None]


class UnknownProjectionError(EventSourceError, LookupError):
    """A projection name that ``EVENTSOURCE_PROJECTIONS`` does not configure."""

    def __init__(self, unknown: list[str], configured: list[str]) -> None:
        self.unknown = unknown
        self.configured = configured
        listed = ", ".join(configured) if configured else "none (EVENTSOURCE_PROJECTIONS is empty)"
        super().__init__(
            f"Unknown projection {', '.join(map(repr, unknown))}; configured: {listed}"
        )


class ProjectionBusyError(EventSourceError):
    """Another process is running the projection (it holds the lock or the lease)."""


@dataclass
class RunSummary:
    """What a run did: events read per projection and how many were dead-lettered."""

    processed: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0
    batches: int = 0

    @property
    def total_processed(self) -> int:
        return sum(self.processed.values())


@dataclass
class RetryReport:
    """Outcome of ``retry_dead_letters``; ``errors`` maps dead-letter ids to the new error."""

    resolved: int = 0
    failed: int = 0
    errors: dict[int, str] = field(default_factory=dict)


# -- configuration -----------------------------------------------------------------------


def load_projections(names: list[str] | None = None) -> list[Projection]:
    """Instantiate the projections of ``EVENTSOURCE_PROJECTIONS`` (all, or those named).

    A name matches a projection's ``name`` or its dotted path. Unknown names raise
    ``UnknownProjectionError``, which lists the configured projections.
    """
    loaded: list[tuple[str, Projection]] = []
    for path in conf.PROJECTIONS:
        factory = import_string(path)
        projection = factory()
        if not isinstance(projection, Projection):
            raise TypeError(f"{path} does not build a Projection (got {projection!r})")
        loaded.append((path, projection))
    if names is None:
        return [projection for _, projection in loaded]
    selected: list[Projection] = []
    unknown: list[str] = []
    for name in names:
        match = next((p for path, p in loaded if name in (p.name, path)), None)
        if match is None:
            unknown.append(name)
        elif match not in selected:
            selected.append(match)
    if unknown:
        raise UnknownProjectionError(unknown, [p.name for _, p in loaded])
    return selected


def default_event_store() -> EventStore:
    """The ``DjangoEventStore`` on the routed database."""
    from ..stores.django import DjangoEventStore

    return DjangoEventStore()


def checkpoint_db() -> str:
    """The database alias of checkpoints (and of the batch transactions)."""
    from ..models import Checkpoint

    return router.db_for_write(Checkpoint)


# -- exclusivity -------------------------------------------------------------------------


class _Exclusivity(ABC):
    """Who may run which projection: advisory locks or leases."""

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

    held: set[str]


def advisory_lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` derived from the projection name."""
    digest = hashlib.blake2b(f"django_eventsource.projection:{name}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class _AdvisoryLocks(_Exclusivity):
    """PostgreSQL session advisory locks held on a dedicated connection.

    A dedicated connection keeps the locks independent of Django's connection
    management (``close_old_connections`` may close the request connection between
    batches); if this process dies, PostgreSQL drops the connection and its locks.
    The same connection LISTENs for the store's notifications to wake the loop.
    """

    def __init__(self, using: str, listen: bool) -> None:
        self.using = using
        self.listen = listen
        self.held = set()
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed or self._conn.broken:
            import psycopg

            self.held.clear()
            params = connections[self.using].get_connection_params()
            for key in ("cursor_factory", "context", "prepare_threshold"):
                params.pop(key, None)
            self._conn = psycopg.connect(**params, autocommit=True)
            if self.listen:
                self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return self._conn

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
        conn = self._connection()
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
        self.held.clear()
        if conn is not None and not conn.closed:
            conn.close()


class _Leases(_Exclusivity):
    """Leases on ``Checkpoint`` rows (SQLite and other databases without advisory locks).

    A lease lasts ``EVENTSOURCE_PROJECTION_LEASE_SECONDS`` and is renewed before every
    batch. A lease left by a dead process on this host is taken over at once; elsewhere
    it is taken over when it expires.
    """

    def __init__(self, using: str) -> None:
        self.using = using
        self.held = set()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def acquire(self, name: str) -> bool:
        from ..models import Checkpoint

        _ensure_checkpoint_row(name, self.using)
        now = timezone.now()
        rows = Checkpoint.objects.using(self.using).filter(projection_name=name)
        expires = now + timedelta(seconds=float(conf.PROJECTION_LEASE_SECONDS))
        available = (
            Q(lease_owner="")
            | Q(lease_owner=self.owner)
            | Q(lease_expires_at__isnull=True)
            | Q(lease_expires_at__lt=now)
        )
        taken = rows.filter(available).update(lease_owner=self.owner, lease_expires_at=expires)
        if not taken:
            current = rows.values_list("lease_owner", flat=True).first() or ""
            if _owner_is_dead(current):
                taken = rows.filter(lease_owner=current).update(
                    lease_owner=self.owner, lease_expires_at=expires
                )
        if taken:
            self.held.add(name)
        else:
            self.held.discard(name)
        return bool(taken)

    def release(self, name: str) -> None:
        from ..models import Checkpoint

        self.held.discard(name)
        Checkpoint.objects.using(self.using).filter(
            projection_name=name, lease_owner=self.owner
        ).update(lease_owner="", lease_expires_at=None)


def _owner_is_dead(owner: str) -> bool:
    """Whether a lease owner ``host:pid:token`` is a process of this host that has exited."""
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


def _exclusivity(using: str, listen: bool) -> _Exclusivity:
    if connections[using].vendor == "postgresql":
        return _AdvisoryLocks(using, listen=listen)
    return _Leases(using)


def _ensure_checkpoint_row(name: str, using: str) -> None:
    from ..models import Checkpoint

    if Checkpoint.objects.using(using).filter(projection_name=name).exists():
        return
    try:
        with transaction.atomic(using=using):
            Checkpoint.objects.using(using).create(projection_name=name)
    except IntegrityError:
        pass  # created concurrently by another runner


# -- one batch ---------------------------------------------------------------------------


@dataclass
class _Context:
    store: EventStore
    using: str
    batch_size: int
    checkpoints: DjangoCheckpointRepository
    dead_letters: DjangoDLQRepository


@dataclass
class _BatchResult:
    count: int
    handled: int
    dead_lettered: int
    from_position: int
    to_position: int


def _locked_position(name: str, using: str) -> int:
    """The checkpoint position, with the row locked until the batch commits."""
    from ..models import Checkpoint

    locked = (
        Checkpoint.objects.using(using)
        .select_for_update()
        .filter(projection_name=name)
        .values_list("position", flat=True)
    )
    position = locked.first()
    if position is None:  # the projection's first batch
        _ensure_checkpoint_row(name, using)
        position = locked.get()
    return int(position)


def _read_batch(ctx: _Context, position: int) -> tuple[list[StoredEvent], EventSourceError | None]:
    """The next events after ``position``, and the error that cut the batch short, if any.

    ``read_all`` yields row by row, so the events before an unreadable one are kept.
    """
    events: list[StoredEvent] = []
    try:
        for stored in ctx.store.read_all(ReadOptions(from_position=position, limit=ctx.batch_size)):
            events.append(stored)
    except EventSourceError as exc:
        return events, exc
    return events, None


def _run_batch(projection: Projection, ctx: _Context) -> _BatchResult:
    """One batch in one transaction: handlers, dead letters and the checkpoint commit together."""
    name = projection.name
    policy = projection.get_retry_policy()
    with transaction.atomic(using=ctx.using):
        position = _locked_position(name, ctx.using)
        batch, read_error = _read_batch(ctx, position)
        with _batch_span(name, position, batch) as current:
            wanted = [stored for stored in batch if projection.is_interested_in(stored.event)]
            handled, dead = len(wanted), 0
            if not (
                projection.optimistic_batches and _apply_in_one_savepoint(projection, wanted, ctx)
            ):
                savepoint = EventSavepoint(ctx.using)  # one object, entered once per attempt
                traced = tracing.tracing_enabled()

                def each_attempt() -> AbstractContextManager[Any]:
                    return savepoint

                for stored in wanted:
                    attempt_scope = each_attempt
                    if traced:
                        attempt_scope = tracing.with_failure_spans(
                            attempt_scope,
                            "eventsource.projection.handler_failed",
                            {
                                "projection": name,
                                "event_id": stored.event_id,
                                "event_type": stored.event_type,
                                "position": stored.global_position,
                            },
                        )
                    failure = apply_with_retries(
                        projection, stored.event, policy, attempt_scope=attempt_scope
                    )
                    if failure is not None:
                        dead += 1
                        _record_dead_letter(ctx, name, stored, failure.error, failure.attempts)
            tracing.set_attributes(current, handled=handled, dead_lettered=dead)
        count = len(batch)
        last = (
            (batch[-1].global_position, batch[-1].event_id, batch[-1].event_type) if batch else None
        )
        if read_error is not None:
            after = batch[-1].global_position if batch else position
            skipped, dead_lettered = _handle_unreadable(projection, ctx, after, read_error)
            last = skipped
            count += 1
            handled += dead_lettered
            dead += dead_lettered
        if last is None:
            return _BatchResult(0, 0, 0, position, position)
        ctx.checkpoints.update_checkpoint(name, last[1], last[2], last[0], handled)
    return _BatchResult(count, handled, dead, position, last[0])


def _batch_span(name: str, position: int, batch: list[StoredEvent]) -> AbstractContextManager[Any]:
    """The ``eventsource.projection.batch`` span; none for a poll that found nothing."""
    if not batch:
        return nullcontext()
    attributes = {
        "projection": name,
        "batch_size": len(batch),
        "from_position": position,
        "to_position": batch[-1].global_position,
    }
    return tracing.span("eventsource.projection.batch", attributes)


class EventSavepoint:
    """One event's savepoint, created only when its handler first touches the database.

    Behaves like ``transaction.atomic(using=…)`` nested in the batch transaction: if
    the block raises, the handler's writes and the ``on_commit`` callbacks it
    registered are discarded, and the batch carries on. But the ``SAVEPOINT`` is sent
    just before the handler's first query on that connection (through an execute
    wrapper), so a handler that runs no query costs no round trip, and one that does
    pays the same two as with ``atomic``.
    """

    def __init__(self, using: str) -> None:
        self.connection = connections[using]
        self.sid: str | None = None
        self._creating = False
        self._callbacks = 0

    def __call__(self, execute: Callable[..., Any], *args: Any) -> Any:
        if self.sid is None and not self._creating:
            self._creating = True  # the SAVEPOINT statement comes through here too
            try:
                self.sid = self.connection.savepoint()
            finally:
                self._creating = False
        return execute(*args)

    def __enter__(self) -> EventSavepoint:
        connection = self.connection
        if not connection.in_atomic_block:
            raise transaction.TransactionManagementError(
                "EventSavepoint must be used inside transaction.atomic()."
            )
        self.sid = None  # the object may be entered again, one block after the other
        self._callbacks = len(connection.run_on_commit)
        # What ``connection.execute_wrapper()`` does, without a generator per event.
        connection.execute_wrappers.append(self)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        connection, sid = self.connection, self.sid
        connection.execute_wrappers.remove(self)
        if connection.closed_in_transaction:
            return  # the database rolls back by itself; the batch's atomic reports it
        if exc_type is None and not connection.needs_rollback:
            if sid is not None:
                connection.savepoint_commit(sid)
            return
        # As an inner ``atomic`` does: roll back to the savepoint and release it.
        # Without one the handler ran no query here, so there is nothing to undo.
        connection.needs_rollback = False
        del connection.run_on_commit[self._callbacks :]
        if sid is None:
            return
        try:
            connection.savepoint_rollback(sid)
            connection.savepoint_commit(sid)
        except Exception:
            connection.needs_rollback = True


def _apply_in_one_savepoint(
    projection: Projection, events: list[StoredEvent], ctx: _Context
) -> bool:
    """Apply ``events`` in a single savepoint; ``False`` (nothing kept) if any handler raised.

    The fast path of projections with ``optimistic_batches``: on failure the caller
    replays the batch with one savepoint per event, retries and dead letters.
    """
    try:
        with transaction.atomic(using=ctx.using):
            for stored in events:
                event = stored.event
                with event_context(
                    causation_id=event.event_id, correlation_id=event.correlation_id
                ):
                    projection.process(event)
    except Exception as exc:
        logger.debug(
            "Projection %s: a handler failed in the batch savepoint (%s); "
            "replaying the batch one event at a time",
            projection.name,
            exc,
            extra={"projection": projection.name},
        )
        return False
    return True


def _record_dead_letter(
    ctx: _Context, name: str, stored: StoredEvent, error: BaseException, attempts: int
) -> None:
    logger.error(
        "Projection %s dead-lettered event %s (%s) at position %d after %d attempts: %s",
        name,
        stored.event_id,
        stored.event_type,
        stored.global_position,
        attempts,
        error,
        extra={
            "projection": name,
            "event_id": str(stored.event_id),
            "event_type": stored.event_type,
            "position": stored.global_position,
            "attempts": attempts,
        },
    )
    ctx.dead_letters.add_failed_event(
        event_id=stored.event_id,
        projection_name=name,
        event_type=stored.event_type,
        event_data=stored.event.to_dict(),
        error=error,
        retry_count=attempts,
        global_position=stored.global_position,
    )


def _handle_unreadable(
    projection: Projection, ctx: _Context, after: int, error: EventSourceError
) -> tuple[tuple[int, UUID, str], int]:
    """Deal with the first stored event after ``after``, which could not be deserialized.

    A payload that no longer validates is dead-lettered with its raw row and skipped, so
    one bad event never stalls the projection. An unregistered event type is skipped
    when the projection subscribes to named classes (it cannot be one of them);
    otherwise it is a configuration error (the module defining the event was not
    imported) and is raised. Returns ``((position, event_id, event_type), dead_lettered)``.
    """
    from ..models import EventRecord

    row = (
        EventRecord.objects.using(router.db_for_read(EventRecord))
        .filter(position__gt=after, position__lte=ctx.store.safe_high_water_mark())
        .order_by("position")
        .values(
            "position",
            "event_id",
            "event_type",
            "event_version",
            "aggregate_id",
            "aggregate_type",
            "aggregate_version",
            "payload",
        )
        .first()
    )
    if row is None:
        raise error
    found = (int(row["position"]), row["event_id"], str(row["event_type"]))
    if isinstance(error, EventTypeNotFoundError):
        wanted = {cls.event_type_name() for cls in projection.subscribed_to()}
        if wanted and found[2] not in wanted:
            return found, 0
        raise error
    raw = {key: str(value) if key.endswith("_id") else value for key, value in row.items()}
    logger.error(
        "Projection %s dead-lettered unreadable event %s at position %d: %s",
        projection.name,
        row["event_id"],
        row["position"],
        error,
        extra={"projection": projection.name, "position": row["position"]},
    )
    ctx.dead_letters.add_failed_event(
        event_id=row["event_id"],
        projection_name=projection.name,
        event_type=row["event_type"],
        event_data=raw,
        error=error,
        retry_count=0,
        global_position=row["position"],
    )
    return found, 1


# -- the loop ------------------------------------------------------------------------------


def _drain(
    projection: Projection,
    ctx: _Context,
    summary: RunSummary,
    stop_event: threading.Event,
    progress: Progress | None,
    guard: _Exclusivity,
    target: int | None = None,
) -> None:
    """Run batches of one projection until it is caught up or a stop is requested.

    The lock or lease is confirmed (a lease renewed) before every batch; if it was lost
    to another runner, this one stops working on the projection.
    """
    name = projection.name
    while not stop_event.is_set() and guard.acquire(name):
        result = _run_batch(projection, ctx)
        if result.count == 0:
            return
        summary.batches += 1
        summary.processed[name] = summary.processed.get(name, 0) + result.count
        summary.dead_lettered += result.dead_lettered
        logger.info(
            "Projection %s processed %d events (positions %d-%d)",
            name,
            result.count,
            result.from_position + 1,
            result.to_position,
            extra={
                "projection": name,
                "from_position": result.from_position,
                "to_position": result.to_position,
                "count": result.count,
                "handled": result.handled,
                "dead_lettered": result.dead_lettered,
            },
        )
        if progress is not None:
            if target:
                percent = min(100.0, 100.0 * result.to_position / target)
                progress(f"{name}: position {result.to_position}/{target} ({percent:.0f}%)")
            else:
                progress(f"{name}: {result.count} events, position {result.to_position}")


def run_projections(
    names: list[str] | None = None,
    *,
    once: bool = False,
    batch_size: int | None = None,
    poll_interval: float | None = None,
    stop_event: threading.Event | None = None,
    store: EventStore | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Catch the projections up, then (unless ``once``) keep following new events.

    ``names`` selects projections of ``EVENTSOURCE_PROJECTIONS`` (all by default).
    With ``once`` every projection is brought up to the current safe high-water mark
    and the function returns; otherwise it loops until ``stop_event`` is set, waking
    every ``poll_interval`` seconds (and, on PostgreSQL, as soon as an event is
    appended). A projection run by another process is skipped until it is free.
    Lost database connections are logged and retried with backoff.
    """
    projections = load_projections(names)
    stop_event = stop_event or threading.Event()
    interval = float(conf.POLL_INTERVAL if poll_interval is None else poll_interval)
    using = checkpoint_db()
    ctx = _Context(
        store=store or default_event_store(),
        using=using,
        batch_size=int(batch_size or conf.PROJECTION_BATCH_SIZE),
        checkpoints=DjangoCheckpointRepository(using),
        dead_letters=DjangoDLQRepository(using),
    )
    summary = RunSummary(processed={p.name: 0 for p in projections})
    guard = _exclusivity(using, listen=not once)
    failures = 0
    try:
        while not stop_event.is_set():
            try:
                for projection in projections:
                    if stop_event.is_set():
                        break
                    if not guard.acquire(projection.name):
                        logger.debug(
                            "Projection %s is run by another process; skipping",
                            projection.name,
                            extra={"projection": projection.name},
                        )
                        continue
                    _drain(projection, ctx, summary, stop_event, progress, guard)
                failures = 0
                if once:
                    break
                guard.wait(interval, stop_event)
                if not connections[using].in_atomic_block:
                    close_old_connections()
            except _database_errors() as exc:
                if once:
                    raise
                failures += 1
                delay = min(max(interval, 0.1) * 2**failures, 30.0)
                logger.warning(
                    "Database unavailable (%s); retrying in %.1fs",
                    exc,
                    delay,
                    extra={"attempt": failures},
                )
                _drop_connections(guard, using)
                stop_event.wait(delay)
    finally:
        _drop_connections(guard, using)
    return summary


def _database_errors() -> tuple[type[Exception], ...]:
    """Errors meaning "the database went away": retried by the loop, not fatal."""
    errors: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - installs without PostgreSQL support
        return errors
    return (*errors, psycopg.OperationalError, psycopg.InterfaceError)


def _drop_connections(guard: _Exclusivity, using: str) -> None:
    """Release what can be released and close broken connections; never raise."""
    try:
        guard.close()
    except _database_errors():
        logger.debug("Could not release projection locks cleanly", exc_info=True)
    if connections[using].in_atomic_block:
        return  # the caller's transaction: not ours to close
    try:
        close_old_connections()
    except _database_errors():
        logger.debug("Could not close a broken connection cleanly", exc_info=True)


@contextmanager
def _exclusive(name: str, using: str) -> Iterator[_Exclusivity]:
    guard = _exclusivity(using, listen=False)
    try:
        if not guard.acquire(name):
            raise ProjectionBusyError(
                f"Projection {name!r} is being run by another process; stop it first"
            )
        yield guard
    finally:
        guard.close()


def reset_projection(
    name: str, rebuild: bool = False, progress: Progress | None = None
) -> RunSummary:
    """Empty a projection's read model (``reset()``) and its checkpoint.

    With ``rebuild`` it then replays every event from position 0, calling ``progress``
    with a percentage after each batch. Raises ``ProjectionBusyError`` when a runner is
    working on the projection.
    """
    (projection,) = load_projections([name])
    using = checkpoint_db()
    summary = RunSummary(processed={projection.name: 0})
    with _exclusive(projection.name, using) as guard:
        with transaction.atomic(using=using):
            projection.reset()
            DjangoCheckpointRepository(using).reset_checkpoint(projection.name)
        logger.info("Projection %s reset", projection.name, extra={"projection": projection.name})
        if rebuild:
            store = default_event_store()
            ctx = _Context(
                store=store,
                using=using,
                batch_size=int(conf.PROJECTION_BATCH_SIZE),
                checkpoints=DjangoCheckpointRepository(using),
                dead_letters=DjangoDLQRepository(using),
            )
            _drain(
                projection,
                ctx,
                summary,
                threading.Event(),
                progress,
                guard,
                target=store.safe_high_water_mark(),
            )
    return summary


def retry_dead_letters(
    projection: str | None = None,
    ids: list[int] | None = None,
    resolved_by: str = "retry_dead_letters",
) -> RetryReport:
    """Run dead-lettered events through their projection's handler again.

    Each retry runs in a savepoint with the event's causation and correlation. Success
    marks the entry resolved; failure keeps it, with the new error and one more
    attempt counted. ``projection`` restricts to one projection, ``ids`` to entries.
    """
    using = checkpoint_db()
    dead_letters = DjangoDLQRepository(using)
    configured = {p.name: p for p in load_projections()}
    if projection is not None and projection not in configured:
        load_projections([projection])  # raises UnknownProjectionError with the list
    if ids:
        entries = [e for i in ids if (e := dead_letters.get_failed_event_by_id(i)) is not None]
    else:
        entries = dead_letters.get_failed_events(projection, status="failed", limit=10_000)
        entries += dead_letters.get_failed_events(projection, status="retrying", limit=10_000)
    report = RetryReport()
    for missing in set(ids or []) - {e.id for e in entries}:
        report.failed += 1
        report.errors[missing] = "No such dead letter"
    for entry in entries:
        if entry.status == "resolved" or (projection and entry.projection_name != projection):
            continue
        target = configured.get(entry.projection_name)
        if target is None:
            report.failed += 1
            report.errors[entry.id] = f"Projection {entry.projection_name!r} is not configured"
            continue
        dead_letters.mark_retrying(entry.id)
        error: BaseException | None
        try:
            event = default_registry.deserialize(entry.event_data)
        except Exception as exc:
            error = exc
        else:
            failure = apply_with_retries(
                target,
                event,
                RetryPolicy(max_attempts=1),
                attempt_scope=lambda: transaction.atomic(using=using),
            )
            error = failure.error if failure is not None else None
        if error is not None:
            dead_letters.add_failed_event(
                event_id=entry.event_id,
                projection_name=entry.projection_name,
                event_type=entry.event_type,
                event_data=entry.event_data,
                error=error,
                retry_count=entry.retry_count + 1,
                global_position=entry.global_position,
            )
            report.failed += 1
            report.errors[entry.id] = f"{type(error).__name__}: {error}"
            continue
        dead_letters.mark_resolved(entry.id, resolved_by)
        report.resolved += 1
        logger.info(
            "Dead letter %d of %s resolved",
            entry.id,
            entry.projection_name,
            extra={"projection": entry.projection_name, "dead_letter": entry.id},
        )
    return report


__all__ = [
    "NOTIFY_CHANNEL",
    "EventSavepoint",
    "ProjectionBusyError",
    "RetryReport",
    "RunSummary",
    "UnknownProjectionError",
    "advisory_lock_key",
    "load_projections",
    "reset_projection",
    "retry_dead_letters",
    "run_projections",
]
