"""The projection runner: the one loop behind ``run_projections`` and the Celery task.

For each projection it reads events after the checkpoint, in batches, never past the
store's safe high-water mark; each batch is one transaction (:mod:`.batch`). At most
one runner works on a projection at a time (:mod:`.exclusivity`). Resetting a projection
and retrying its dead letters are in :mod:`.maintenance`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connections,
    router,
)
from django.utils.module_loading import import_string

from .._runtime import full_jitter_delay
from ..conf import conf
from ..exceptions import UnknownProjectionError
from ..models import Checkpoint
from ..stores.django import DjangoEventStore
from ..stores.interface import EventStore
from .base import Projection
from .batch import BatchContext, BatchResult, run_batch
from .django_checkpoints import DjangoCheckpointRepository
from .django_dead_letters import DjangoDLQRepository
from .exclusivity import Exclusivity, exclusivity_for
from .segments import UnitClaims, check_segment_counts, load_units

logger = logging.getLogger("django_eventsource")

Progress = Callable[[str], None]


@dataclass
class RunSummary:
    """What a run did: events read per projection, how many were dead-lettered or parked,
    and the projections found paused (or that paused during the run)."""

    processed: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0
    batches: int = 0
    #: Projections passed over because another runner held them.
    skipped: list[str] = field(default_factory=list)
    parked: int = 0
    paused: list[str] = field(default_factory=list)

    @property
    def total_processed(self) -> int:
        return sum(self.processed.values())


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
    return DjangoEventStore()


def checkpoint_db() -> str:
    """The database alias of checkpoints (and of the batch transactions)."""
    return router.db_for_write(Checkpoint)


def batch_context(
    using: str, store: EventStore | None = None, batch_size: int | None = None
) -> BatchContext:
    """What the batches of one run share, on the checkpoints' database ``using``."""
    return BatchContext(
        store=store or default_event_store(),
        using=using,
        batch_size=batch_size or conf.PROJECTION_BATCH_SIZE,
        checkpoints=DjangoCheckpointRepository(using),
        dead_letters=DjangoDLQRepository(using),
    )


# -- the loop ------------------------------------------------------------------------------


def drain(
    projection: Projection,
    ctx: BatchContext,
    summary: RunSummary,
    stop_event: threading.Event,
    progress: Progress | None,
    guard: Exclusivity,
    target: int | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
) -> None:
    """Run batches of one projection until it is caught up or a stop is requested.

    The lock or lease is confirmed (a lease renewed) before every batch; if it was lost
    to another runner, this one stops working on the projection. A paused projection is
    left alone (and listed in ``summary.paused``). ``on_batch`` is called with each
    batch's result.
    """
    name = projection.name
    ctx.stop_event = stop_event
    while not stop_event.is_set() and guard.acquire(name):
        result = run_batch(projection, ctx)
        if result.paused and name not in summary.paused:
            summary.paused.append(name)
        if result.count == 0:
            return
        summary.batches += 1
        summary.processed[name] = summary.processed.get(name, 0) + result.count
        summary.dead_lettered += result.dead_lettered
        summary.parked += result.parked
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
                "parked": result.parked,
            },
        )
        if on_batch is not None:
            on_batch(result)
        if progress is not None:
            if target:
                percent = min(100.0, 100.0 * result.to_position / target)
                progress(f"{name}: position {result.to_position}/{target} ({percent:.0f}%)")
            else:
                progress(f"{name}: {result.count} events, position {result.to_position}")
        if result.paused or result.stopped:
            return


def run_projections(
    names: list[str] | None = None,
    *,
    once: bool = False,
    batch_size: int | None = None,
    poll_interval: float | None = None,
    stop_event: threading.Event | None = None,
    store: EventStore | None = None,
    progress: Progress | None = None,
    max_units: int | None = None,
) -> RunSummary:
    """Catch the projections up, then (unless ``once``) keep following new events.

    ``names`` selects projections of ``EVENTSOURCE_PROJECTIONS`` (all by default).
    With ``once`` every projection is brought up to the current safe high-water mark
    and the function returns; otherwise it loops until ``stop_event`` is set, waking
    every ``poll_interval`` seconds (and, on PostgreSQL, as soon as an event is
    appended). A projection run by another process is skipped until it is free, and a
    paused one until it is resumed. Setting ``stop_event`` (SIGTERM/SIGINT in the
    command) ends the batch in progress early, committing up to the last event fully
    dealt with. Lost database connections are logged and retried with backoff.

    A segmented projection (``segments = N``) is run as its N units: at most
    ``max_units`` of them with work per pass, each given back once caught up.
    """
    projections = load_units(names)  # segmented projections become their units
    stop_event = stop_event or threading.Event()
    interval = conf.POLL_INTERVAL if poll_interval is None else float(poll_interval)
    using = checkpoint_db()
    check_segment_counts(projections, using)
    claims = UnitClaims(max_units)
    ctx = batch_context(using, store, batch_size)
    summary = RunSummary(processed={p.name: 0 for p in projections})
    guard = exclusivity_for(using, listen=not once)
    failures = 0
    try:
        while not stop_event.is_set():
            try:
                for projection in claims.this_pass(projections):
                    if stop_event.is_set():
                        break
                    if not guard.acquire(projection.name):
                        logger.debug(
                            "Projection %s is run by another process; skipping",
                            projection.name,
                            extra={"projection": projection.name},
                        )
                        if projection.name not in summary.skipped:
                            summary.skipped.append(projection.name)
                        continue
                    before = summary.processed.get(projection.name, 0)
                    drain(projection, ctx, summary, stop_event, progress, guard)
                    # Units are given back when caught up, so other runners can take them.
                    after = summary.processed.get(projection.name, 0)
                    claims.done(projection, projections, guard, after - before, ctx)
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
                # Jittered, so runners that lost the same database do not all come back
                # at once; the ceiling doubles from twice the poll interval up to 30 s.
                delay = full_jitter_delay(failures, base=2 * max(interval, 0.1), cap=30.0)
                # Said plainly: a batch cut short rolled back whole, its dead letters too,
                # and is done again from its checkpoint.
                logger.warning(
                    "Database unavailable (%s); the batch in progress, if any, was rolled "
                    "back and will be retried in %.1fs",
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


def _drop_connections(guard: Exclusivity, using: str) -> None:
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


__all__ = ["RunSummary", "load_projections", "run_projections"]
