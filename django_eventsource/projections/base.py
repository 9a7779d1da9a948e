"""Projection base classes: build read models from events.

``Projection`` is the contract; ``DeclarativeProjection`` routes each event to the method
marked ``@handles(EventClass)``; ``CheckpointTrackingProjection`` adds a checkpoint,
retries with backoff and a dead-letter queue for projections fed outside the runner
(an in-process bus, for example). Under ``run_projections`` the runner provides all of
that itself, in the projection's database transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from asgiref.sync import sync_to_async

from .._runtime import full_jitter_delay, run_to_completion
from ..context import event_context
from ..events.base import DomainEvent
from ..events.handlers import (
    AsyncEventHandlerBase,
    EventHandlerBase,
    check_handler_signatures,
    collect_handlers,
    find_handler_name,
)
from ..events.registry import default_registry
from .checkpoints import CheckpointRepository, InMemoryCheckpointRepository, LagMetrics
from .dead_letters import DLQRepository, InMemoryDLQRepository

logger = logging.getLogger("django_eventsource")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failing handler is tried, and how long to wait between attempts.

    The delay before attempt ``n + 1`` is drawn uniformly from
    ``[0, min(max_delay, base_delay * 2 ** (n - 1))]`` ("full jitter"), so runners that
    fail together do not retry in lockstep.
    """

    max_attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")

    @classmethod
    def from_settings(cls) -> RetryPolicy:
        """``EVENTSOURCE_MAX_RETRIES``, ``EVENTSOURCE_RETRY_BACKOFF`` and ``..._BACKOFF_MAX``."""
        from ..conf import conf

        return cls(
            max_attempts=max(conf.MAX_RETRIES, 1),
            base_delay=conf.RETRY_BACKOFF,
            max_delay=conf.RETRY_BACKOFF_MAX,
        )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return full_jitter_delay(attempt, self.base_delay, self.max_delay)


@dataclass(frozen=True, slots=True)
class HandlingFailure:
    """A handler that kept failing: the last error and how many attempts were made.

    ``stopped`` means a stop was requested while waiting to retry: the event was not
    dead-lettered and is to be handled again later.
    """

    error: BaseException
    attempts: int
    stopped: bool = False


class Projection(ABC):
    """A read model kept up to date from events.

    Subclasses implement ``handle`` (sync, or ``async def``) and ``reset`` (drop the
    read model so it can be rebuilt from position 0). ``subscribed_to`` lists the event
    classes the projection wants; an empty list means every event.
    """

    #: Retries for this projection; ``None`` uses the ``EVENTSOURCE_*`` retry settings.
    retry_policy: ClassVar[RetryPolicy | None] = None

    #: Let the runner apply a whole batch in one savepoint, falling back to one savepoint
    #: per event (with retries and dead letters) only when a handler fails. The database
    #: ends up the same, with far fewer round trips; but on that fallback the handlers of
    #: the batch run a second time, so keep their effects in the database (or idempotent).
    optimistic_batches: ClassVar[bool] = False

    #: Also run inside the transaction of ``DjangoEventStore.append_events`` (and so of
    #: ``AggregateRepository.save``) on the events just appended: a save and its read
    #: model commit together, or neither does. The runner still serves the projection
    #: for rebuilds and for events the inline path leaves to it (see
    #: ``docs/projections.md``). The projection must be listed in
    #: ``EVENTSOURCE_PROJECTIONS``.
    inline: ClassVar[bool] = False

    #: Split the projection into this many units by a stable hash of the aggregate id, each
    #: with its own checkpoint and lock, run in parallel (see ``projections/segments.py``).
    #: Only for projections whose state is per aggregate; change it with ``resize_projection``.
    segments: ClassVar[int] = 1

    @property
    def name(self) -> str:
        """The checkpoint and dead-letter key; defaults to the class name."""
        return type(self).__name__

    @abstractmethod
    def handle(self, event: DomainEvent) -> Any:
        """Apply one event to the read model."""

    @abstractmethod
    def reset(self) -> None:
        """Remove everything the projection wrote, before a rebuild."""

    async def areset(self) -> None:
        """``reset()`` from async code (in one ``sync_to_async`` call)."""
        await sync_to_async(self.reset)()

    def subscribed_to(self) -> list[type[DomainEvent]]:
        """Event classes this projection handles (subclasses included); ``[]`` means all."""
        return []

    def is_interested_in(self, event: DomainEvent) -> bool:
        """Whether ``event`` is one of the subscribed classes."""
        wanted = self.subscribed_to()
        return not wanted or isinstance(event, tuple(wanted))

    def interest_filter(self) -> Callable[[DomainEvent], bool]:
        """``is_interested_in``, for a whole batch.

        The subscribed classes are read once, unless a subclass decides per event (it
        overrides ``is_interested_in``).
        """
        if type(self).is_interested_in is not Projection.is_interested_in:
            return self.is_interested_in
        wanted = tuple(self.subscribed_to())
        if not wanted:
            return _every_event
        return lambda event: isinstance(event, wanted)

    def sequence_key(self, event: DomainEvent) -> str:
        """The sequence ``event`` belongs to for this projection (default: its aggregate id).

        Once an event is dead-lettered, the later events with the same key wait behind it
        (parked, not handled) until it is retried successfully or skipped; events with
        other keys go on. Override it to widen the sequence (per tenant, per customer) when
        the read model relates events of several aggregates.
        """
        return str(event.aggregate_id)

    def process(self, event: DomainEvent) -> None:
        """Apply one event once, without retries or checkpointing (what the runner calls)."""
        run_to_completion(self.handle(event))

    def get_retry_policy(self) -> RetryPolicy:
        """The policy in force for this projection."""
        return self.retry_policy or RetryPolicy.from_settings()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


