"""``RedisEventBus``: event distribution across processes on Redis Streams.

The bus publishes here; its consuming half is ``redis_consumer`` and the stream layout,
configuration and counters are in ``redis_streams`` (their names are importable from this
module too).
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

from .. import tracing
from ..events.base import DomainEvent
from ..events.registry import EventRegistry, resolve_registry
from ..exceptions import EventBusError, RedisNotAvailableError
from .interface import EventBus, HandlerLike, event_type_key, handler_function
from .redis_consumer import StreamConsumer
from .redis_streams import (
    REDIS_AVAILABLE,
    RedisEventBusConfig,
    RedisEventBusStats,
    StatsCounter,
    connect,
    serialize_fields,
)

with suppress(ImportError):  # without redis the bus refuses to be created
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from redis import Redis

# The documented logger of the Redis bus, whichever of its modules logs.
logger = logging.getLogger("django_eventsource.bus.redis")

#: Stream entries of one background publish, with the context (trace) of its caller.
_Batch = tuple[list[dict[str, str]], contextvars.Context]


class RedisEventBus(EventBus):
    """Publishes events to a Redis stream and consumes them through a consumer group.

    Publishing::

        bus = RedisEventBus(RedisEventBusConfig(redis_url="redis://localhost:6379/0"))
        bus.publish(events)                       # one pipelined round trip

    Consuming (what ``manage.py consume_events`` does)::

        bus.subscribe(OrderPlaced, send_confirmation)
        bus.start_consuming()                     # blocks until stop_consuming()

    Handlers may be plain or ``async def`` functions, or objects with ``handle(event)``.
    Delivery is at-least-once: a handler can see an event again (after a crash or a
    failure of another handler of the same event), so it should be idempotent, keyed on
    ``event.event_id``.

    **Background publishing.** ``publish(events, background=True)`` returns at once and a
    single worker thread sends the events, in order, one call after another. Events the
    worker cannot send (Redis unreachable) are logged and counted in
    ``background_dropped``: the caller has moved on, so nothing retries them. Use the
    outbox when an event must reach Redis.

    **Shutdown.** ``shutdown(timeout)`` refuses further publishing and consuming
    (``EventBusError``), stops a running consumer loop and waits up to ``timeout`` seconds
    for it and for background events to be sent, then closes the connections. Background
    events still queued when the time is up are dropped with a warning; the batch being
    sent finishes.
    """

    def __init__(
        self,
        config: RedisEventBusConfig | None = None,
        event_registry: EventRegistry | None = None,
        *,
        client: Redis[str] | None = None,
    ) -> None:
        if not REDIS_AVAILABLE:
            raise RedisNotAvailableError()
        self.config = config or RedisEventBusConfig()
        self.registry = resolve_registry(event_registry)
        self._client: Redis[str] | None = client
        self._lock = threading.RLock()
        self._handlers: dict[str, list[HandlerLike]] = {}
        self._wildcard: list[HandlerLike] = []
        self._stats = StatsCounter()
        self._consumer = StreamConsumer(
            self.config, self.registry, lambda: self.client, self._handlers_for, self._stats
        )
        self._stop = threading.Event()
        # Lifecycle: whether shut down, and the threads still using the client (the
        # background worker, consumer loops); the last of them to finish closes it.
        self._state = threading.Condition()
        self._closed = False
        self._worker: threading.Thread | None = None
        self._loops: set[threading.Thread] = set()
        self._queue: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._drop_pending = False

    # -- connection -------------------------------------------------------------------

    @property
    def client(self) -> Redis[str]:
        """The redis-py client (created on first use; it reconnects by itself)."""
        client = self._client
        if client is None:
            with self._lock:  # the consumer loop and a publisher may ask at once
                client = self._client
                if client is None:
                    client = self._client = connect(self.config)
        return client

    def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(self.client.ping())
        except (RedisConnectionError, RedisTimeoutError):
            return False

    def close(self) -> None:
        """Give back held partitions and close the connection pool (a later call
        reconnects)."""
        if self._client is not None:
            with suppress(RedisConnectionError, RedisTimeoutError):
                self._consumer.release_partitions()
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop the bus; wait up to ``timeout`` seconds for its threads; close the client.

        Publishing and consuming raise ``EventBusError`` from now on. A running
        ``start_consuming()`` loop returns after its current batch; queued background
        events are sent. What is still queued when ``timeout`` has passed is dropped and
        logged. Safe to call more than once, and from a handler.
        """
        deadline = time.monotonic() + timeout
        with self._state:
            already_closed, self._closed = self._closed, True
            worker = self._worker
            if worker is not None and not already_closed:
                self._queue.put(None)
        self._stop.set()
        current = threading.current_thread()
        if worker is not None and worker is not current:
            worker.join(max(deadline - time.monotonic(), 0.0))
            if worker.is_alive():
                self._drop_pending = True
                logger.warning(
                    "Redis event bus shut down after %.1fs with %d background event(s) "
                    "pending; the batch being sent finishes, the queued ones are dropped",
                    timeout,
                    self.get_stats().background_pending,
                )
        with self._state:
            loops_ended = self._state.wait_for(
                lambda: not self._loops - {current}, max(deadline - time.monotonic(), 0.0)
            )
            idle = not self._loops and self._worker is None
        if not loops_ended:
            logger.warning(
                "Redis event bus shut down after %.1fs with a consumer loop still running; "
                "it returns after its current batch",
                timeout,
            )
        if idle:
            self.close()

    @property
    def is_shut_down(self) -> bool:
        """Whether ``shutdown()`` has been called."""
        with self._state:
            return self._closed

    def _refuse_when_shut_down(self) -> None:
        if self._closed:
            raise EventBusError("The event bus has been shut down; it accepts no events")

    def _finished(self, thread: threading.Thread) -> None:
        """``thread`` no longer uses the client; after shutdown the last one closes it."""
        with self._state:
            self._loops.discard(thread)
            if thread is self._worker:
                self._worker = None
            self._state.notify_all()
            close = self._closed and not self._loops and self._worker is None
        if close:
            self.close()

    def get_stats(self) -> RedisEventBusStats:
        """A snapshot of the counters."""
        return self._stats.snapshot()

    # -- publishing -------------------------------------------------------------------

    def publish(self, events: Sequence[DomainEvent], background: bool = False) -> None:
        """Add ``events`` to the stream in order, in one pipelined round trip.

        By default the call returns once Redis has stored the events (and raises
        ``EventBusError`` when it cannot be reached), which is what makes the outbox
        relay's "published" mean something. With ``background=True`` the events are
        queued for the worker thread and the call returns at once. Raises
        ``EventBusError`` once the bus has been shut down.
        """
        if background:
            self._enqueue([serialize_fields(event.to_dict()) for event in events])
            return
        self.publish_serialized([event.to_dict() for event in events])

    def publish_serialized(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Publish events given as ``to_dict()`` dicts (the outbox relay's path)."""
        self._refuse_when_shut_down()
        if events:
            self._add_entries([serialize_fields(event_data) for event_data in events])

    async def apublish(self, events: Sequence[DomainEvent], background: bool = False) -> None:
        if background:
            self.publish(events, background=True)  # only queues: nothing to wait for
            return
        await sync_to_async(self.publish, thread_sensitive=False)(events)

    def _add_entries(self, entries: list[dict[str, str]]) -> None:
        cfg = self.config
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            # Each aggregate's stream (its partition): the pipeline keeps the order.
            stream = cfg.stream_for(entry["aggregate_id"])
            pipe.xadd(stream, entry, maxlen=cfg.max_stream_length, approximate=True)
        with tracing.span(
            "eventsource.redis.publish", {"event_count": len(entries), "stream": cfg.stream_name}
        ):
            try:
                pipe.execute()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                raise EventBusError(f"Redis is unavailable at {cfg.redis_url}: {exc}") from exc
        self._stats.add(events_published=len(entries))

    def _enqueue(self, entries: list[dict[str, str]]) -> None:
        with self._state:
            self._refuse_when_shut_down()
            if not entries:
                return
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._run_worker, name="eventsource-redis-publish", daemon=True
                )
                self._worker.start()
            self._stats.add(background_pending=len(entries))
            self._queue.put((entries, contextvars.copy_context()))

    def _run_worker(self) -> None:
        try:
            while (batch := self._queue.get()) is not None:
                entries, context = batch
                try:
                    if self._drop_pending:
                        self._dropped(entries, "the bus was shut down before they were sent")
                    else:
                        # The caller's context, so the publish span joins the caller's trace.
                        context.run(self._add_entries, entries)
                except Exception as exc:  # the caller has moved on: log, count, carry on
                    self._dropped(entries, str(exc), exc)
                finally:
                    self._stats.add(background_pending=-len(entries))
        finally:
            self._finished(threading.current_thread())

    def _dropped(
        self, entries: list[dict[str, str]], reason: str, error: Exception | None = None
    ) -> None:
        self._stats.add(background_dropped=len(entries))
        stream = self.config.stream_name
        logger.error(
            "%d background event(s) were not published to %s: %s",
            len(entries),
            stream,
            reason,
            exc_info=error,
            extra={"event_ids": [entry["event_id"] for entry in entries], "stream": stream},
        )

    # -- subscriptions ----------------------------------------------------------------

    def subscribe(self, event_type: type[DomainEvent] | str, handler: HandlerLike) -> None:
        handler_function(handler)
        with self._lock:
            self._handlers.setdefault(event_type_key(event_type), []).append(handler)

    def unsubscribe(self, event_type: type[DomainEvent] | str, handler: HandlerLike) -> bool:
        with self._lock:
            handlers = self._handlers.get(event_type_key(event_type), [])
            if handler in handlers:
                handlers.remove(handler)
                return True
            return False

    def subscribe_to_all_events(self, handler: HandlerLike) -> None:
        handler_function(handler)
        with self._lock:
            self._wildcard.append(handler)

    def unsubscribe_from_all_events(self, handler: HandlerLike) -> bool:
        with self._lock:
            if handler in self._wildcard:
                self._wildcard.remove(handler)
                return True
            return False

    def _handlers_for(self, event_type: str) -> list[HandlerLike]:
        with self._lock:
            return [*self._handlers.get(event_type, ()), *self._wildcard]

    # -- consuming --------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists.

        A new group starts at the beginning of the stream, so events published before
        the first consumer started are not missed.
        """
        self._consumer.ensure_group()

    def consume_once(self, count: int | None = None, block_ms: int | None = None) -> int:
        """Recover idle pending messages, then read and process new ones once.

        ``block_ms`` waits up to that long for new messages (``None``: do not wait).
        Returns how many messages were handled (acknowledged or dead-lettered).
        """
        self._refuse_when_shut_down()
        return self._consumer.consume_once(count, block_ms)

    def recover_pending(self, count: int | None = None) -> int:
        """Claim messages idle longer than ``claim_idle_ms`` and process them.

        This is how messages of a crashed consumer, or whose handler failed, get another
        delivery. Returns how many were handled (acknowledged or dead-lettered).
        """
        self._refuse_when_shut_down()
        return self._consumer.recover_pending(count)

    def get_dead_letters(self, count: int = 100) -> list[tuple[str, dict[str, str]]]:
        """The oldest ``count`` entries of the dead-letter stream: ``(id, fields)``."""
        return self._consumer.dead_letters(count)

    def start_consuming(self) -> None:
        """Consume until ``stop_consuming()`` is called (from a signal handler or thread).

        Pending recovery runs every ``claim_idle_ms / 2`` (at least every 30 s). When
        Redis goes away the loop waits with exponential backoff and carries on once it is
        back.
        """
        current = threading.current_thread()
        with self._state:
            # Checked and registered under the lock, so a shutdown cannot slip between.
            self._refuse_when_shut_down()
            self._stop.clear()
            self._loops.add(current)
        try:
            self._consumer.run(self._stop)
        finally:
            self._finished(current)

    def stop_consuming(self) -> None:
        """Ask a running ``start_consuming()`` loop to return (within ``block_ms``)."""
        self._stop.set()

    async def aconsume_once(self, count: int | None = None, block_ms: int | None = None) -> int:
        return await sync_to_async(self.consume_once, thread_sensitive=False)(count, block_ms)

    async def arecover_pending(self, count: int | None = None) -> int:
        return await sync_to_async(self.recover_pending, thread_sensitive=False)(count)

    def stream_length(self) -> int:
        """Number of entries in the events stream (all partitions together)."""
        pipe = self.client.pipeline(transaction=False)
        for stream in self.config.stream_names:
            pipe.xlen(stream)
        return sum(int(n) for n in pipe.execute())


__all__ = [
    "REDIS_AVAILABLE",
    "RedisEventBus",
    "RedisEventBusConfig",
    "RedisEventBusStats",
    "serialize_fields",
]
