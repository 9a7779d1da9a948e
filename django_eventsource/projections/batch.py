"""One batch of one projection: a single transaction for handlers, dead letters and checkpoint.

The checkpoint row is locked for the length of the batch, so even overlapping runners
cannot apply an event twice. Each event's handler runs in its own savepoint
(``EventSavepoint``), so a failed attempt leaves no partial writes; it is retried with
backoff and dead-lettered after the last attempt. A ``BatchProjection`` gets the whole
page in one call instead, narrowed down on failure (:mod:`.narrowing`). The checkpoint
moves once, at the end of the batch. A projection writing to the checkpoint's database
therefore sees every event exactly once, even across crashes; one writing elsewhere sees
every event at least once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db import connections, transaction
from django.utils import timezone

from .. import tracing
from .._runtime import collector_paused
from ..conf import conf
from ..context import event_context
from ..exceptions import EventSourceError, EventTypeNotFoundError
from ..models import Checkpoint
from ..stores.django import DjangoEventStore
from ..stores.interface import EventStore, ReadOptions, StoredEvent
from .base import BatchProjection, HandlingFailure, Projection, RetryPolicy, apply_with_retries
from .django_checkpoints import DjangoCheckpointRepository
from .django_dead_letters import DjangoDLQRepository
from .narrowing import BatchHooks, NarrowingOutcome, apply_batch_projection
from .sequencing import Sequencing

logger = logging.getLogger("django_eventsource")


@dataclass
class BatchContext:
    """What every batch of a run shares: the store, the database and the repositories."""

    store: EventStore
    using: str
    batch_size: int
    checkpoints: DjangoCheckpointRepository
    dead_letters: DjangoDLQRepository
    #: Set to end the batch early (SIGTERM/SIGINT): checked before each event and during
    #: retry backoff.
    stop_event: threading.Event | None = None
    #: Consecutive failed events that pause the projection; ``None`` reads the setting.
    pause_after: int | None = None


@dataclass
class BatchResult:
    """Events read (``count``), handled and dead-lettered, and the positions covered.

    ``parked`` events waited behind a dead letter of their sequence; ``paused`` says the
    projection is paused (it paused in this batch, or was already); ``stopped`` that a
    stop request ended the batch early.
    """

    count: int
    handled: int
    dead_lettered: int
    from_position: int
    to_position: int
    parked: int = 0
    paused: bool = False
    stopped: bool = False


def _locked_checkpoint(name: str, using: str) -> tuple[int, int, bool]:
    """The checkpoint's position, failure streak and paused flag, the row locked until commit."""
    locked = (
        Checkpoint.objects.using(using)
        .select_for_update()
        .for_projection(name)
        .values_list("position", "failure_streak", "paused_at")
    )
    row = locked.first()
    if row is None:  # the projection's first batch
        Checkpoint.objects.using(using).ensure(name)
        row = locked.get()
    position, streak, paused_at = row
    return int(position), int(streak), paused_at is not None


def _read_batch(
    ctx: BatchContext, position: int, buckets: tuple[int, int] | None = None
) -> tuple[list[StoredEvent], EventSourceError | None]:
    """The next events after ``position``, and the error that cut the batch short, if any.

    ``read_all`` yields row by row, so the events before an unreadable one are kept.
    """
    events: list[StoredEvent] = []
    try:
        options = ReadOptions(from_position=position, limit=ctx.batch_size, buckets=buckets)
        with collector_paused():  # the page stays alive: see ``collector_paused``
            for stored in ctx.store.read_all(options):
                events.append(stored)
    except EventSourceError as exc:
        return events, exc
    return events, None


def run_batch(projection: Projection, ctx: BatchContext) -> BatchResult:
    """One batch in one transaction: handlers, dead letters and the checkpoint commit together.

    Python's cyclic garbage collector waits while the page of events is read and, for a
    ``BatchProjection`` (one ``handle_batch`` call per page), until the batch ends: the
    page stays alive throughout, and each collection would walk it again (see
    ``collector_paused``). Per-event handlers run with the collector on, since a batch
    of slow handlers may take minutes.

    Events whose sequence has an open dead letter are parked behind it (see
    :mod:`.sequencing`). The batch ends early, committing up to the last event fully dealt
    with, when a stop is requested (before an event, or while waiting to retry one) and
    when the projection reaches ``EVENTSOURCE_PROJECTION_PAUSE_AFTER`` consecutive
    dead-lettered events (up to and including the one that reached it); the projection
    is then paused. A paused projection's batch does nothing. A ``BatchProjection`` gets
    the page in ``handle_batch`` calls, narrowed down on failure (:mod:`.narrowing`),
    with the same parking; it pauses at the end of the batch that reached the limit.
    """
    if isinstance(projection, BatchProjection):
        with collector_paused():
            return _run_batch(projection, ctx)
    return _run_batch(projection, ctx)


