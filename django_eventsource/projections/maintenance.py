"""What operators do to projections: reset (and rebuild) one, resume a paused one, retry
or skip dead letters.

The commands, the admin actions and the Celery tasks call these functions. A reset
holds the projection as a runner would, so it refuses one that another process is
running.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

from ..conf import conf
from ..events.registry import default_registry
from ..models import Checkpoint, DeadLetter, EventRecord
from .base import Projection, RetryPolicy, apply_with_retries
from .batch import BatchResult
from .dead_letters import describe_error
from .django_checkpoints import DjangoCheckpointRepository
from .runner import Progress, RunSummary, batch_context, checkpoint_db, drain, load_projections
from .segments import base_projection_name, clear_unit_checkpoints, holding, units_of

logger = logging.getLogger("django_eventsource")


@dataclass
class RetryReport:
    """Outcome of ``retry_dead_letters``.

    ``resolved`` counts the events handled (heads and the events parked behind them);
    ``failed`` the sequences whose head still fails, plus ids that do not exist or
    belong to a projection no longer configured; ``errors`` maps those dead-letter ids
    to the error. ``waiting`` counts the parked events still waiting behind a failing
    head, and ``missing`` lists requested ids that do not exist.
    """

    resolved: int = 0
    failed: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    waiting: int = 0
    missing: list[int] = field(default_factory=list)

    @property
    def all_resolved(self) -> bool:
        """Nothing still failing and no unknown id."""
        return not self.failed


RetryProgress = Callable[[int, int], None]


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

    Its open dead letters (heads and parked events) are resolved, since the rebuild
    handles their events again, and a pause is lifted. With ``rebuild`` it then replays
    every event from position 0, in batches of ``batch_size`` events (default
    ``EVENTSOURCE_REBUILD_BATCH_SIZE``), calling ``progress`` with a percentage and
    ``on_progress`` with event counts after each batch. Raises ``ProjectionBusyError``
    when a runner is working on the projection.
    """
    (projection,) = load_projections([name])
    using = checkpoint_db()
    # A segmented projection is reset once and rebuilt unit by unit (segments.py).
    units = units_of(projection)
    summary = RunSummary(processed={unit.name: 0 for unit in units})
    names = list(dict.fromkeys([projection.name, *(unit.name for unit in units)]))
    with holding(names, using) as guard:
        with transaction.atomic(using=using):
            # Locked first, as a batch does: an inline projection's save waits for the
            # reset to commit, then finds the checkpoint rewound and leaves its events to
            # the rebuild, instead of writing rows this reset did not see.
            _lock_projection(projection.name, using)
            projection.reset()
            # The runner's checkpoint is this row. A CheckpointTrackingProjection's reset()
            # clears its own repository, usually an in-memory one; when that is this very
            # row the rewind below is a no-op UPDATE, and skipping it would lose the reset
            # for overrides that do not call super().reset().
            for checkpoint_name in names:
                DjangoCheckpointRepository(using).reset_checkpoint(checkpoint_name)
            clear_unit_checkpoints(projection.name, using, keep=names)
            # A segmented projection's dead letters are its units' (segments.py).
            DeadLetter.objects.using(using).open().filter(projection_name__in=names).update(
                status=DeadLetter.Status.RESOLVED,
                parked=False,
                resolved_at=timezone.now(),
                resolved_by="reset_projection",
            )
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

            for unit in units:
                drain(
                    unit,
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


def resume_projection(name: str) -> bool:
    """Let the runner take a paused projection again, from its checkpoint.

    Clears the pause, the consecutive-failure count and the last error. Returns whether
    the projection was paused. Raises ``UnknownProjectionError`` for a name that is not
    configured.
    """
    (projection,) = load_projections([name])
    using = checkpoint_db()
    # A segmented projection pauses unit by unit (segments.py): resume them all.
    names = [projection.name, *(unit.name for unit in units_of(projection))]
    resumed = (
        Checkpoint.objects.using(using)
        .filter(projection_name__in=names)
        .filter(paused_at__isnull=False)
        .update(paused_at=None, failure_streak=0, last_error="")
    )
    if resumed:
        logger.info("Projection %s resumed", projection.name, extra={"projection": projection.name})
    return bool(resumed)


def _lock_projection(name: str, using: str) -> None:
    """Take the projection's checkpoint row for the transaction, as a runner's batch does.

    A write (not a ``SELECT … FOR UPDATE``) so that SQLite takes its write lock too: no
    batch parks events of a sequence while it is being retried or skipped.
    """
    rows = Checkpoint.objects.using(using).for_projection(name)
    if not rows.update(position=F("position")):
        Checkpoint.objects.using(using).ensure(name)
        rows.update(position=F("position"))


def _sequence(using: str, row: DeadLetter) -> models.QuerySet[DeadLetter]:
    """The open entries of ``row``'s sequence, head first (just ``row`` outside a sequence)."""
    rows = DeadLetter.objects.using(using)
    if not row.sequence_key:
        return rows.open().filter(pk=row.pk)
    return rows.in_sequence(row.projection_name, row.sequence_key)


def retry_dead_letters(
    projection: str | None = None,
    ids: list[int] | None = None,
    resolved_by: str = "retry_dead_letters",
    progress: RetryProgress | None = None,
) -> RetryReport:
    """Handle dead-lettered events again, each sequence from its head and in order.

    Selects the open dead letters of ``projection`` (all projections by default), or the
    entries ``ids``; an id of a parked event selects its sequence. For each sequence the
    head is run through the projection's handler (one attempt, with the event's
    causation and correlation) and, on success, marked resolved; then the next event of
    the sequence, and so on. Each event is one transaction on the checkpoints' database,
    holding the projection's checkpoint row, so its read-model writes and its resolution
    commit together and the runner parks nothing meanwhile. The first event that fails
    again stays (or becomes) the head, with the new error and one more attempt counted,
    and the events behind it keep waiting. Once a sequence is empty, later events of its
    key are handled by the runner again. ``progress(done, total)`` is called after each
    event.
    """
    using = checkpoint_db()
    configured = {p.name: p for p in load_projections()}
    if projection is not None and projection not in configured:
        load_projections([projection])  # raises UnknownProjectionError with the list
    report = RetryReport()
    rows = DeadLetter.objects.using(using)
    if ids:
        selected = list(rows.filter(pk__in=ids).order_by("global_position", "id"))
        found = {row.pk for row in selected}
        report.missing = sorted(set(ids) - found)
        for missing in report.missing:
            report.failed += 1
            report.errors[missing] = "No such dead letter"
        selected = [row for row in selected if row.status != DeadLetter.Status.RESOLVED]
    else:
        selected = list(rows.heads().order_by("global_position", "id"))
    if projection is not None:
        # A unit's dead letters ("Name#2/4") belong to its projection (segments.py).
        selected = [
            row for row in selected if base_projection_name(row.projection_name) == projection
        ]
    sequences: dict[tuple[str, str | int], DeadLetter] = {}
    for row in selected:
        sequences.setdefault((row.projection_name, row.sequence_key or row.pk), row)
    total = sum(_sequence(using, row).count() for row in sequences.values())
    done = 0
    for row in sequences.values():
        target = configured.get(base_projection_name(row.projection_name))
        if target is None:
            report.failed += 1
            report.errors[row.pk] = f"Projection {row.projection_name!r} is not configured"
            continue
        while True:
            outcome = _retry_head(target, row, using, resolved_by)
            if outcome is None:
                break  # the sequence is empty
            head_id, error = outcome
            done += 1
            if progress is not None:
                progress(done, total)
            if error is not None:
                report.failed += 1
                report.errors[head_id] = error
                report.waiting += _sequence(using, row).filter(parked=True).count()
                break
            report.resolved += 1
    return report


def _retry_head(
    projection: Projection, row: DeadLetter, using: str, resolved_by: str
) -> tuple[int, str | None] | None:
    """Handle the head of ``row``'s sequence in one transaction: ``(its id, error or None)``,
    or ``None`` when the sequence has no open entry left."""
    with transaction.atomic(using=using):
        _lock_projection(row.projection_name, using)
        head = _sequence(using, row).select_for_update().first()
        if head is None:
            return None
        error: BaseException | None
        try:
            event = default_registry.deserialize(head.event_data)
        except Exception as exc:
            error = exc
        else:
            failure = apply_with_retries(
                projection,
                event,
                RetryPolicy(max_attempts=1),
                attempt_scope=lambda: transaction.atomic(using=using),
            )
            error = failure.error if failure is not None else None
        entry = DeadLetter.objects.using(using).filter(pk=head.pk)
        if error is None:
            entry.update(
                status=DeadLetter.Status.RESOLVED,
                parked=False,
                resolved_at=timezone.now(),
                resolved_by=resolved_by,
            )
            logger.info(
                "Dead letter %d of %s resolved",
                head.pk,
                head.projection_name,
                extra={"projection": head.projection_name, "dead_letter": head.pk},
            )
            return head.pk, None
        message, stacktrace = describe_error(error)
        entry.update(
            status=DeadLetter.Status.FAILED,
            parked=False,
            error_message=message,
            error_stacktrace=stacktrace,
            retry_count=head.retry_count + 1,
            last_failed_at=timezone.now(),
        )
        return head.pk, message


def skip_dead_letter(dlq_id: int, resolved_by: str, *, skipped: bool = True) -> int | None:
    """Resolve the head of a sequence without handling it; the next parked event becomes
    the head, still not handled (retry it to go on). Returns that next entry's id.

    ``skipped`` records the entry as discarded (``"NAME (skipped)"`` in ``resolved_by``);
    without it, as resolved by hand. Raises ``LookupError`` for an unknown or resolved
    entry and ``ValueError`` for a parked one (deal with its head first).
    """
    using = checkpoint_db()
    found = DeadLetter.objects.using(using).filter(pk=dlq_id).first()
    if found is None or found.status == DeadLetter.Status.RESOLVED:
        raise LookupError(f"No open dead letter #{dlq_id}")
    with transaction.atomic(using=using):
        _lock_projection(found.projection_name, using)
        sequence = list(_sequence(using, found).select_for_update()[:2])
        if not sequence or sequence[0].pk != dlq_id:
            raise ValueError(
                f"Dead letter #{dlq_id} waits behind the head of its sequence "
                f"(#{sequence[0].pk if sequence else '?'}); retry or skip that one first"
            )
        DeadLetter.objects.using(using).filter(pk=dlq_id).update(
            status=DeadLetter.Status.RESOLVED,
            parked=False,
            resolved_at=timezone.now(),
            resolved_by=f"{resolved_by} (skipped)" if skipped else resolved_by,
        )
        if len(sequence) < 2:
            return None
        following = sequence[1].pk
        DeadLetter.objects.using(using).filter(pk=following).update(
            parked=False,
            error_message=f"Not handled yet: dead letter #{dlq_id} before it was "
            f"{'skipped' if skipped else 'resolved by hand'}; retry to handle it.",
        )
    logger.info(
        "Dead letter %d of %s %s by %s",
        dlq_id,
        found.projection_name,
        "skipped" if skipped else "resolved",
        resolved_by,
        extra={"projection": found.projection_name, "dead_letter": dlq_id},
    )
    return following


__all__ = [
    "RebuildProgress",
    "RetryReport",
    "reset_projection",
    "resume_projection",
    "retry_dead_letters",
    "skip_dead_letter",
]
