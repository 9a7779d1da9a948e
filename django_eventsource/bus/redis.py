"""``RedisEventBus``: event distribution across processes on Redis Streams.

The bus publishes here; its consuming half is ``redis_consumer`` and the stream layout,
configuration and counters are in ``redis_streams`` (their names are importable from this
module too).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

from .. import tracing
from ..events.base import DomainEvent
from ..events.registry import EventRegistry, default_registry
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
        self.registry = event_registry or default_registry
        self._client: Redis[str] | None = client
        self._lock = threading.RLock()
        self._handlers: dict[str, list[HandlerLike]] = {}
        self._wildcard: list[HandlerLike] = []
        self._stats = StatsCounter()
        self._consumer = StreamConsumer(
            self.config, self.registry, lambda: self.client, self._handlers_for, self._stats
        )

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
        """Close the connection pool (a later call reconnects)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop a running consumer loop and close the connections."""
        self.stop_consuming()
        self.close()

    def get_stats(self) -> RedisEventBusStats:
        """A snapshot of the counters."""
        return self._stats.snapshot()

    # -- publishing -------------------------------------------------------------------

    def publish(self, events: Sequence[DomainEvent], background: bool = False) -> None:
        """Add ``events`` to the stream in order, in one pipelined round trip.

        ``background`` is accepted for the interface and ignored: the call returns once
        Redis has stored the events, which is what makes the outbox relay's "published"
        mean something.
        """
        self.publish_serialized([event.to_dict() for event in events])

    def publish_serialized(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Publish events given as ``to_dict()`` dicts (the outbox relay's path)."""
        if not events:
            return
        cfg = self.config
        pipe = self.client.pipeline(transaction=False)
        for event_data in events:
            pipe.xadd(
                cfg.stream_name,
                serialize_fields(event_data),
                maxlen=cfg.max_stream_length,
                approximate=True,
            )
        with tracing.span(
            "eventsource.redis.publish", {"event_count": len(events), "stream": cfg.stream_name}
        ):
            try:
                pipe.execute()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                raise EventBusError(f"Redis is unavailable at {cfg.redis_url}: {exc}") from exc
        self._stats.add(events_published=len(events))

    async def apublish(self, events: Sequence[DomainEvent], background: bool = False) -> None:
        await sync_to_async(self.publish, thread_sensitive=False)(events, background)

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
        return self._consumer.consume_once(count, block_ms)

    def recover_pending(self, count: int | None = None) -> int:
        """Claim messages idle longer than ``claim_idle_ms`` and process them.

        This is how messages of a crashed consumer, or whose handler failed, get another
        delivery. Returns how many were handled (acknowledged or dead-lettered).
        """
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
        self._consumer.run()

    def stop_consuming(self) -> None:
        """Ask a running ``start_consuming()`` loop to return (within ``block_ms``)."""
        self._consumer.stop()

    async def aconsume_once(self, count: int | None = None, block_ms: int | None = None) -> int:
        return await sync_to_async(self.consume_once, thread_sensitive=False)(count, block_ms)

    async def arecover_pending(self, count: int | None = None) -> int:
        return await sync_to_async(self.recover_pending, thread_sensitive=False)(count)

    def stream_length(self) -> int:
        """Number of entries in the events stream."""
        return int(self.client.xlen(self.config.stream_name))


__all__ = [
    "REDIS_AVAILABLE",
    "RedisEventBus",
    "RedisEventBusConfig",
    "RedisEventBusStats",
    "serialize_fields",
]
