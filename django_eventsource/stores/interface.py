"""The ``EventStore`` contract and its value objects."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from asgiref.sync import sync_to_async

from ..events.base import DomainEvent

#: The largest global position or stream version: a signed 64-bit integer, as the column.
MAX_POSITION = 2**63 - 1


class ExpectedVersion:
    """Special values for ``append_events(expected_version=...)``.

    Any other value ``n >= 0`` means "the stream is exactly at version n" (``0`` is the
    same as ``NO_STREAM``).
    """

    ANY = -1
    NO_STREAM = 0
    STREAM_EXISTS = -2


class ReadDirection(StrEnum):
    """Order of a ``read_stream``/``read_all``."""

    FORWARD = "forward"
    BACKWARD = "backward"


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """Options for ``read_stream`` and ``read_all``.

    ``from_position`` is exclusive: reading forward returns positions greater than it,
    reading backward returns positions smaller than it (``0`` means "from the end").
    Positions are stream versions for ``read_stream`` and global positions for
    ``read_all``. Timestamps filter on ``occurred_at`` (inclusive).
    """

    direction: ReadDirection = ReadDirection.FORWARD
    from_position: int = 0
    limit: int | None = None
    from_timestamp: datetime | None = None
    to_timestamp: datetime | None = None
    tenant_id: UUID | None = None
    #: Only events whose bucket (``partitioning.event_bucket`` of the aggregate id) is in
    #: ``[low, high)``: what one unit of a segmented projection reads.
    buckets: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        # Checked here so that every store rejects the same bad input the same way,
        # instead of an odd TypeError (naive vs aware) deep inside a read.
        from ..exceptions import InvalidReadOptionsError

        try:
            object.__setattr__(self, "direction", ReadDirection(self.direction))
        except ValueError:
            raise InvalidReadOptionsError(
                f"direction must be 'forward' or 'backward', got {self.direction!r}"
            ) from None
        if not _is_int(self.from_position) or not 0 <= self.from_position <= MAX_POSITION:
            # Checked here because SQLite cannot even bind a larger int, where PostgreSQL
            # would compare it.
            raise InvalidReadOptionsError(
                f"from_position must be an integer from 0 to {MAX_POSITION}, "
                f"got {self.from_position!r}"
            )
        if self.limit is not None and (not _is_int(self.limit) or self.limit < 0):
            raise InvalidReadOptionsError(
                f"limit must be None or an integer >= 0, got {self.limit!r}"
            )
        for name in ("from_timestamp", "to_timestamp"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
                raise InvalidReadOptionsError(
                    f"{name} must be a timezone-aware datetime, got {value!r}"
                )
        if self.buckets is not None:
            _check_buckets(self.buckets)
        if self.tenant_id is not None and not isinstance(self.tenant_id, UUID):
            try:
                object.__setattr__(self, "tenant_id", UUID(str(self.tenant_id)))
            except ValueError:
                raise InvalidReadOptionsError(
                    f"tenant_id must be a UUID, got {self.tenant_id!r}"
                ) from None


def _check_buckets(buckets: object) -> None:
    from ..exceptions import InvalidReadOptionsError
    from ..partitioning import EVENT_BUCKETS

    if not (
        isinstance(buckets, tuple)
        and len(buckets) == 2
        and all(_is_int(b) for b in buckets)
        and 0 <= buckets[0] < buckets[1] <= EVENT_BUCKETS
    ):
        raise InvalidReadOptionsError(
            f"buckets must be a (low, high) pair with 0 <= low < high <= {EVENT_BUCKETS}, "
            f"got {buckets!r}"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event together with where it is stored."""

    event: DomainEvent
    stream_id: str
    stream_position: int
    global_position: int
    stored_at: datetime

    @property
    def event_id(self) -> UUID:
        return self.event.event_id

    @property
    def event_type(self) -> str:
        return self.event.event_type

    @property
    def aggregate_id(self) -> UUID:
        return self.event.aggregate_id

    @property
    def aggregate_type(self) -> str:
        return self.event.aggregate_type

    def __str__(self) -> str:
        # The dataclass repr embeds the whole event with its payload; a log line needs
        # only what locates it in the store.
        return (
            f"{self.event.event_type}({self.stream_id} @{self.stream_position}, "
            f"global #{self.global_position}, event_id={self.event.event_id})"
        )