def _run_batch(projection: Projection, ctx: BatchContext) -> BatchResult:
    name = projection.name
    policy = projection.get_retry_policy()
    stop = ctx.stop_event
    pause_after = conf.PROJECTION_PAUSE_AFTER if ctx.pause_after is None else ctx.pause_after
    with transaction.atomic(using=ctx.using):
        position, streak, paused = _locked_checkpoint(name, ctx.using)
        if paused:
            return BatchResult(0, 0, 0, position, position, paused=True)
        # A unit of a segmented projection reads only its buckets (projections/segments.py).
        batch, read_error = _read_batch(ctx, position, getattr(projection, "segment_buckets", None))
        if not batch and read_error is None:
            return BatchResult(0, 0, 0, position, position)
        sequencing = Sequencing.load(projection, ctx.dead_letters, streak)
        # When the batch ends early: the position of the first event not dealt with.
        cut_before: int | None = None
        pausing = False
        last_error = ""
        with _batch_span(name, position, batch) as current:
            interested = projection.interest_filter()
            wanted = [stored for stored in batch if interested(stored.event)]
            handled, dead = 0, 0
            admitted = (
                _apply_in_one_savepoint(projection, wanted, ctx, sequencing)
                if projection.optimistic_batches and not isinstance(projection, BatchProjection)
                else None
            )
            if isinstance(projection, BatchProjection):
                outcome = _apply_batch_projection(projection, wanted, ctx, sequencing, policy)
                handled = outcome.applied + outcome.dead_lettered
                dead = outcome.dead_lettered
                last_error = outcome.last_error
                if outcome.stopped_at is not None:
                    cut_before = outcome.stopped_at
                elif dead and sequencing.should_pause(pause_after):
                    pausing = True
            elif admitted is not None:
                handled = len(admitted)
                if admitted:
                    sequencing.handled(admitted[-1])
            else:
                savepoint = EventSavepoint(ctx.using)  # one object, entered once per attempt
                traced = tracing.tracing_enabled()

                def each_attempt() -> AbstractContextManager[Any]:
                    return savepoint

                for stored in wanted:
                    if stop is not None and stop.is_set():
                        cut_before = stored.global_position
                        break
                    if not sequencing.admit([stored]):
                        continue  # parked behind the dead letter of its sequence
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
                        projection,
                        stored.event,
                        policy,
                        attempt_scope=attempt_scope,
                        stop_event=stop,
                    )
                    if failure is None:
                        handled += 1
                        sequencing.handled(stored)
                        continue
                    if failure.stopped:
                        cut_before = stored.global_position
                        break
                    handled += 1
                    dead += 1
                    key = sequencing.key_of(stored)
                    _record_dead_letter(ctx, name, stored, failure.error, failure.attempts, key)
                    sequencing.dead_lettered(stored)
                    last_error = f"{type(failure.error).__name__}: {failure.error}"
                    if sequencing.should_pause(pause_after):
                        pausing = True
                        cut_before = stored.global_position + 1
                        break
            tracing.set_attributes(
                current, handled=handled, dead_lettered=dead, parked=sequencing.parked
            )
        if cut_before is not None:
            batch = [stored for stored in batch if stored.global_position < cut_before]
            read_error = None
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
        _save_streak(name, ctx, streak, sequencing, last_error, pausing, pause_after)
        stopped = cut_before is not None and not pausing
        if last is None:
            return BatchResult(0, 0, 0, position, position, stopped=stopped)
        ctx.checkpoints.update_checkpoint(name, last[1], last[2], last[0], handled)
    return BatchResult(
        count,
        handled,
        dead,
        position,
        last[0],
        parked=sequencing.parked,
        paused=pausing,
        stopped=stopped,
    )


def _save_streak(
    name: str,
    ctx: BatchContext,
    previous: int,
    sequencing: Sequencing,
    last_error: str,
    pausing: bool,
    pause_after: int,
) -> None:
    """Keep the consecutive failures (and the pause, the last error) on the checkpoint row."""
    if sequencing.failure_streak == previous and not last_error and not pausing:
        return
    changes: dict[str, Any] = {"failure_streak": sequencing.failure_streak}
    if last_error:
        changes["last_error"] = last_error
    if pausing:
        changes["paused_at"] = timezone.now()
        _log_once_committed(
            ctx.using,
            "Projection %s paused after %d consecutive failed events (last error: %s); "
            "fix the cause, then run resume_projection %s",
            name,
            sequencing.failure_streak,
            last_error,
            name,
            extra={"projection": name, "failure_streak": sequencing.failure_streak},
        )
    Checkpoint.objects.using(ctx.using).for_projection(name).update(**changes)


