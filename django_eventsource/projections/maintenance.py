"""What operators do to projections: reset (and rebuild) one, retry dead letters.

The commands, the admin actions and the Celery tasks call these functions. A reset
holds the projection as a runner would, so it refuses one that another process is
running.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from django.db import transaction

from ..events.registry import default_registry
from .base import RetryPolicy, apply_with_retries
from .django_checkpoints import DjangoCheckpointRepository
from .django_dead_letters import DjangoDLQRepository
from .runner import Progress, RunSummary, batch_context, checkpoint_db, drain, load_projections
from .segments import base_projection_name, clear_unit_checkpoints, holding, units_of

logger = logging.getLogger("django_eventsource")


@dataclass
class RetryReport:
    """Outcome of ``retry_dead_letters``; ``errors`` maps dead-letter ids to the new error."""

    resolved: int = 0
    failed: int = 0
    errors: dict[int, str] = field(default_factory=dict)


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
    # A segmented projection is reset once and rebuilt unit by unit (segments.py).
    units = units_of(projection)
    summary = RunSummary(processed={unit.name: 0 for unit in units})
    names = list(dict.fromkeys([projection.name, *(unit.name for unit in units)]))
    with holding(names, using) as guard:
        with transaction.atomic(using=using):
            projection.reset()
            # The runner's checkpoint is this row. A CheckpointTrackingProjection's reset()
            # clears its own repository, usually an in-memory one; when that is this very
            # row the rewind below is a no-op UPDATE, and skipping it would lose the reset
            # for overrides that do not call super().reset().
            for checkpoint_name in names:
                DjangoCheckpointRepository(using).reset_checkpoint(checkpoint_name)
            clear_unit_checkpoints(projection.name, using, keep=names)
        logger.info("Projection %s reset", projection.name, extra={"projection": projection.name})
        if rebuild:
            ctx = batch_context(using)
            target = ctx.store.safe_high_water_mark()
            for unit in units:
                drain(unit, ctx, summary, threading.Event(), progress, guard, target=target)
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
    elif projection is not None:
        # A segmented projection's dead letters are recorded under its units' names.
        (target_projection,) = load_projections([projection])
        entries = [
            entry
            for name in dict.fromkeys([projection, *(u.name for u in units_of(target_projection))])
            for entry in dead_letters.get_open_events(name, limit=20_000)
        ]
    else:
        entries = dead_letters.get_open_events(None, limit=20_000)
    report = RetryReport()
    for missing in set(ids or []) - {e.id for e in entries}:
        report.failed += 1
        report.errors[missing] = "No such dead letter"
    for entry in entries:
        if entry.status == "resolved" or (
            projection and base_projection_name(entry.projection_name) != projection
        ):
            continue
        # A unit's dead letter ("Name#2/4") belongs to its projection.
        target = configured.get(base_projection_name(entry.projection_name))
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


__all__ = ["RetryReport", "reset_projection", "retry_dead_letters"]
