"""Segmented projections: one projection run as N units by several runners at once.

A projection declaring ``segments = N`` is split by the events' stored ``bucket`` (a
stable hash of the aggregate id, 0 to 255): unit ``s`` owns the buckets
``[s * 256 // N, (s + 1) * 256 // N)``. Each unit has its own checkpoint, lock or lease
and dead letters, all under the unit's name ``"<name>#<s>/<N>"``, and reads only its
buckets below the same global safe mark, so every event is handled by exactly one unit
and the events of one aggregate stay in order inside it.

Runners take free units up to ``max_units`` per pass and give each back once it is caught
up, so another runner may take it on its next pass. Changing ``N`` moves the checkpoints
with ``resize_projection`` (:func:`resize_projection`); until then the runner refuses
the projection (``SegmentCountMismatchError``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from django.db import router, transaction
from django.utils import timezone

from ..events.base import DomainEvent
from ..exceptions import (
    ProjectionBusyError,
    SegmentCountMismatchError,
)
from ..models import Checkpoint, EventRecord
from ..partitioning import EVENT_BUCKETS
from ..stores.django import DjangoEventStore
from .base import Projection, RetryPolicy
from .batch import BatchContext
from .exclusivity import Exclusivity, exclusivity_for

logger = logging.getLogger("django_eventsource")

_UNIT_NAME = re.compile(r"^(?P<base>.+)#(?P<index>\d+)/(?P<count>\d+)$")


def segment_count(projection: Projection) -> int:
    """The projection's ``segments``, checked: an integer from 1 to 256."""
    count = getattr(projection, "segments", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= EVENT_BUCKETS:
        raise TypeError(
            f"{type(projection).__name__}.segments must be an integer from 1 to "
            f"{EVENT_BUCKETS}, got {count!r}"
        )
    return count


def unit_name(name: str, index: int, count: int) -> str:
    """The checkpoint, lock and dead-letter name of unit ``index`` of ``count``."""
    return f"{name}#{index}/{count}"


def parse_unit_name(name: str) -> tuple[str, int, int] | None:
    """``(projection name, index, count)`` of a unit name; ``None`` for any other name."""
    match = _UNIT_NAME.match(name)
    if match is None:
        return None
    return match["base"], int(match["index"]), int(match["count"])


def base_projection_name(name: str) -> str:
    """The projection a checkpoint or dead-letter name belongs to (itself unless a unit's)."""
    parsed = parse_unit_name(name)
    return name if parsed is None else parsed[0]


def bucket_range(index: int, count: int) -> tuple[int, int]:
    """The buckets ``[low, high)`` of unit ``index`` of ``count``."""
    return index * EVENT_BUCKETS // count, (index + 1) * EVENT_BUCKETS // count


class SegmentUnit(Projection):
    """One unit of a segmented projection, as the runner sees it.

    Handling goes to the wrapped ``projection``; ``name`` is the unit's and
    ``segment_buckets`` is the range the batch reads. Other attributes are the wrapped projection's.
    """

    def __init__(self, projection: Projection, index: int, count: int) -> None:
        if not 0 <= index < count <= EVENT_BUCKETS:
            raise ValueError(f"unit {index} of {count} does not exist")
        self.projection = projection
        self.index = index
        self.count = count
        #: The buckets ``[low, high)`` the batch reads (``run_batch`` looks for this name).
        self.segment_buckets = bucket_range(index, count)
        self._name = unit_name(projection.name, index, count)

    @property
    def name(self) -> str:
        return self._name

    @property
    def optimistic_batches(self) -> bool:  # type: ignore[override]
        return self.projection.optimistic_batches

    def handle(self, event: DomainEvent) -> Any:
        return self.projection.handle(event)

    def process(self, event: DomainEvent) -> None:
        self.projection.process(event)

    def reset(self) -> None:
        """Units share the read model: reset the projection (``reset_projection``) instead."""
        raise TypeError(f"Reset the projection {self.projection.name!r}, not one of its units")

    def subscribed_to(self) -> list[type[DomainEvent]]:
        return self.projection.subscribed_to()

    def is_interested_in(self, event: DomainEvent) -> bool:
        return self.projection.is_interested_in(event)

    def interest_filter(self) -> Callable[[DomainEvent], bool]:
        return self.projection.interest_filter()

    def get_retry_policy(self) -> RetryPolicy:
        return self.projection.get_retry_policy()

    def __getattr__(self, attribute: str) -> Any:
        # Only called for what the unit does not define (``sequence_key``, …).
        if attribute == "projection":
            raise AttributeError(attribute)
        return getattr(self.projection, attribute)


def units_of(projection: Projection) -> list[Projection]:
    """The projection itself when ``segments`` is 1, else its units in order."""
    count = segment_count(projection)
    if count == 1:
        return [projection]
    return [SegmentUnit(projection, index, count) for index in range(count)]


def load_units(names: list[str] | None = None) -> list[Projection]:
    """``load_projections(names)`` with each segmented projection replaced by its units.

    A name may also be a unit's (``"Name#2/4"``, what the Celery dispatcher queues):
    only that unit is run. A unit name whose count is not the projection's ``segments``
    raises ``SegmentCountMismatchError``.
    """
    from .runner import load_projections

    if names is None:
        return [unit for projection in load_projections() for unit in units_of(projection)]
    selected: list[Projection] = []
    for name in names:
        parsed = parse_unit_name(name)
        (projection,) = load_projections([name if parsed is None else parsed[0]])
        units = units_of(projection)
        if parsed is not None:
            if parsed[2] != len(units) or len(units) == 1:
                raise SegmentCountMismatchError(
                    f"{name!r} is not a unit of {projection.name!r}, which has "
                    f"segments = {len(units)}"
                )
            units = [units[parsed[1]]]
        selected.extend(unit for unit in units if unit not in selected)
    return selected


def unit_names(projection: Projection) -> list[str]:
    return [unit.name for unit in units_of(projection)]


def stored_segment_counts(name: str, using: str) -> set[int]:
    """The segment counts the checkpoints of projection ``name`` were written for.

    Only rows that have moved count (a lease or a lock creates rows at position 0): unit
    rows give their count, the projection's own row counts as 1.
    """
    rows = Checkpoint.objects.using(using).filter(
        projection_name__startswith=f"{name}#", position__gt=0
    )
    counts = {
        parsed[2]
        for row in rows.values_list("projection_name", flat=True)
        if (parsed := parse_unit_name(row)) is not None and parsed[0] == name
    }
    if Checkpoint.objects.using(using).filter(projection_name=name, position__gt=0).exists():
        counts.add(1)
    return counts


def check_segment_counts(projections: Iterable[Projection], using: str) -> None:
    """Refuse projections whose checkpoints were written for another ``segments``."""
    seen: set[str] = set()
    for projection in projections:
        base = projection.projection if isinstance(projection, SegmentUnit) else projection
        if base.name in seen:
            continue
        seen.add(base.name)
        declared = segment_count(base)
        stored = stored_segment_counts(base.name, using) - {declared}
        if stored:
            raise SegmentCountMismatchError(
                f"Projection {base.name!r} declares segments = {declared} but its checkpoints "
                f"were written for segments = {', '.join(map(str, sorted(stored)))}; "
                f"run `manage.py resize_projection {base.name}` to move them (stop its "
                "runners first)"
            )


@dataclass
class UnitClaims:
    """Which units a runner works on in one pass, and giving them back when idle.

    Whole projections are not affected. Each pass starts after the last unit worked on,
    so a runner limited to ``max_units`` still serves every unit in turn.
    """

    max_units: int | None = None
    _worked: int = 0
    _start: int = 0

    def this_pass(self, projections: list[Projection]) -> Iterator[Projection]:
        self._worked = 0
        count, start = len(projections), self._start
        for offset in range(count):
            index = (start + offset) % count
            projection = projections[index]
            if isinstance(projection, SegmentUnit) and not self.may_claim():
                continue
            yield projection

    def may_claim(self) -> bool:
        return self.max_units is None or self._worked < self.max_units

    def done(
        self,
        projection: Projection,
        projections: list[Projection],
        guard: Exclusivity,
        processed: int,
        ctx: BatchContext,
    ) -> None:
        """After draining ``projection``: give a unit back (no stickiness) and count it."""
        if not isinstance(projection, SegmentUnit):
            return
        if projection.name in guard.held:
            advance_idle_unit(projection, ctx)
        guard.release(projection.name)
        if processed:
            self._worked += 1
            self._start = (projections.index(projection) + 1) % len(projections)


def advance_idle_unit(unit: SegmentUnit, ctx: BatchContext) -> int:
    """Move a caught-up unit's checkpoint to the safe mark when none of its events lie before it.

    A unit's checkpoint is otherwise the position of its own last event, which trails the
    store's head while its buckets are quiet: the lag reports would show it behind. The
    checkpoint row is locked meanwhile, as for a batch. Returns the new position.
    """
    store = ctx.store
    if not isinstance(store, DjangoEventStore):
        return -1
    low, high = unit.segment_buckets
    with transaction.atomic(using=ctx.using):
        rows = Checkpoint.objects.using(ctx.using).select_for_update().for_projection(unit.name)
        position = rows.values_list("position", flat=True).first()
        mark = store.safe_high_water_mark()
        if position is None or mark <= position:
            return -1 if position is None else int(position)
        pending = (
            EventRecord.objects.using(store.db_for_read())
            .filter(position__gt=position, position__lte=mark, bucket__gte=low, bucket__lt=high)
            .exists()
        )
        if pending:
            return int(position)
        rows.update(position=mark, updated_at=timezone.now())
    return mark


@contextmanager
def holding(names: list[str], using: str) -> Iterator[Exclusivity]:
    """Hold every name in ``names`` for the block; ``ProjectionBusyError`` if one is taken."""
    guard = exclusivity_for(using, listen=False)
    try:
        busy = [name for name in names if not guard.acquire(name)]
        if busy:
            raise ProjectionBusyError(
                f"Projection {busy[0]!r} is being run by another process; stop it first"
            )
        yield guard
    finally:
        guard.close()


def clear_unit_checkpoints(name: str, using: str, keep: Iterable[str] = ()) -> int:
    """Delete the unit checkpoints of projection ``name`` (every segment count) but ``keep``."""
    kept = set(keep)
    rows = Checkpoint.objects.using(using).filter(projection_name__startswith=f"{name}#")
    doomed = [
        row
        for row in rows.values_list("projection_name", flat=True)
        if (parsed := parse_unit_name(row)) is not None and parsed[0] == name and row not in kept
    ]
    deleted, _ = Checkpoint.objects.using(using).filter(projection_name__in=doomed).delete()
    return int(deleted)


@dataclass
class ResizeReport:
    """What ``resize_projection`` did: the counts, the common position and events drained."""

    projection: str
    old_segments: int
    new_segments: int
    position: int
    drained: int


def resize_projection(name: str, batch_size: int | None = None) -> ResizeReport:
    """Move a projection's checkpoints from the segment count they were written for to
    its class's ``segments``, handling every event exactly once.

    Holds every old and new unit (``ProjectionBusyError`` while a runner has one),
    brings each old unit up to one common safe mark (handling the events in between as
    the runner would), then, in one transaction, replaces the old checkpoints with the
    new units' checkpoints at that mark.
    """
    from .batch import run_batch
    from .runner import batch_context, checkpoint_db, load_projections

    (projection,) = load_projections([name])
    using = checkpoint_db()
    new = segment_count(projection)
    found = stored_segment_counts(projection.name, using)
    if len(found) > 1:
        raise SegmentCountMismatchError(
            f"Projection {projection.name!r} has checkpoints for several segment counts "
            f"({', '.join(map(str, sorted(found)))}); rebuild it with reset_projection"
        )
    old = next(iter(found), new)
    if old == new:
        return ResizeReport(projection.name, old, new, -1, 0)
    old_units: list[Projection] = (
        [projection] if old == 1 else [SegmentUnit(projection, index, old) for index in range(old)]
    )
    new_names = [projection.name] if new == 1 else unit_names(projection)
    names = list(dict.fromkeys([*(u.name for u in old_units), *new_names]))
    ctx = batch_context(using, batch_size=batch_size)
    store = ctx.store
    events_db = (
        store.db_for_read()
        if isinstance(store, DjangoEventStore)
        else router.db_for_read(EventRecord)
    )
    drained = 0
    with holding(names, using):
        mark = store.safe_high_water_mark()
        for unit in old_units:
            buckets = getattr(unit, "segment_buckets", (0, EVENT_BUCKETS))
            while True:
                position = Checkpoint.objects.using(using).filter(projection_name=unit.name)
                after = int(position.values_list("position", flat=True).first() or 0)
                left = (
                    EventRecord.objects.using(events_db)
                    .filter(position__gt=after, position__lte=mark)
                    .filter(bucket__gte=buckets[0], bucket__lt=buckets[1])
                    .count()
                )
                if not left:
                    break
                # Exactly the unit's events up to the mark: nothing past it is handled.
                result = run_batch(unit, replace(ctx, batch_size=min(ctx.batch_size, left)))
                drained += result.count
        with transaction.atomic(using=using):
            now = timezone.now()
            old_names = [u.name for u in old_units]
            Checkpoint.objects.using(using).filter(projection_name__in=old_names).exclude(
                projection_name__in=new_names
            ).delete()
            for new_name in new_names:
                Checkpoint.objects.using(using).ensure(new_name)
            Checkpoint.objects.using(using).filter(projection_name__in=new_names).update(
                position=mark,
                last_event_id=None,
                last_event_type="",
                last_processed_at=now,
                updated_at=now,
            )
    logger.info(
        "Projection %s resized from %d to %d segments at position %d",
        projection.name,
        old,
        new,
        mark,
        extra={"projection": projection.name, "position": mark},
    )
    return ResizeReport(projection.name, old, new, mark, drained)


__all__ = [
    "ResizeReport",
    "SegmentUnit",
    "UnitClaims",
    "base_projection_name",
    "bucket_range",
    "check_segment_counts",
    "clear_unit_checkpoints",
    "holding",
    "load_units",
    "parse_unit_name",
    "resize_projection",
    "segment_count",
    "unit_name",
    "units_of",
]
