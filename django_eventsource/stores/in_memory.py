"""``InMemoryEventStore``: a thread-safe store for tests, prototypes and single processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from uuid import UUID

from ..events.base import DomainEvent
from ..partitioning import event_bucket
from .interface import (
    AppendResult,
    EventStore,
    EventStream,
    ReadDirection,
    ReadOptions,
    StoredEvent,
    make_stream_id,
    parse_stream_id,
)
from .validation import (
    check_existing_ids,
    check_position,
    check_versions,
    coerce_uuid,
    ensure_aware,
    storable_event_json,
    validate_append,
)


class InMemoryEventStore(EventStore):
    """Keeps every event in process memory behind one lock.

    Writers are serialized by the lock, so the global order never has gaps and
    ``safe_high_water_mark()`` is simply the last position. Nothing survives the process.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._all: list[StoredEvent] = []
        self._streams: dict[tuple[str, UUID], list[StoredEvent]] = {}
        self._by_id: dict[UUID, StoredEvent] = {}

    def append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: Sequence[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        agg_id, event_list = validate_append(aggregate_id, aggregate_type, events, expected_version)
        for event in event_list:
            storable_event_json(event)  # refuse what the Django store refuses
        with self._lock:
            stream = self._streams.get((aggregate_type, agg_id), [])
            current = len(stream)
            if not event_list:
                return AppendResult.successful(current, 0)
            existing = {
                e.event_id: (s.aggregate_type, s.aggregate_id, s.stream_position)
                for e in event_list
                if (s := self._by_id.get(e.event_id)) is not None
            }
            if check_existing_ids(agg_id, aggregate_type, event_list, existing, current):
                last = self._by_id[event_list[-1].event_id]
                return AppendResult.successful(last.stream_position, last.global_position)
            check_versions(agg_id, event_list, expected_version, current)
            stream_id = make_stream_id(agg_id, aggregate_type)
            now = datetime.now(UTC)
            stored_batch: list[StoredEvent] = []
            for event in event_list:
                stored = StoredEvent(
                    event=event,
                    stream_id=stream_id,
                    stream_position=event.aggregate_version,
                    global_position=len(self._all) + len(stored_batch) + 1,
                    stored_at=now,
                )
                stored_batch.append(stored)
            self._all.extend(stored_batch)
            self._streams.setdefault((aggregate_type, agg_id), []).extend(stored_batch)
            for stored in stored_batch:
                self._by_id[stored.event.event_id] = stored
            return AppendResult.successful(
                event_list[-1].aggregate_version, stored_batch[-1].global_position
            )

    def get_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str | None = None,
        from_version: int = 0,
        from_timestamp: datetime | None = None,
        to_timestamp: datetime | None = None,
    ) -> EventStream:
        agg_id = coerce_uuid(aggregate_id, "aggregate_id")
        check_position(from_version, "from_version")
        ensure_aware(from_timestamp, "from_timestamp")
        ensure_aware(to_timestamp, "to_timestamp")
        with self._lock:
            if aggregate_type is not None:
                candidates = list(self._streams.get((aggregate_type, agg_id), []))
            else:
                candidates = [s for s in self._all if s.event.aggregate_id == agg_id]
        events = [
            s.event
            for s in candidates
            if s.stream_position > from_version
            and _in_window(s.event, from_timestamp, to_timestamp)
        ]
        return EventStream.of(agg_id, aggregate_type, events, from_version)

    def get_events_by_type(
        self,
        aggregate_type: str,
        tenant_id: UUID | None = None,
        from_timestamp: datetime | None = None,
    ) -> list[DomainEvent]:
        ensure_aware(from_timestamp, "from_timestamp")
        with self._lock:
            snapshot = list(self._all)
        return [
            s.event
            for s in snapshot
            if s.event.aggregate_type == aggregate_type
            and (tenant_id is None or s.event.tenant_id == tenant_id)
            and _in_window(s.event, from_timestamp, None)
        ]

    def event_exists(self, event_id: UUID) -> bool:
        return coerce_uuid(event_id, "event_id") in self._by_id

    def get_stream_version(self, aggregate_id: UUID, aggregate_type: str) -> int:
        agg_id = coerce_uuid(aggregate_id, "aggregate_id")
        with self._lock:
            return len(self._streams.get((aggregate_type, agg_id), []))

    def get_global_position(self) -> int:
        with self._lock:
            return len(self._all)

    def read_stream(
        self, stream_id: str, options: ReadOptions | None = None
    ) -> Iterator[StoredEvent]:
        aggregate_id, aggregate_type = parse_stream_id(stream_id)
        with self._lock:
            stream = list(self._streams.get((aggregate_type, aggregate_id), []))
        return _select(stream, options or ReadOptions(), by_stream=True)

    def read_all(self, options: ReadOptions | None = None) -> Iterator[StoredEvent]:
        with self._lock:
            snapshot = list(self._all)
        return _select(snapshot, options or ReadOptions(), by_stream=False)

    def clear(self) -> None:
        """Forget every event (handy between tests)."""
        with self._lock:
            self._all.clear()
            self._streams.clear()
            self._by_id.clear()


def _in_window(event: DomainEvent, start: datetime | None, end: datetime | None) -> bool:
    if start is not None and event.occurred_at < start:
        return False
    return end is None or event.occurred_at <= end


def _select(
    items: list[StoredEvent], options: ReadOptions, *, by_stream: bool
) -> Iterator[StoredEvent]:
    def position(s: StoredEvent) -> int:
        return s.stream_position if by_stream else s.global_position

    if options.direction == ReadDirection.BACKWARD:
        ordered = reversed(items)
        bound = options.from_position

        def keep_position(s: StoredEvent) -> bool:
            return bound <= 0 or position(s) < bound

    else:
        ordered = iter(items)

        def keep_position(s: StoredEvent) -> bool:
            return position(s) > options.from_position

    count = 0
    for stored in ordered:
        if options.limit is not None and count >= options.limit:
            return
        if not keep_position(stored):
            continue
        if options.tenant_id is not None and stored.event.tenant_id != options.tenant_id:
            continue
        if not _in_window(stored.event, options.from_timestamp, options.to_timestamp):
            continue
        if options.buckets is not None and not (
            options.buckets[0] <= event_bucket(stored.event.aggregate_id) < options.buckets[1]
        ):
            continue
        count += 1
        yield stored


__all__ = ["InMemoryEventStore"]