def _apply_batch_projection(
    projection: BatchProjection,
    wanted: list[StoredEvent],
    ctx: BatchContext,
    sequencing: Sequencing,
    policy: RetryPolicy,
) -> NarrowingOutcome:
    """The page of a ``BatchProjection``, with the batch's sequencing as its hooks."""
    if not wanted:
        return NarrowingOutcome()
    name = projection.name

    def record(stored: StoredEvent, failure: HandlingFailure) -> None:
        key = sequencing.key_of(stored)
        _record_dead_letter(ctx, name, stored, failure.error, failure.attempts, key)

    hooks = BatchHooks(
        admit=sequencing.admit,
        dead_lettered=sequencing.dead_lettered,
        applied=lambda events: sequencing.handled(events[-1]),
    )
    return apply_batch_projection(
        projection, wanted, ctx.using, record, hooks, policy, stop_event=ctx.stop_event
    )


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
    projection: Projection, events: list[StoredEvent], ctx: BatchContext, sequencing: Sequencing
) -> list[StoredEvent] | None:
    """Apply ``events`` in a single savepoint; ``None`` (nothing kept) if any handler raised.

    The fast path of projections with ``optimistic_batches``: events of blocked sequences
    are parked in the same savepoint, and the events handled are returned. On failure, or
    when a stop is requested meanwhile, the caller replays the batch with one savepoint
    per event, retries and dead letters.
    """
    parked = sequencing.parked
    stop = ctx.stop_event
    try:
        with transaction.atomic(using=ctx.using):
            admitted = sequencing.admit(events)
            for stored in admitted:
                if stop is not None and stop.is_set():
                    raise _StopRequested
                event = stored.event
                with event_context(
                    causation_id=event.event_id, correlation_id=event.correlation_id
                ):
                    projection.process(event)
    except _StopRequested:
        sequencing.parked = parked
        return None
    except Exception as exc:
        sequencing.parked = parked
        logger.debug(
            "Projection %s: a handler failed in the batch savepoint (%s); "
            "replaying the batch one event at a time",
            projection.name,
            exc,
            extra={"projection": projection.name},
        )
        return None
    return admitted


class _StopRequested(Exception):
    """Raised inside the optimistic savepoint to roll it back when a stop is requested."""


def _log_once_committed(using: str, message: str, *args: Any, extra: dict[str, Any]) -> None:
    """Log ``message`` at ERROR once the batch's transaction has committed.

    A dead letter exists only then: when the batch rolls back instead (the database went
    away, the commit failed), nothing was dead-lettered and the runner retries the batch.
    """
    transaction.on_commit(lambda: logger.error(message, *args, extra=extra), using=using)


def _record_dead_letter(
    ctx: BatchContext,
    name: str,
    stored: StoredEvent,
    error: BaseException,
    attempts: int,
    sequence_key: str = "",
) -> None:
    ctx.dead_letters.add_failed_event(
        event_id=stored.event_id,
        projection_name=name,
        event_type=stored.event_type,
        event_data=stored.event.to_dict(),
        error=error,
        retry_count=attempts,
        global_position=stored.global_position,
        sequence_key=sequence_key,
    )
    _log_once_committed(
        ctx.using,
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


def _handle_unreadable(
    projection: Projection, ctx: BatchContext, after: int, error: EventSourceError
) -> tuple[tuple[int, UUID, str], int]:
    """Deal with the first stored event after ``after``, which could not be deserialized.

    A row the store cannot rebuild (a payload that no longer validates, one that is not
    a JSON object, an unreadable id or timestamp) is dead-lettered with its raw values
    and skipped, so one bad event never stalls the projection. An unregistered event type is skipped
    when the projection subscribes to named classes (it cannot be one of them);
    otherwise it is a configuration error (the module defining the event was not
    imported) and is raised. Returns ``((position, event_id, event_type), dead_lettered)``.
    """
    if not isinstance(ctx.store, DjangoEventStore):
        raise error  # only the Django store can hand over an event it cannot deserialize
    # A unit of a segmented projection looks only at its buckets (projections/segments.py).
    row = ctx.store.first_raw_event_after(after, getattr(projection, "segment_buckets", None))
    if row is None:
        raise error
    position = int(row["position"])
    event_id = row["event_id"]
    if not isinstance(event_id, UUID):
        # Dead letters and checkpoints need a UUID. One with the position as its number
        # is stable and never collides with a generated id (it has no version bits).
        event_id = UUID(int=position)
    found = (position, event_id, str(row["event_type"]))
    if isinstance(error, EventTypeNotFoundError):
        wanted = {cls.event_type_name() for cls in projection.subscribed_to()}
        if wanted and found[2] not in wanted:
            return found, 0
        raise error
    raw = {key: str(value) if key.endswith("_id") else value for key, value in row.items()}
    ctx.dead_letters.add_failed_event(
        event_id=event_id,
        projection_name=projection.name,
        event_type=row["event_type"],
        event_data=raw,
        error=error,
        retry_count=0,
        global_position=row["position"],
    )
    _log_once_committed(
        ctx.using,
        "Projection %s dead-lettered unreadable event %s at position %d: %s",
        projection.name,
        row["event_id"],
        row["position"],
        error,
        extra={"projection": projection.name, "position": row["position"]},
    )
    return found, 1


__all__ = ["BatchContext", "BatchHooks", "BatchResult", "EventSavepoint", "run_batch"]