@dataclass(frozen=True, slots=True, init=False)
class EventStream:
    """The events of one aggregate, in version order.

    ``version`` is the stream version after the last returned event (or
    ``from_version`` when no event was returned). ``events=None`` is an empty stream.
    """

    aggregate_id: UUID
    aggregate_type: str
    events: list[DomainEvent]
    version: int

    def __init__(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent] | None = None,
        version: int = 0,
    ) -> None:
        # Written by hand so that ``events`` may be None while the attribute is always
        # a list; frozen dataclasses are set through object.__setattr__.
        object.__setattr__(self, "aggregate_id", aggregate_id)
        object.__setattr__(self, "aggregate_type", aggregate_type)
        object.__setattr__(self, "events", [] if events is None else events)
        object.__setattr__(self, "version", version)

    @property
    def is_empty(self) -> bool:
        return not self.events

    @property
    def latest_event(self) -> DomainEvent | None:
        return self.events[-1] if self.events else None

    @classmethod
    def of(
        cls,
        aggregate_id: UUID,
        aggregate_type: str | None,
        events: list[DomainEvent],
        from_version: int = 0,
    ) -> EventStream:
        """The stream of ``events`` read after ``from_version`` (type from them if not given)."""
        version = events[-1].aggregate_version if events else from_version
        resolved_type = aggregate_type or (events[0].aggregate_type if events else "")
        return cls(aggregate_id, resolved_type, events, version)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Outcome of ``append_events``: the stream's new version and the last global position.

    The stores of this package raise ``OptimisticLockError`` on a version conflict, so
    their results always have ``success=True``. A custom ``EventStore`` may instead report
    a conflict without raising, as the eventsource guide allows: ``success=False``, nothing
    written, ``new_version`` the stream's actual version (:meth:`conflicted`).
    ``AggregateRepository.save`` turns such a result into ``OptimisticLockError``.
    """

    success: bool
    new_version: int
    global_position: int = 0

    @classmethod
    def successful(cls, new_version: int, global_position: int = 0) -> AppendResult:
        return cls(success=True, new_version=new_version, global_position=global_position)

    @classmethod
    def conflicted(cls, actual_version: int) -> AppendResult:
        """A refused append: nothing was written; the stream is at ``actual_version``."""
        return cls(success=False, new_version=actual_version)


def make_stream_id(aggregate_id: UUID, aggregate_type: str) -> str:
    """The ``stream_id`` of an aggregate: ``"{aggregate_id}:{aggregate_type}"``."""
    return f"{aggregate_id}:{aggregate_type}"


def parse_stream_id(stream_id: str) -> tuple[UUID, str]:
    """Split a ``stream_id`` into ``(aggregate_id, aggregate_type)``."""
    from ..exceptions import InvalidEventError

    raw_id, sep, aggregate_type = stream_id.partition(":")
    try:
        aggregate_id = UUID(raw_id)
    except ValueError:
        sep = ""
    if not sep or not aggregate_type:
        raise InvalidEventError(
            f"Malformed stream id {stream_id!r}; expected '<aggregate uuid>:<aggregate type>'"
        )
    return aggregate_id, aggregate_type


@dataclass(frozen=True, slots=True)
class ReaderBlocker:
    """A database session whose open transaction may hold catch-up readers back.

    It holds a write lock on the event table, so it may own a position that is not
    committed yet; readers stop below that position until the transaction ends.
    """

    pid: int | None
    xact_start: datetime | None
    duration_seconds: float
    state: str
    application_name: str
    query: str


@runtime_checkable
class EventPublisher(Protocol):
    """Anything that can publish committed events (an ``EventBus``, for example)."""

    def publish(self, events: list[DomainEvent]) -> Any: ...


class EventStore(ABC):
    """Durable, append-only storage of event streams.

    Every I/O method is synchronous, with an ``a``-prefixed async twin that runs the
    whole operation in one ``sync_to_async`` call.
    """

    #: Page size used by the async read iterators.
    async_page_size: int = 500

    # -- writing ------------------------------------------------------------------------

    @abstractmethod
    def append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: Sequence[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        """Append ``events`` to the stream atomically (all or none).

        Raises ``OptimisticLockError`` when the stream is not at ``expected_version``
        (see ``ExpectedVersion``), ``InvalidEventError`` for malformed input and
        ``DuplicateEventIdError`` when an event id is stored elsewhere. Re-appending
        events already stored at the same positions is an idempotent success.
        """

    # -- reading ------------------------------------------------------------------------

    @abstractmethod
    def get_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str | None = None,
        from_version: int = 0,
        from_timestamp: datetime | None = None,
        to_timestamp: datetime | None = None,
    ) -> EventStream:
        """Events of one aggregate with ``aggregate_version > from_version``, in order."""

    @abstractmethod
    def get_events_by_type(
        self,
        aggregate_type: str,
        tenant_id: UUID | None = None,
        from_timestamp: datetime | None = None,
    ) -> list[DomainEvent]:
        """Every event of an aggregate type, in global order."""

    @abstractmethod
    def event_exists(self, event_id: UUID) -> bool:
        """Whether an event with this id is stored."""

    @abstractmethod
    def get_stream_version(self, aggregate_id: UUID, aggregate_type: str) -> int:
        """Current version of a stream (0 when it does not exist)."""

    @abstractmethod
    def read_stream(
        self, stream_id: str, options: ReadOptions | None = None
    ) -> Iterator[StoredEvent]:
        """Iterate over one stream (``stream_id`` is ``"{aggregate_id}:{aggregate_type}"``)."""

    @abstractmethod
    def read_all(self, options: ReadOptions | None = None) -> Iterator[StoredEvent]:
        """Iterate over every event in global order, never past ``safe_high_water_mark()``."""

    def safe_high_water_mark(self) -> int:
        """The highest global position below which no committed event can still appear.

        Catch-up readers (projections, the outbox relay, ``read_all``) never read past
        it, so they never skip an event committed late by a slow transaction.
        """
        return self.get_global_position()

    @abstractmethod
    def get_global_position(self) -> int:
        """The highest global position stored (committed and visible), 0 when empty."""

    # -- unit of work hooks used by AggregateRepository ----------------------------------

    def atomic(self) -> contextlib.AbstractContextManager[Any]:
        """A context in which several store writes commit together (no-op by default)."""
        return contextlib.nullcontext()

    def on_commit(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` once the current unit of work commits (now, by default)."""
        callback()

    # -- async twins --------------------------------------------------------------------

    async def aappend_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: Sequence[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        return await sync_to_async(self.append_events)(
            aggregate_id, aggregate_type, events, expected_version
        )

    async def aget_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str | None = None,
        from_version: int = 0,
        from_timestamp: datetime | None = None,
        to_timestamp: datetime | None = None,
    ) -> EventStream:
        return await sync_to_async(self.get_events)(
            aggregate_id, aggregate_type, from_version, from_timestamp, to_timestamp
        )

    async def aget_events_by_type(
        self,
        aggregate_type: str,
        tenant_id: UUID | None = None,
        from_timestamp: datetime | None = None,
    ) -> list[DomainEvent]:
        return await sync_to_async(self.get_events_by_type)(
            aggregate_type, tenant_id, from_timestamp
        )

    async def aevent_exists(self, event_id: UUID) -> bool:
        return await sync_to_async(self.event_exists)(event_id)

    async def aget_stream_version(self, aggregate_id: UUID, aggregate_type: str) -> int:
        return await sync_to_async(self.get_stream_version)(aggregate_id, aggregate_type)

    async def asafe_high_water_mark(self) -> int:
        return await sync_to_async(self.safe_high_water_mark)()

    async def aget_global_position(self) -> int:
        return await sync_to_async(self.get_global_position)()

    async def aread_stream(
        self, stream_id: str, options: ReadOptions | None = None
    ) -> AsyncIterator[StoredEvent]:
        """Async twin of ``read_stream``; fetches pages in worker threads."""
        async for stored in self._apaged(
            lambda opts: self.read_stream(stream_id, opts), options, by_stream=True
        ):
            yield stored

    async def aread_all(self, options: ReadOptions | None = None) -> AsyncIterator[StoredEvent]:
        """Async twin of ``read_all``; fetches pages in worker threads."""
        async for stored in self._apaged(self.read_all, options, by_stream=False):
            yield stored

    async def _apaged(
        self,
        reader: Callable[[ReadOptions], Iterator[StoredEvent]],
        options: ReadOptions | None,
        *,
        by_stream: bool,
    ) -> AsyncIterator[StoredEvent]:
        opts = options or ReadOptions()
        remaining = opts.limit
        position = opts.from_position
        while remaining is None or remaining > 0:
            page_size = (
                self.async_page_size if remaining is None else min(remaining, self.async_page_size)
            )
            page_opts = replace(opts, from_position=position, limit=page_size)
            page = await sync_to_async(lambda o=page_opts: list(reader(o)))()
            for stored in page:
                yield stored
            if len(page) < page_size:
                return
            last = page[-1]
            position = last.stream_position if by_stream else last.global_position
            if remaining is not None:
                remaining -= len(page)


__all__ = [
    "AppendResult",
    "EventPublisher",
    "EventStore",
    "EventStream",
    "ExpectedVersion",
    "ReadDirection",
    "ReadOptions",
    "ReaderBlocker",
    "StoredEvent",
    "make_stream_id",
    "parse_stream_id",
]
