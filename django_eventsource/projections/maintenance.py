"""What operators do to projections: reset (and rebuild) one, retry dead letters.

The commands, the admin actions and the Celery tasks call these functions. A reset
holds the projection as a runner would, so it refuses one that another process is
running.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import transaction

from ..conf import conf
from ..events.registry import default_registry
from ..models import EventRecord
from .base import RetryPolicy, apply_with_retries
from .batch import BatchResult, _locked_position
from .django_checkpoints import DjangoCheckpointRepository
from .django_dead_letters import DjangoDLQRepository
from .exclusivity import exclusive
from .runner import Progress, RunSummary, batch_context, checkpoint_db, drain, load_projections

logger = logging.getLogger("django_eventsource")


@dataclass
class RetryReport:
    """Outcome of ``retry_dead_letters``; ``errors`` maps dead-letter ids to the new error."""

    resolved: int = 0
    failed: int = 0
    errors: dict[int, str] = field(default_factory=dict)


#: Called after each batch of a rebuild with the events replayed so far and the events
#: there were to replay when it started (events appended since then come on top).
RebuildProgress = Callable[[int, int], None]


def reset_projection(
    name: str,
    rebuild: bool = False,
    progress: Progress | None = None,
    *,
    batch_size: int | None = None,
    on_progress: RebuildProgress | None = None,
) -> RunSummary:
    """Empty a projection's read model (``reset()``) and its checkpoint.

    With ``rebuild`` it then replays every event from position 0, in batches of
    ``batch_size`` events (default ``EVENTSOURCE_REBUILD_BATCH_SIZE``), calling
    ``progress`` with a percentage and ``on_progress`` with event counts after each batch.
    Raises ``ProjectionBusyError`` when a runner is working on the projection.
    """
    (projection,) = load_projections([name])
    using = checkpoint_db()
    summary = RunSummary(processed={projection.name: 0})
    with exclusive(projection.name, using) as guard:
        with transaction.atomic(using=using):
            # Locked first, as a batch does: an inline projection's save waits for the
            # reset to commit, then finds the checkpoint rewound and leaves its events to
            # the rebuild, instead of writing rows this reset did not see.
            _locked_position(projection.name, using)
            projection.reset()
            # The runner's checkpoint is this row. A CheckpointTrackingProjection's reset()
            # clears its own repository, usually an in-memory one; when that is this very
            # row the rewind below is a no-op UPDATE, and skipping it would lose the reset
            # for overrides that do not call super().reset().
            DjangoCheckpointRepository(using).reset_checkpoint(projection.name)
        logger.info("Projection %s reset", projection.name, extra={"projection": projection.name})
        if rebuild:
            ctx = batch_context(using, batch_size=batch_size or conf.REBUILD_BATCH_SIZE)
            target = ctx.store.safe_high_water_mark()
            total = _events_up_to(target) if on_progress is not None else 0
            replayed = 0

            def report(result: BatchResult) -> None:
                nonlocal replayed
                replayed += result.count
                if on_progress is not None:
                    on_progress(replayed, total)

            drain(
                projection,
                ctx,
                summary,
                threading.Event(),
                progress,
                guard,
                target=target,
                on_batch=report,
            )
    return summary


def _events_up_to(position: int) -> int:
    """How many stored events there are up to ``position`` (one count, for the progress)."""
    return EventRecord.objects.filter(position__lte=position).count()


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
        entries = dead_letters.get_open_events(projection, limit=20_000)
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


__all__ = ["RebuildProgress", "RetryReport", "reset_projection", "retry_dead_letters"]
