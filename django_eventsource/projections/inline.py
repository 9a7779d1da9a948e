"""Inline projections: applied in the transaction that appends their events.

``DjangoEventStore.append_events`` asks :func:`plan_inline_projections` which inline
projections want its events before its ``INSERT``, and calls
:func:`run_inline_projections` right after it, inside its transaction (the caller's,
when there is one). For each projection of ``EVENTSOURCE_PROJECTIONS`` with
``inline = True`` the events are first *claimed*, by moving the projection's checkpoint
from the position just before them to the last of them with
``UPDATE … WHERE position = first - 1``, and only then handled. On PostgreSQL that
``UPDATE`` is a step of the append's own statement (``stores/writes.py``), so it costs
no round trip; elsewhere it is a statement of its own. The save, the read model and the
checkpoint commit or roll back together.

The claim also fails while the projection is paused or while one of the appended events'
sequence keys has an open dead letter for it: those events must wait behind the dead
letter, so they are left to the runner, which parks them (see ``sequencing``). The check
is part of the same ``UPDATE``, so it costs no extra round trip.

The claim succeeds only when every event before the appended ones was already applied
(the checkpoint is exactly at the position before them) and the appended events hold
consecutive positions (no concurrent writer's event between them); or when only empty
positions lie before them (a rolled-back append) and no other transaction is writing
events. Otherwise nothing is applied here and the events are left to the runner, which
reads them after the checkpoint as usual: a writer that lost the race, events appended
while the runner was behind (a rebuild, the projection just switched to ``inline``).
Whoever moves the checkpoint past an event is the one that applied it, and the row lock
taken by the ``UPDATE`` (the runner takes it too, for its whole batch) orders them, so
no event is applied twice or skipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db import connections
from django.utils import timezone

from ..conf import conf
from ..context import event_context
from ..events.base import DomainEvent
from ..models import Checkpoint, EventRecord
from ..stores.interface import StoredEvent, make_stream_id
from ..stores.writes import CheckpointClaims, Inserted, checkpoint_claim
from .base import BatchProjection, Projection

logger = logging.getLogger("django_eventsource")

_cache_lock = threading.Lock()
_cache: dict[tuple[str, ...], list[Projection]] = {}


def inline_projections() -> list[Projection]:
    """The projections of ``EVENTSOURCE_PROJECTIONS`` with ``inline = True``.

    The instances are built once per value of the setting and then reused, since every
    append asks.
    """
    key = tuple(conf.PROJECTIONS)
    loaded = _cache.get(key)
    if loaded is None:
        from .runner import load_projections

        with _cache_lock:
            loaded = _cache[key] = load_projections()
    return [projection for projection in loaded if projection.inline]


@dataclass
class InlinePlan:
    """The inline projections of one append, decided before its ``INSERT``."""

    alias: str
    events: Sequence[DomainEvent]
    #: Per inline projection: the appended events it handles, and their sequence keys.
    entries: list[tuple[Projection, list[DomainEvent], list[str]]]

    def claims(self) -> CheckpointClaims:
        """The checkpoint claims for the append's statement (PostgreSQL)."""
        last = self.events[-1]
        return CheckpointClaims(
            claims=[
                (projection.name, len(wanted), keys) for projection, wanted, keys in self.entries
            ],
            last_event_id=last.event_id,
            last_event_type=last.event_type,
            now=timezone.now(),
        )


def plan_inline_projections(alias: str, events: Sequence[DomainEvent]) -> InlinePlan | None:
    """What the inline projections will do with ``events`` (``None``: nothing to do).

    Called by ``DjangoEventStore`` before it inserts ``events`` on database ``alias``.
    """
    projections = inline_projections()
    if not projections or not events:
        return None
    from .runner import checkpoint_db

    if checkpoint_db() != alias:
        # The checkpoint lives in another database: no single transaction can hold both.
        logger.debug("Inline projections skipped: checkpoints are not on %r", alias)
        return None
    entries = []
    for projection in projections:
        interested = projection.interest_filter()
        wanted = [event for event in events if interested(event)]
        keys = sorted({projection.sequence_key(event) for event in wanted})
        entries.append((projection, wanted, keys))
    return InlinePlan(alias, events, entries)


def run_inline_projections(plan: InlinePlan, inserted: Inserted) -> None:
    """Apply the inline projections of ``plan`` to its events, just inserted.

    Must run inside the append's transaction. A handler's error propagates, so the
    append rolls back. On PostgreSQL the append's statement has already tried the
    claims (``inserted.claimed``); elsewhere they are made here.
    """
    alias, events = plan.alias, plan.events
    last_position = inserted.last_position
    folded = inserted.first_position is not None
    if folded:
        first = int(inserted.first_position or 0)
        if last_position - first != len(events) - 1:
            return  # a concurrent writer's event sits between ours: left to the runner
    else:
        positions = _positions(alias, events, last_position)
        if positions is None:
            return  # a concurrent writer's event sits between ours: left to the runner
        first = positions[0]
    last = events[-1]
    for projection, wanted, keys in plan.entries:
        name = projection.name
        if folded and name in inserted.claimed:
            if inserted.claimed[name] != first - 1:
                # The row was moved to just before our events by a batch that committed
                # while the append waited for it, so the dead-letter check of the
                # statement may predate that batch: check again, and park what must
                # wait, as the batch itself would have.
                taken = {event.event_id: first + i for i, event in enumerate(events)}
                wanted = _admitted(projection, alias, wanted, taken)
        elif folded:
            if not _claim_across_gap(alias, name, first, last_position, last, len(wanted), keys):
                continue
        elif not _claim(alias, name, first - 1, last_position, last, len(wanted), keys):
            continue
        # Claimed even when none is wanted: the checkpoint must stay just below the next
        # append for that one to be applied inline.
        if not wanted:
            continue
        if isinstance(projection, BatchProjection):
            projection.process_batch(wanted)
            continue
        for event in wanted:
            with event_context(causation_id=event.event_id, correlation_id=event.correlation_id):
                projection.process(event)


