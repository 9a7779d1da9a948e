"""``AggregateRepository``: load aggregates from their events and save new ones atomically."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar
from uuid import UUID

from asgiref.sync import sync_to_async

from .. import tracing
from ..context import get_event_context
from ..events.base import DomainEvent
from ..exceptions import AggregateNotFoundError, InvalidEventError, OptimisticLockError
from ..stores.interface import (
    AppendResult,
    EventPublisher,
    EventStore,
    ReadOptions,
    make_stream_id,
)
from ..stores.validation import coerce_uuid
from .base import AggregateRoot
from .snapshots import SnapshotData, SnapshotStore

logger = logging.getLogger("django_eventsource")

TAggregate = TypeVar("TAggregate", bound=AggregateRoot[Any])


class AggregateRepository(Generic[TAggregate]):
    """Loads and saves one aggregate type through an ``EventStore``.

    ``save`` appends the aggregate's uncommitted events with optimistic locking. With
    ``DjangoEventStore`` it runs inside ``transaction.atomic`` (joining the caller's
    transaction), writes outbox rows and a due snapshot in the same transaction, and calls
    ``event_publisher`` only after the transaction commits.

    ``tenant_id`` binds the repository to one tenant: new events are stamped with it and
    aggregates of other tenants are not found.
    """

    def __init__(
        self,
        event_store: EventStore,
        aggregate_factory: Callable[[UUID], TAggregate],
        aggregate_type: str | None = None,
        event_publisher: EventPublisher | None = None,
        snapshot_store: SnapshotStore | None = None,
        snapshot_every: int | None = None,
        tenant_id: UUID | None = None,
    ) -> None:
        resolved_type = aggregate_type or getattr(aggregate_factory, "aggregate_type", None)
        if not resolved_type:
            raise TypeError("aggregate_type is required when the factory does not define it")
        if snapshot_every is not None and snapshot_every < 1:
            raise ValueError("snapshot_every must be a positive integer")
        if snapshot_every is not None and snapshot_store is None:
            raise ValueError("snapshot_every needs a snapshot_store")
        self.event_store = event_store
        self.aggregate_factory = aggregate_factory
        self.aggregate_type: str = resolved_type
        self.event_publisher = event_publisher
        self.snapshot_store = snapshot_store
        self.snapshot_every = snapshot_every
        self.tenant_id = coerce_uuid(tenant_id, "tenant_id") if tenant_id is not None else None

    # -- loading ------------------------------------------------------------------------

    def create_new(self, aggregate_id: UUID) -> TAggregate:
        """A new, empty aggregate (nothing is stored until ``save``)."""
        return self.aggregate_factory(coerce_uuid(aggregate_id, "aggregate_id"))

    def load(self, aggregate_id: UUID) -> TAggregate:
        """Rebuild an aggregate from its snapshot and events; ``AggregateNotFoundError`` if none.

        With a snapshot store, only the events newer than the latest usable snapshot are
        read. A repository bound to a tenant does not find another tenant's aggregates.
        """
        agg_id = coerce_uuid(aggregate_id, "aggregate_id")
        attributes = {"aggregate_type": self.aggregate_type, "aggregate_id": agg_id}
        with tracing.span(
            "eventsource.load", attributes, expected=(AggregateNotFoundError,)
        ) as current:
            aggregate, from_version = self._from_snapshot(agg_id)
            stream = self.event_store.get_events(
                agg_id, self.aggregate_type, from_version=from_version
            )
            tracing.set_attributes(
                current, events_read=len(stream.events), snapshot_used=from_version > 0
            )
            if stream.is_empty and from_version == 0:
                raise AggregateNotFoundError(agg_id, self.aggregate_type)
            if self.tenant_id is not None and any(
                e.tenant_id != self.tenant_id for e in stream.events
            ):
                raise AggregateNotFoundError(agg_id, self.aggregate_type)
            aggregate.load_from_history(stream.events)
            tracing.set_attributes(current, version=aggregate.version)
        return aggregate

    def _from_snapshot(self, aggregate_id: UUID) -> tuple[TAggregate, int]:
        """A new aggregate restored from the latest usable snapshot, and its version.

        The version is 0 (replay everything) when there is no snapshot, or when it was
        taken under another ``schema_version`` or no longer validates.
        """
        aggregate = self.aggregate_factory(aggregate_id)
        if self.snapshot_store is None:
            return aggregate, 0
        snapshot = self.snapshot_store.get_snapshot(aggregate_id, self.aggregate_type)
        if snapshot is None:
            return aggregate, 0
        if self.tenant_id is not None and snapshot.tenant_id != self.tenant_id:
            raise AggregateNotFoundError(aggregate_id, self.aggregate_type)
        schema_version = type(aggregate).schema_version
        if snapshot.schema_version != schema_version:
            logger.info(
                "Ignoring snapshot of %s %s: schema version %s, aggregate is at %s",
                self.aggregate_type,
                aggregate_id,
                snapshot.schema_version,
                schema_version,
            )
            return aggregate, 0
        try:
            aggregate.restore_snapshot(snapshot.state, snapshot.version)
        except (ValueError, TypeError, KeyError):
            # pydantic's ValidationError is a ValueError. A state class changed without
            # bumping schema_version lands here: replaying the events is always correct.
            logger.warning(
                "Snapshot of %s %s at version %s no longer validates; replaying all events",
                self.aggregate_type,
                aggregate_id,
                snapshot.version,
                exc_info=True,
            )
            return self.aggregate_factory(aggregate_id), 0
        return aggregate, snapshot.version

    def load_or_create(self, aggregate_id: UUID) -> TAggregate:
        """Load the aggregate, or return a new one when it has no events."""
        try:
            return self.load(aggregate_id)
        except AggregateNotFoundError:
            return self.create_new(aggregate_id)

    def exists(self, aggregate_id: UUID) -> bool:
        """Whether the aggregate has stored events (visible to this repository's tenant)."""
        return self.get_version(aggregate_id) > 0

    def get_version(self, aggregate_id: UUID) -> int:
        """The stored version of the aggregate (0 when it does not exist for this tenant).

        For a tenant-bound repository an aggregate belongs to the tenant of its first
        event; only that event is read, not the whole stream.
        """
        agg_id = coerce_uuid(aggregate_id, "aggregate_id")
        if self.tenant_id is not None:
            stream_id = make_stream_id(agg_id, self.aggregate_type)
            first = next(iter(self.event_store.read_stream(stream_id, ReadOptions(limit=1))), None)
            if first is None or first.event.tenant_id != self.tenant_id:
                return 0
        return self.event_store.get_stream_version(agg_id, self.aggregate_type)

    # -- saving -------------------------------------------------------------------------

    def save(self, aggregate: TAggregate) -> AppendResult | None:
        """Append the aggregate's uncommitted events; returns ``None`` when there were none.

        Raises ``OptimisticLockError`` when the aggregate was changed concurrently. A
        repository bound to a tenant reports an aggregate id taken by another tenant as a
        stream at version 0, as it would for an id nobody uses: the error tells nothing
        of the other tenant's aggregate.
        """
        pending = aggregate.uncommitted_events
        if not pending:
            return None
        if aggregate.aggregate_type != self.aggregate_type:
            raise InvalidEventError(
                f"This repository stores {self.aggregate_type!r} aggregates, "
                f"not {aggregate.aggregate_type!r}"
            )
        attributes = {
            "aggregate_type": self.aggregate_type,
            "aggregate_id": aggregate.aggregate_id,
            "event_count": len(pending),
            "new_version": aggregate.version,
        }
        hidden: OptimisticLockError | None = None
        with tracing.span("eventsource.save", attributes):
            # The save span's context goes into the events: their consumers join this trace.
            trace_context = tracing.current_trace_context()
            events = [self._stamp(event, trace_context) for event in pending]
            expected_version = aggregate.version - len(events)
            store = self.event_store
            snapshot_store = self.snapshot_store
            snapshot_due = snapshot_store is not None and self._snapshot_due(
                expected_version, aggregate.version
            )
            # append_events is atomic by itself (events and outbox rows); an enclosing
            # transaction is only needed when a snapshot must commit with them. Opening
            # one anyway would make the append's own atomic block a savepoint: two more
            # round trips.
            try:
                with store.atomic() if snapshot_due else contextlib.nullcontext():
                    result = store.append_events(
                        aggregate.aggregate_id, self.aggregate_type, events, expected_version
                    )
                    if not result.success:
                        raise OptimisticLockError(
                            aggregate.aggregate_id, expected_version, result.new_version
                        )
                    if snapshot_due and snapshot_store is not None:
                        self._save_snapshot(snapshot_store, aggregate, events[-1].tenant_id)
                    if self.event_publisher is not None:
                        publisher = self.event_publisher
                        store.on_commit(lambda: self._publish(publisher, events))
            except OptimisticLockError as exc:
                if self.tenant_id is None or exc.actual_version == 0:
                    raise
                if self.get_version(aggregate.aggregate_id) > 0:
                    raise  # a conflict inside this tenant's own stream
                hidden = OptimisticLockError(exc.aggregate_id, exc.expected_version, 0)
            if hidden is not None:
                # Raised outside the handler, so that the store's error, which carries the
                # other tenant's version, is not chained to it.
                raise hidden
        aggregate.mark_events_as_committed()
        return result

    def _snapshot_due(self, old_version: int, new_version: int) -> bool:
        """Whether a save from ``old_version`` to ``new_version`` crosses a multiple of N."""
        every = self.snapshot_every
        if every is None:
            return False
        return old_version // every != new_version // every

    def _save_snapshot(
        self, snapshot_store: SnapshotStore, aggregate: TAggregate, tenant_id: UUID | None
    ) -> None:
        """Store the aggregate's state; a failure is logged and never fails the save."""
        try:
            state = aggregate.snapshot_state()
        except Exception:
            logger.exception(
                "Cannot snapshot %s %s: snapshot_state() failed",
                self.aggregate_type,
                aggregate.aggregate_id,
            )
            return
        snapshot_store.save_snapshot(
            SnapshotData(
                aggregate_id=aggregate.aggregate_id,
                aggregate_type=self.aggregate_type,
                version=aggregate.version,
                schema_version=type(aggregate).schema_version,
                state=state,
                tenant_id=self.tenant_id or tenant_id,
            )
        )

    def _stamp(
        self, event: DomainEvent, trace_context: dict[str, str] | None = None
    ) -> DomainEvent:
        """Fill tenant, actor, correlation and causation from the repository and context.

        ``trace_context`` (the saving span's W3C headers, empty when tracing is off) goes
        into the metadata unless the event already carries one.
        """
        updates: dict[str, Any] = {}
        if trace_context and tracing.TRACE_CONTEXT_KEY not in event.metadata:
            updates["metadata"] = {**event.metadata, tracing.TRACE_CONTEXT_KEY: dict(trace_context)}
        if self.tenant_id is not None:
            if event.tenant_id is None:
                updates["tenant_id"] = self.tenant_id
            elif event.tenant_id != self.tenant_id:
                raise InvalidEventError(
                    f"Event {event.event_id} belongs to tenant {event.tenant_id}, but this "
                    f"repository is bound to tenant {self.tenant_id}"
                )
        ctx = get_event_context()
        explicit = event.model_fields_set
        if ctx.actor_id is not None and event.actor_id is None:
            updates["actor_id"] = ctx.actor_id
        if ctx.correlation_id is not None and "correlation_id" not in explicit:
            updates["correlation_id"] = ctx.correlation_id
        if ctx.causation_id is not None and event.causation_id is None:
            updates["causation_id"] = ctx.causation_id
        return event.model_copy(update=updates) if updates else event

    @staticmethod
    def _publish(publisher: EventPublisher, events: list[DomainEvent]) -> None:
        try:
            publisher.publish(events)
        except Exception:
            # The events are committed; a failed in-process publish must not turn a
            # successful save into an error. Use the outbox for guaranteed delivery.
            logger.exception(
                "Publishing %d committed event(s) failed",
                len(events),
                extra={"event_ids": [str(e.event_id) for e in events]},
            )

    # -- async twins --------------------------------------------------------------------

    async def aload(self, aggregate_id: UUID) -> TAggregate:
        return await sync_to_async(self.load)(aggregate_id)

    async def aload_or_create(self, aggregate_id: UUID) -> TAggregate:
        return await sync_to_async(self.load_or_create)(aggregate_id)

    async def asave(self, aggregate: TAggregate) -> AppendResult | None:
        return await sync_to_async(self.save)(aggregate)

    async def aexists(self, aggregate_id: UUID) -> bool:
        return await sync_to_async(self.exists)(aggregate_id)

    async def aget_version(self, aggregate_id: UUID) -> int:
        return await sync_to_async(self.get_version)(aggregate_id)


__all__ = ["AggregateRepository"]
