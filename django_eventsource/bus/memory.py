"""``InMemoryEventBus``: in-process event distribution.

Suited to a single process (the embedded setup and tests). Events published here live
only in memory: for delivery across processes use the Redis Streams bus, fed by the
outbox.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..events.base import DomainEvent
from ..exceptions import EventBusError
from ._dispatch import (
    CoroutineRunner,
    Subscription,
    adeliver,
    deliver,
    in_running_loop,
    subscription,
)
from .interface import EventBus, HandlerLike, event_type_key

logger = logging.getLogger("django_eventsource")


@dataclass(frozen=True)
class InMemoryEventBusStats:
    """A snapshot of an ``InMemoryEventBus``'s counters.

    ``events_published`` counts events accepted by ``publish``/``apublish`` (background
    ones included), ``handlers_invoked`` every handler call (failed ones included),
    ``handler_errors`` the calls that raised, and ``background_pending`` the events
    handed to the background worker and not yet delivered.

    Each ``publish(..., background=True)`` call with events is one background task:
    ``background_tasks_created`` counts them as they are queued, and each ends as
    exactly one of ``background_tasks_completed`` (every handler call succeeded),
    ``background_tasks_failed`` (delivered, but at least one handler raised; those
    errors are in ``handler_errors``) or ``background_tasks_dropped`` (still queued when
    ``shutdown`` ran out of time, so never delivered).
    """

    events_published: int = 0
    handlers_invoked: int = 0
    handler_errors: int = 0
    background_pending: int = 0
    background_tasks_created: int = 0
    background_tasks_completed: int = 0
    background_tasks_failed: int = 0
    background_tasks_dropped: int = 0


class InMemoryEventBus(EventBus):
    """Delivers events to handlers in the publishing process.

    Handlers are plain functions or objects with a ``handle(event)`` method, either of
    which may be ``async def``. For each event, the handlers subscribed to its
    ``event_type`` are taken first, in subscription order, then the wildcard handlers.
    Sync handlers run one after another in that order; the async handlers of an event
    run concurrently (started in that order), so a slow one does not hold up the others.
    Events are delivered in the order given, and every handler of one event has
    finished before the next event is delivered, so per-aggregate order holds. Subscribing
    by class uses the class's stored type name, so two classes are never confused even
    when one subclasses the other.

    A handler that raises does not stop the others: the error is logged on the
    ``django_eventsource`` logger (with the event id and the handler's name) and counted
    in ``stats.handler_errors``. Subscribing and publishing are thread-safe; each publish
    delivers to the subscriptions as they stood when it started.

    **Async handlers.** ``apublish`` awaits async handlers on the caller's event loop and
    runs sync handlers in a worker thread (``sync_to_async``), alongside the async ones,
    so sync handlers may use the ORM. The sync ``publish`` runs the sync handlers first
    and then the async ones, together, to completion on a private event loop. Called
    from a thread that is already running an event loop (an async view calling the sync
    API), ``publish`` instead delivers on a short-lived helper thread and blocks until
    it is done, since a running loop cannot run another coroutine to completion; in
    async code prefer ``await bus.apublish(...)``.

    **Background mode.** ``publish(events, background=True)`` returns at once and a
    single worker thread delivers the events, in order, one publish call (a background
    task, counted in the stats) after another. Ordering between background and direct
    publishes is not defined. The worker is a daemon thread: call ``shutdown()`` before
    the process exits to drain it.

    **Shutdown.** ``shutdown(timeout)`` refuses further publishes (``EventBusError``) and
    waits up to ``timeout`` seconds for background work. Events still queued when the
    timeout passes are dropped with a warning; the event being delivered finishes.

    Example::

        bus = InMemoryEventBus()
        bus.subscribe(OrderCreated, send_confirmation)
        bus.subscribe_to_all_events(audit_log)
        bus.publish([event])                     # handlers have run on return
        bus.publish([event], background=True)    # handlers run on the worker thread
        bus.shutdown(timeout=10)
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        # Copy-on-write: these containers are replaced, never mutated, so a publish can
        # keep a reference to them as its snapshot without holding the lock.
        self._by_type: dict[str, tuple[Subscription, ...]] = {}
        self._wildcard: tuple[Subscription, ...] = ()
        self._closed = False
        # Batches for the background worker; ``None`` tells it to stop.
        self._queue: queue.SimpleQueue[list[DomainEvent] | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._drop_pending = False
        self._stats_lock = threading.Lock()
        self._stats = InMemoryEventBusStats()

    # -- subscriptions ------------------------------------------------------------------

    def subscribe(self, event_type: type[DomainEvent] | str, handler: HandlerLike) -> None:
        """Call ``handler`` for every event of ``event_type`` (a class or type name).

        Subscribing the same handler to the same type twice has no further effect.
        """
        key = self._key(event_type)
        new = subscription(handler)
        with self._lock:
            current = self._by_type.get(key, ())
            if any(sub.handler == handler for sub in current):
                return
            self._by_type = {**self._by_type, key: (*current, new)}

    def unsubscribe(self, event_type: type[DomainEvent] | str, handler: HandlerLike) -> bool:
        """Remove ``handler`` from ``event_type``; returns whether it was subscribed."""
        key = self._key(event_type)
        with self._lock:
            current = self._by_type.get(key, ())
            remaining = tuple(sub for sub in current if sub.handler != handler)
            if len(remaining) == len(current):
                return False
            by_type = dict(self._by_type)
            if remaining:
                by_type[key] = remaining
            else:
                del by_type[key]
            self._by_type = by_type
            return True

    def subscribe_to_all_events(self, handler: HandlerLike) -> None:
        """Call ``handler`` for every published event, whatever its type."""
        new = subscription(handler)
        with self._lock:
            if any(sub.handler == handler for sub in self._wildcard):
                return
            self._wildcard = (*self._wildcard, new)

    def unsubscribe_from_all_events(self, handler: HandlerLike) -> bool:
        """Remove a wildcard subscription; returns whether it existed."""
        with self._lock:
            remaining = tuple(sub for sub in self._wildcard if sub.handler != handler)
            if len(remaining) == len(self._wildcard):
                return False
            self._wildcard = remaining
            return True

    def clear_subscribers(self) -> None:
        """Remove every subscription, typed and wildcard."""
        with self._lock:
            self._by_type = {}
            self._wildcard = ()

    def get_subscriber_count(self, event_type: type[DomainEvent] | str | None = None) -> int:
        """Handlers subscribed to ``event_type``, or all subscriptions when ``None``.

        Wildcard handlers are counted only in the total; ``get_wildcard_subscriber_count``
        gives them alone.
        """
        with self._lock:
            if event_type is None:
                return sum(map(len, self._by_type.values())) + len(self._wildcard)
            return len(self._by_type.get(self._key(event_type), ()))

    def get_wildcard_subscriber_count(self) -> int:
        """Handlers subscribed to every event (``subscribe_to_all_events``)."""
        with self._lock:
            return len(self._wildcard)

    @staticmethod
    def _key(event_type: type[DomainEvent] | str) -> str:
        if isinstance(event_type, str) or (
            isinstance(event_type, type) and issubclass(event_type, DomainEvent)
        ):
            return event_type_key(event_type)
        raise TypeError(
            f"event_type must be a DomainEvent subclass or a type name, got {event_type!r}"
        )

    def _snapshot(
        self,
    ) -> tuple[dict[str, tuple[Subscription, ...]], tuple[Subscription, ...]]:
        with self._lock:
            return self._by_type, self._wildcard

    # -- publishing ---------------------------------------------------------------------

    def publish(self, events: Sequence[DomainEvent], background: bool = False) -> None:
        """Deliver ``events`` to their subscribers, in order.

        With ``background=False`` (the default) every handler has run when this returns.
        With ``background=True`` the events are queued for the worker thread. Raises
        ``EventBusError`` once the bus has been shut down.
        """
        events = list(events)
        if background:
            self._enqueue(events)
            return
        self._accept(events)
        if in_running_loop():
            self._deliver_on_helper_thread(events)
        else:
            self._deliver_here(events)

    async def apublish(self, events: Sequence[DomainEvent], background: bool = False) -> None:
        """Async twin of ``publish``.

        The async handlers of each event are awaited concurrently on the caller's loop
        while its sync handlers run one after another in a thread through
        ``sync_to_async``; the next event starts once all of them have finished.
        ``background=True`` queues the events for the worker thread, exactly as
        ``publish`` does.
        """
        events = list(events)
        if background:
            self._enqueue(events)
            return
        self._accept(events)
        by_type, wildcard = self._snapshot()
        for event in events:
            # Awaited before the next event starts: per-aggregate order holds.
            await adeliver(event, (*by_type.get(event.event_type, ()), *wildcard), self._handled)

    def _accept(self, events: list[DomainEvent]) -> None:
        with self._lock:
            if self._closed:
                raise EventBusError("The event bus has been shut down; it accepts no events")
        self._count(events_published=len(events))

    def _deliver_here(self, events: list[DomainEvent]) -> None:
        runner = CoroutineRunner()
        try:
            self._deliver(events, runner)
        finally:
            runner.close()

    def _deliver(self, events: list[DomainEvent], runner: CoroutineRunner) -> int:
        """Deliver ``events`` in order; returns how many handler calls raised."""
        failures = 0

        # Counted here rather than read off the shared stats, which other publishing
        # threads move at the same time.
        def handled(sub: Subscription, event: DomainEvent, error: Exception | None) -> None:
            nonlocal failures
            failures += error is not None
            self._handled(sub, event, error)

        by_type, wildcard = self._snapshot()
        for event in events:
            deliver(event, (*by_type.get(event.event_type, ()), *wildcard), runner, handled)
        return failures

    def _deliver_on_helper_thread(self, events: list[DomainEvent]) -> None:
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self._deliver_here(events)
            except BaseException as exc:  # re-raised in the publishing thread
                failure.append(exc)

        helper = threading.Thread(target=run, name="eventsource-bus-publish")
        helper.start()
        helper.join()
        if failure:
            raise failure[0]

    def _handled(self, sub: Subscription, event: DomainEvent, error: Exception | None) -> None:
        if error is None:
            self._count(handlers_invoked=1)
            return
        self._count(handlers_invoked=1, handler_errors=1)
        logger.error(
            "Event handler %s failed on %s event %s",
            sub.name,
            event.event_type,
            event.event_id,
            exc_info=error,
            extra={"event_id": str(event.event_id), "handler": sub.name},
        )

    # -- background worker --------------------------------------------------------------

    def _enqueue(self, events: list[DomainEvent]) -> None:
        with self._lock:
            if self._closed:
                raise EventBusError("The event bus has been shut down; it accepts no events")
            if not events:
                return
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._run_worker, name="eventsource-bus-worker", daemon=True
                )
                self._worker.start()
            self._count(
                events_published=len(events),
                background_pending=len(events),
                background_tasks_created=1,
            )
            self._queue.put(events)

    def _run_worker(self) -> None:
        # One loop for the worker's lifetime: async handlers run here without paying for
        # a new event loop per publish.
        runner = CoroutineRunner()
        try:
            while (batch := self._queue.get()) is not None:
                if self._drop_pending:
                    outcome = "background_tasks_dropped"
                elif self._deliver(batch, runner):
                    outcome = "background_tasks_failed"
                else:
                    outcome = "background_tasks_completed"
                self._count(background_pending=-len(batch), **{outcome: 1})
        finally:
            runner.close()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Refuse new publishes and wait up to ``timeout`` seconds for background work.

        Safe to call more than once. Background events still queued after ``timeout``
        are dropped and logged.
        """
        with self._lock:
            already_closed = self._closed
            self._closed = True
            worker = self._worker
            if worker is not None and not already_closed:
                self._queue.put(None)
        if worker is None or worker is threading.current_thread():
            return
        worker.join(timeout)
        if worker.is_alive():
            self._drop_pending = True
            pending = self.get_stats().background_pending
            if pending:
                logger.warning(
                    "Event bus shut down after %.1fs with %d background event(s) pending; "
                    "the event being delivered finishes, the queued ones are dropped",
                    timeout,
                    pending,
                )

    @property
    def is_shut_down(self) -> bool:
        """Whether ``shutdown()`` has been called."""
        with self._lock:
            return self._closed

    # -- stats --------------------------------------------------------------------------

    def _count(self, **increments: int) -> None:
        """Add to the named ``InMemoryEventBusStats`` counters."""
        with self._stats_lock:
            stats = self._stats
            self._stats = replace(
                stats, **{name: getattr(stats, name) + n for name, n in increments.items()}
            )

    def get_stats(self) -> InMemoryEventBusStats:
        """A consistent snapshot of the bus's counters."""
        with self._stats_lock:
            return self._stats

    def get_background_task_count(self) -> int:
        """Background tasks (``publish(..., background=True)`` calls) queued or being
        delivered: created, and not yet completed, failed or dropped."""
        stats = self.get_stats()
        return stats.background_tasks_created - (
            stats.background_tasks_completed
            + stats.background_tasks_failed
            + stats.background_tasks_dropped
        )

    @property
    def stats(self) -> InMemoryEventBusStats:
        """Same as ``get_stats()``."""
        return self.get_stats()


__all__ = ["InMemoryEventBus", "InMemoryEventBusStats"]