def _admitted(
    projection: Projection, alias: str, wanted: list[DomainEvent], positions: dict[UUID, int]
) -> list[DomainEvent]:
    """``wanted`` without the events whose sequence is now blocked, which are parked
    (``positions``: each appended event's position)."""
    from .django_dead_letters import DjangoDLQRepository
    from .sequencing import Sequencing

    sequencing = Sequencing.load(projection, DjangoDLQRepository(alias))
    if not sequencing.blocked:
        return wanted
    stored_at = timezone.now()
    stored = [
        StoredEvent(
            event,
            make_stream_id(event.aggregate_id, event.aggregate_type),
            event.aggregate_version,
            positions[event.event_id],
            stored_at,
        )
        for event in wanted
    ]
    return [item.event for item in sequencing.admit(stored)]


def _positions(alias: str, events: Sequence[DomainEvent], last_position: int) -> list[int] | None:
    """The positions of ``events`` in order, or ``None`` when they are not consecutive."""
    if len(events) == 1:
        return [last_position]
    rows = (
        EventRecord.objects.using(alias)
        .filter(event_id__in=[event.event_id for event in events])
        .order_by("position")
        .values_list("position", flat=True)
    )
    positions = [int(position) for position in rows]
    if len(positions) != len(events) or positions[-1] - positions[0] != len(events) - 1:
        return None
    return positions


def _claim(
    alias: str,
    name: str,
    before: int,
    last_position: int,
    last: DomainEvent,
    count: int,
    keys: list[str],
) -> bool:
    """Move ``name``'s checkpoint from ``before`` to ``last_position``; whether it moved.

    Not while the projection is paused, nor while one of ``keys`` (the sequence keys of
    the events to apply) has an open dead letter.
    """
    if _advance(alias, name, before, last_position, last, count, keys):
        return True
    return _claim_across_gap(alias, name, before + 1, last_position, last, count, keys)


def _claim_across_gap(
    alias: str,
    name: str,
    first: int,
    last_position: int,
    last: DomainEvent,
    count: int,
    keys: list[str],
) -> bool:
    """Claim when only empty positions lie between the checkpoint and ``first``.

    Positions left empty by rolled-back appends (PostgreSQL sequences do not roll
    back), or a projection that never ran on a store whose first events were rolled
    back. Safe only when no event exists there now and none can still appear: no other
    transaction is inserting events (on SQLite writers are serialized anyway).
    """
    locked = Checkpoint.objects.using(alias).select_for_update().for_projection(name)
    current = locked.values_list("position", flat=True).first()
    if current is None:
        Checkpoint.objects.using(alias).ensure(name)
        current = locked.values_list("position", flat=True).get()
    current = int(current)
    if current >= first:
        return False
    between = EventRecord.objects.using(alias).filter(position__gt=current, position__lt=first)
    if between.exists() or _other_writers(alias):
        return False
    return _advance(alias, name, current, last_position, last, count, keys)


def _other_writers(alias: str) -> bool:
    """Whether another transaction may still commit events (``True`` when unknown)."""
    conn = connections[alias]
    if conn.vendor == "sqlite":
        return False  # one writer at a time: ours
    if conn.vendor != "postgresql":
        return True
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'relation' "
            "AND relation = to_regclass(%s) AND mode = 'RowExclusiveLock' AND granted "
            "AND pid <> pg_backend_pid() "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
            [conn.ops.quote_name(EventRecord._meta.db_table)],
        )
        return bool(cursor.fetchone()[0])


def _advance(
    alias: str,
    name: str,
    before: int,
    last_position: int,
    last: DomainEvent,
    count: int,
    keys: list[str],
) -> bool:
    # One raw statement: an append pays for it on every save.
    conn = connections[alias]
    meta = Checkpoint._meta

    def prep(field: str, value: Any) -> Any:
        return meta.get_field(field).get_db_prep_value(value, conn)  # type: ignore[union-attr]

    sql, params = checkpoint_claim(
        conn,
        name,
        count,
        keys,
        (prep("last_event_id", last.event_id), last.event_type, prep("updated_at", timezone.now())),
        moved_from=("%s", [before]),
        moved_to=("%s", [last_position]),
    )
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return bool(cursor.rowcount == 1)


__all__ = [
    "InlinePlan",
    "inline_projections",
    "plan_inline_projections",
    "run_inline_projections",
]