class DeclarativeProjection(Projection):
    """A projection whose handlers are methods marked with ``@handles``::

        class AccountSummary(DeclarativeProjection):
            @handles(AccountOpened)
            def on_opened(self, event: AccountOpened) -> None:
                AccountRow.objects.create(id=event.aggregate_id, owner=event.owner)

            def reset(self) -> None:
                AccountRow.objects.all().delete()

    A handler may be ``async def``; it is run to completion. Events without a handler
    are not subscribed to, so they are skipped.

    A handler that cannot be called with exactly one event besides ``self`` is a
    ``TypeError`` when the class is defined. ``manage.py check`` reports the projections
    of ``EVENTSOURCE_PROJECTIONS`` that handle an event class nothing registered matches
    (``django_eventsource.E020``) or subscribe to one they never handle (``W020``).
    """

    _handlers: ClassVar[dict[type[DomainEvent], str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers = collect_handlers(cls)
        check_handler_signatures(cls, handlers)
        cls._handlers = handlers

    @classmethod
    def get_handlers(cls) -> dict[type[DomainEvent], str]:
        """The ``@handles`` methods: each handled event class and its method's name."""
        return dict(cls._handlers)

    def subscribed_to(self) -> list[type[DomainEvent]]:
        return list(self._handlers)

    def is_interested_in(self, event: DomainEvent) -> bool:
        return find_handler_name(self._handlers, type(event)) is not None

    def handle(self, event: DomainEvent) -> Any:
        name = find_handler_name(self._handlers, type(event))
        if name is None:
            return None
        return run_to_completion(getattr(self, name)(event))


class BatchProjection(Projection):
    """A projection that applies a page of events in one call::

        class Totals(BatchProjection):
            def subscribed_to(self) -> list[type[DomainEvent]]:
                return [MoneyDeposited]

            def handle_batch(self, events: list[DomainEvent]) -> None:
                rows: dict[UUID, Decimal] = {}
                for event in events:
                    rows[event.aggregate_id] = rows.get(event.aggregate_id, 0) + event.amount
                ...  # one bulk write for the page

            def reset(self) -> None:
                Total.objects.all().delete()

    ``handle_batch`` receives a non-empty list of the subscribed events, in position
    order. The runner commits its writes and the checkpoint in one transaction. When it
    raises, the batch is retried (``retry_policy``), then split in halves, left before
    right, until the failing event is alone; that event is retried like a per-event
    handler and dead-lettered, every other event is applied exactly once.

    A failed attempt is rolled back to a savepoint, so the writes of the database it
    runs on never count twice; state kept elsewhere (in memory, another service) may see
    an event more than once and must be idempotent.

    ``handle(event)`` is ``handle_batch([event])``: it is what ``retry_dead_letters``
    and the inline path for one event call.
    """

    @abstractmethod
    def handle_batch(self, events: list[DomainEvent]) -> Any:
        """Apply ``events`` (non-empty, in position order) to the read model."""

    def handle(self, event: DomainEvent) -> Any:
        return self.handle_batch([event])

    def process_batch(self, events: list[DomainEvent]) -> None:
        """Apply a batch once, without retries or checkpointing (what the runner calls)."""
        run_to_completion(self.handle_batch(events))


def _every_event(event: DomainEvent) -> bool:
    return True


def subscribed_event_type_names(projection: Projection) -> list[str] | None:
    """The stored type names of the events ``projection`` wants; ``None`` for every event.

    Registered subclasses of a subscribed class count, since the projection receives
    them too.
    """
    wanted = tuple(projection.subscribed_to())
    if not wanted:
        return None
    names = [cls.event_type_name() for cls in wanted]
    for name, cls in default_registry.items():
        if issubclass(cls, wanted) and name not in names:
            names.append(name)
    return names


def apply_with_retries(
    projection: Projection,
    event: DomainEvent,
    policy: RetryPolicy | None = None,
    attempt_scope: Callable[[], AbstractContextManager[Any]] = nullcontext,
    sleep: Callable[[float], Any] = time.sleep,
    stop_event: threading.Event | None = None,
) -> HandlingFailure | None:
    """Apply ``event`` with ``projection.process``, retrying with backoff.

    Each attempt runs inside ``attempt_scope()`` (the runner passes a savepoint, so a
    failed attempt leaves no partial writes) and inside an ``event_context`` carrying the
    event's id as causation and its correlation id, so events saved by the handler are
    linked to it. Returns ``None`` on success, else the last failure.

    With ``stop_event`` the backoff waits on it instead of sleeping: a stop requested
    meanwhile ends the retries at once with a failure marked ``stopped``.
    """
    policy = policy or projection.get_retry_policy()
    for attempt in range(1, policy.max_attempts + 1):
        try:
            with (
                attempt_scope(),
                event_context(causation_id=event.event_id, correlation_id=event.correlation_id),
            ):
                projection.process(event)
            return None
        except Exception as exc:
            logger.warning(
                "Projection %s failed on %s (attempt %d/%d): %s",
                projection.name,
                event.event_type,
                attempt,
                policy.max_attempts,
                exc,
                extra={
                    "projection": projection.name,
                    "event_id": str(event.event_id),
                    "event_type": event.event_type,
                    "attempt": attempt,
                },
            )
            if attempt == policy.max_attempts:
                return HandlingFailure(error=exc, attempts=attempt)
            if stop_event is None:
                sleep(policy.delay(attempt))
            elif stop_event.wait(policy.delay(attempt)):
                return HandlingFailure(error=exc, attempts=attempt, stopped=True)
    raise AssertionError("unreachable")  # pragma: no cover


class CheckpointTrackingProjection(DeclarativeProjection):
    """A declarative projection that tracks its own checkpoint, retries and dead letters.

    For projections fed one event at a time outside ``run_projections`` (an event bus
    subscription, a test). ``handle(event)`` skips events at or below the checkpoint
    when their global position is known, retries the ``@handles`` method with backoff,
    dead-letters it after the last attempt and always moves the checkpoint on.

    The repositories default to in-memory ones; pass ``DjangoCheckpointRepository()``
    and ``DjangoDLQRepository()`` to persist them.

    ``reset()`` clears the checkpoint, so the next events are handled from position 0
    again. A projection with a read model overrides it to empty the read model and calls
    ``super().reset()``.
    """

    def __init__(
        self,
        checkpoint_repo: CheckpointRepository | None = None,
        dlq_repo: DLQRepository | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self.checkpoint_repo = checkpoint_repo or InMemoryCheckpointRepository()
        self.dlq_repo = dlq_repo or InMemoryDLQRepository()
        self._retry_policy = retry_policy

    def get_retry_policy(self) -> RetryPolicy:
        return self._retry_policy or super().get_retry_policy()

    def reset(self) -> None:
        """Forget the checkpoint (``checkpoint_repo``); overrides also empty the read model."""
        self.checkpoint_repo.reset_checkpoint(self.name)

    def get_checkpoint(self) -> UUID | None:
        """The id of the last event processed, ``None`` before the first one."""
        return self.checkpoint_repo.get_checkpoint(self.name)

    async def aget_checkpoint(self) -> UUID | None:
        return await sync_to_async(self.get_checkpoint)()

    def get_lag_metrics(self) -> LagMetrics | None:
        """How far behind the newest stored event of a subscribed class the projection is.

        Only the subscribed classes (and their registered subclasses) count, unless the
        projection subscribes to every event. ``None`` before the first event. An
        ``InMemoryCheckpointRepository`` measures the lag only when it was given the
        event store; otherwise the lag figures are 0.
        """
        return self.checkpoint_repo.get_lag_metrics(self.name, subscribed_event_type_names(self))

    async def aget_lag_metrics(self) -> LagMetrics | None:
        return await sync_to_async(self.get_lag_metrics)()

    def process(self, event: DomainEvent) -> None:
        # The runner calls process(): only the handler, its own tracking takes over.
        DeclarativeProjection.handle(self, event)

    def handle(self, event: DomainEvent, global_position: int | None = None) -> bool:
        """Track, retry and dead-letter one event; ``True`` when it was handled."""
        current = self.checkpoint_repo.get_position(self.name)
        if global_position is not None and global_position <= current:
            return True
        failure = (
            apply_with_retries(self, event, self.get_retry_policy())
            if self.is_interested_in(event)
            else None
        )
        if failure is not None:
            self.dlq_repo.add_failed_event(
                event_id=event.event_id,
                projection_name=self.name,
                event_type=event.event_type,
                event_data=event.to_dict(),
                error=failure.error,
                retry_count=failure.attempts,
                global_position=global_position,
            )
        self.checkpoint_repo.update_checkpoint(
            self.name,
            event.event_id,
            event.event_type,
            global_position if global_position is not None else current,
        )
        return failure is None


__all__ = [
    "AsyncEventHandlerBase",
    "BatchProjection",
    "CheckpointTrackingProjection",
    "DeclarativeProjection",
    "EventHandlerBase",
    "HandlingFailure",
    "Projection",
    "RetryPolicy",
    "apply_with_retries",
    "subscribed_event_type_names",
]
