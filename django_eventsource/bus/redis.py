"""``RedisEventBus``: event distribution across processes on Redis Streams.

Layout: every event goes to ONE stream, ``<stream_prefix>:events``, so the events of an
aggregate keep their order in Redis whatever their aggregate type. Each entry carries
``event_id`` (the consumers' idempotency key), ``event_type``, ``aggregate_type``,
``aggregate_id``, ``aggregate_version`` and ``data``, the JSON of ``event.to_dict()``.

Consumers read through a consumer group (at-least-once): a message is acknowledged only
after every subscribed handler succeeded. A message left unacknowledged (handler error,
crashed consumer) is claimed by a consumer of the group with ``XAUTOCLAIM`` once it has
been idle ``claim_idle_ms``; after ``max_retries`` deliveries it moves to the dead-letter
stream ``<stream_prefix>:dlq`` with its error. Messages of unknown event types, or that
no longer validate, go there at once: nothing is dropped silently.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

from .. import tracing
from .._runtime import call_handler, full_jitter_delay, worker_id
from ..events.base import DomainEvent
from ..events.registry import EventRegistry, default_registry
from ..events.serialization import StoredEventData
from ..exceptions import EventBusError, RedisNotAvailableError
from .interface import EventBus, HandlerLike, event_type_key, handler_function

try:
    import redis as redis_lib
    from redis.backoff import FullJitterBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry
except ImportError:  # pragma: no cover - exercised only without the redis extra
    REDIS_AVAILABLE = False
else:
    REDIS_AVAILABLE = True

if TYPE_CHECKING:
    from redis import Redis

logger = logging.getLogger("django_eventsource.bus.redis")


_consumer_lock = threading.Lock()
_process_consumer: tuple[int, str] | None = None


def _default_consumer_name() -> str:
    """This process's consumer name (a ``worker_id()``, kept while the pid is the same).

    Redis keeps every consumer name it sees in the group until it is deleted, so a name
    per bus would leave one more behind each time the recovery task runs.
    """
    global _process_consumer
    pid = os.getpid()
    with _consumer_lock:
        if _process_consumer is None or _process_consumer[0] != pid:
            _process_consumer = (pid, worker_id())
        return _process_consumer[1]


@dataclass(frozen=True)
class RedisEventBusConfig:
    """How a ``RedisEventBus`` connects, names its streams and consumes.

    ``max_stream_length`` bounds the events stream (``XADD MAXLEN ~``, so Redis trims in
    whole nodes; ``None`` keeps everything). ``max_retries`` is the number of deliveries
    after which a failing message is dead-lettered. ``connection_retries`` is how often
    one command is retried on a connection error before the error surfaces.
    """

    redis_url: str = "redis://127.0.0.1:6379/0"
    stream_prefix: str = "eventsource"
    consumer_group: str = "django-eventsource"
    consumer_name: str = field(default_factory=_default_consumer_name)
    batch_size: int = 100
    block_ms: int = 1000
    max_stream_length: int | None = 100_000
    max_retries: int = 5
    claim_idle_ms: int = 60_000
    stream_suffix: str = "events"
    dead_letter_suffix: str = "dlq"
    socket_timeout: float = 5.0
    socket_connect_timeout: float = 5.0
    connection_retries: int = 2
    reconnect_backoff: float = 0.5
    reconnect_backoff_max: float = 30.0

    @property
    def stream_name(self) -> str:
        """The stream every event is added to."""
        return f"{self.stream_prefix}:{self.stream_suffix}"

    @property
    def dead_letter_stream(self) -> str:
        """The stream holding messages that could not be processed."""
        return f"{self.stream_prefix}:{self.dead_letter_suffix}"

    @classmethod
    def from_settings(cls, **overrides: Any) -> RedisEventBusConfig:
        """The configuration described by the ``EVENTSOURCE_REDIS_*`` settings."""
        from ..conf import conf

        values: dict[str, Any] = {
            "redis_url": conf.REDIS_URL,
            "stream_prefix": conf.REDIS_STREAM_PREFIX,
            "consumer_group": conf.REDIS_CONSUMER_GROUP,
            "max_stream_length": conf.REDIS_MAX_STREAM_LENGTH,
            "max_retries": conf.REDIS_MAX_RETRIES,
            "claim_idle_ms": conf.REDIS_CLAIM_IDLE_MS,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True)
class RedisEventBusStats:
    """Counters of one ``RedisEventBus`` since it was created."""

    events_published: int = 0
    messages_received: int = 0
    messages_acknowledged: int = 0
    handler_errors: int = 0
    messages_recovered: int = 0
    messages_dead_lettered: int = 0
    reconnections: int = 0


@dataclass(frozen=True)
class _Message:
    message_id: str
    fields: dict[str, str]
    deliveries: int


def serialize_fields(event_data: Mapping[str, Any]) -> dict[str, str]:
    """The stream entry fields of one event given as its ``to_dict()``.

    Stored JSON (``StoredEventData``, what the outbox relay claims) is sent as it is,
    with the envelope fields taken from their columns.
    """
    if isinstance(event_data, StoredEventData):
        envelope, data = event_data.envelope, event_data.text
    else:
        envelope, data = event_data, json.dumps(event_data, separators=(",", ":"))
    return {
        "event_id": str(envelope["event_id"]),
        "event_type": str(envelope["event_type"]),
        "aggregate_type": str(envelope.get("aggregate_type", "")),
        "aggregate_id": str(envelope.get("aggregate_id", "")),
        "aggregate_version": str(envelope.get("aggregate_version", "")),
        "data": data,
    }


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
        self._stats = RedisEventBusStats()
        self._stop = threading.Event()
        self._group_ready = False
        self._last_recovery = 0.0

    # -- connection -------------------------------------------------------------------

    @property
    def client(self) -> Redis[str]:
        """The redis-py client (created on first use; it reconnects by itself)."""
        client = self._client
        if client is None:
            with self._lock:  # the consumer loop and a publisher may ask at once
                client = self._client
                if client is None:
                    cfg = self.config
                    read_timeout = max(cfg.socket_timeout, cfg.block_ms / 1000 + 2)
                    # No PING health checks: a dead connection surfaces as a connection
                    # error, which the retry policy and the consumer loop handle.
                    client = self._client = redis_lib.Redis.from_url(
                        cfg.redis_url,
                        decode_responses=True,
                        socket_timeout=read_timeout,
                        socket_connect_timeout=cfg.socket_connect_timeout,
                        retry=Retry(
                            FullJitterBackoff(cap=1.0, base=0.05), cfg.connection_retries
                        ),
                    )
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

    def _count(self, **increments: int) -> None:
        with self._lock:
            self._stats = replace(
                self._stats,
                **{name: getattr(self._stats, name) + n for name, n in increments.items()},
            )

    def get_stats(self) -> RedisEventBusStats:
        """A snapshot of the counters."""
        with self._lock:
            return self._stats

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
        self._count(events_published=len(events))

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
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(
                self.config.stream_name, self.config.consumer_group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def consume_once(self, count: int | None = None, block_ms: int | None = None) -> int:
        """Recover idle pending messages, then read and process new ones once.

        ``block_ms`` waits up to that long for new messages (``None``: do not wait).
        Returns how many messages were handled (acknowledged or dead-lettered).
        """
        handled = self.recover_pending(count)
        return handled + self._read_new(count, block_ms)

    def _read_new(self, count: int | None, block_ms: int | None) -> int:
        cfg = self.config
        self.ensure_group()
        try:
            response = self.client.xreadgroup(
                cfg.consumer_group,
                cfg.consumer_name,
                {cfg.stream_name: ">"},
                count=count or cfg.batch_size,
                block=block_ms if block_ms else None,
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                # The stream or group vanished (Redis restarted without persistence).
                self._group_ready = False
            raise
        messages = [
            _Message(message_id, entry_fields, 1)
            for _stream, entries in (response or [])
            for message_id, entry_fields in entries
            if entry_fields is not None
        ]
        return self._process(messages)

    def recover_pending(self, count: int | None = None) -> int:
        """Claim messages idle longer than ``claim_idle_ms`` and process them.

        This is how messages of a crashed consumer, or whose handler failed, get another
        delivery. Returns how many were handled (acknowledged or dead-lettered).
        """
        cfg = self.config
        self.ensure_group()
        handled = 0
        cursor = "0-0"
        while True:
            response = self.client.xautoclaim(
                cfg.stream_name,
                cfg.consumer_group,
                cfg.consumer_name,
                min_idle_time=cfg.claim_idle_ms,
                start_id=cursor,
                count=count or cfg.batch_size,
            )
            cursor = response[0]
            claimed = [(mid, f) for mid, f in response[1] if f is not None]
            # Entries trimmed from the stream while pending cannot be processed any
            # more; XAUTOCLAIM has already dropped them from the pending list.
            if claimed:
                self._count(messages_recovered=len(claimed))
                deliveries = self._delivery_counts([mid for mid, _ in claimed])
                handled += self._process(
                    [_Message(mid, f, deliveries.get(mid, 1)) for mid, f in claimed]
                )
            # XAUTOCLAIM scans a bounded slice of the pending list per call; the cursor
            # returns to 0-0 once the whole list has been looked at.
            if cursor in ("0-0", "0"):
                return handled

    def _delivery_counts(self, message_ids: list[str]) -> dict[str, int]:
        cfg = self.config
        pipe = self.client.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.xpending_range(
                cfg.stream_name, cfg.consumer_group, min=message_id, max=message_id, count=1
            )
        return {
            str(p["message_id"]): int(p["times_delivered"])
            for result in pipe.execute()
            for p in result
        }

    def _process(self, messages: list[_Message]) -> int:
        if not messages:
            return 0
        self._count(messages_received=len(messages))
        cfg = self.config
        acked: list[str] = []
        handled = 0
        for message in messages:
            data = _decode(message.fields.get("data", ""))
            attributes = {
                "event_type": message.fields.get("event_type"),
                "event_id": message.fields.get("event_id"),
                "message_id": message.message_id,
                "deliveries": message.deliveries,
                "consumer_group": cfg.consumer_group,
            }
            metadata = data.get("metadata") if isinstance(data, dict) else None
            # The span joins the trace of the code that saved the event.
            with tracing.span(
                "eventsource.redis.consume",
                attributes,
                parent=metadata if isinstance(metadata, dict) else None,
            ) as current:
                error = self._handle(message, data)
                if error is not None:
                    tracing.record_exception(current, error)
            if error is None:
                acked.append(message.message_id)
            elif isinstance(error, _Poison) or message.deliveries >= cfg.max_retries:
                self._dead_letter(message, _describe(error))
                handled += 1
            else:
                logger.warning(
                    "Event %s (message %s) failed on delivery %d of %d; it will be retried: %s",
                    message.fields.get("event_id"),
                    message.message_id,
                    message.deliveries,
                    cfg.max_retries,
                    _describe(error),
                    exc_info=error,
                    extra={
                        "event_id": message.fields.get("event_id"),
                        "event_type": message.fields.get("event_type"),
                        "message_id": message.message_id,
                        "deliveries": message.deliveries,
                        "consumer": cfg.consumer_name,
                    },
                )
        if acked:
            self.client.xack(  # type: ignore[no-untyped-call]
                cfg.stream_name, cfg.consumer_group, *acked
            )
            self._count(messages_acknowledged=len(acked))
        return handled + len(acked)

    def _handle(self, message: _Message, data: object) -> BaseException | None:
        """Run every handler of one message; the error that stopped it, or None."""
        if message.deliveries > self.config.max_retries:
            return _Poison(
                f"delivered {message.deliveries} times without being acknowledged "
                f"(max_retries={self.config.max_retries})"
            )
        event_type = message.fields.get("event_type", "")
        if self.registry.get_or_none(event_type) is None:
            return _Poison(f"Unknown event type {event_type!r}")
        if not isinstance(data, dict):
            return _Poison("The message's data is not a JSON object")
        try:
            event = self.registry.deserialize(data)
        except Exception as exc:  # a message that cannot decode is poison
            return _Poison(f"{type(exc).__name__}: {exc}")
        for handler in self._handlers_for(event.event_type):
            try:
                call_handler(handler_function(handler), event)
            except Exception as exc:  # the message stays pending
                self._count(handler_errors=1)
                return exc
        return None

    def _dead_letter(self, message: _Message, error: str) -> None:
        cfg = self.config
        entry = {
            **message.fields,
            "error": error,
            "original_stream": cfg.stream_name,
            "original_message_id": message.message_id,
            "consumer_group": cfg.consumer_group,
            "consumer": cfg.consumer_name,
            "deliveries": str(message.deliveries),
            "dead_lettered_at": str(time.time()),
        }
        logger.error(
            "Event %s (message %s) moved to %s after %d deliveries: %s",
            message.fields.get("event_id"),
            message.message_id,
            cfg.dead_letter_stream,
            message.deliveries,
            error,
            extra={
                "event_id": message.fields.get("event_id"),
                "event_type": message.fields.get("event_type"),
                "message_id": message.message_id,
                "deliveries": message.deliveries,
                "stream": cfg.dead_letter_stream,
                "consumer": cfg.consumer_name,
            },
        )
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(cfg.dead_letter_stream, entry)
        pipe.xack(cfg.stream_name, cfg.consumer_group, message.message_id)
        pipe.execute()
        self._count(messages_dead_lettered=1)

    def get_dead_letters(self, count: int = 100) -> list[tuple[str, dict[str, str]]]:
        """The oldest ``count`` entries of the dead-letter stream: ``(id, fields)``."""
        return [
            (str(mid), dict(f))
            for mid, f in self.client.xrange(self.config.dead_letter_stream, count=count)
        ]

    def start_consuming(self) -> None:
        """Consume until ``stop_consuming()`` is called (from a signal handler or thread).

        Pending recovery runs every ``claim_idle_ms / 2`` (at least every 30 s). When
        Redis goes away the loop waits with exponential backoff and carries on once it is
        back.
        """
        self._stop.clear()
        cfg = self.config
        recovery_every = min(max(cfg.claim_idle_ms / 2000, 0.05), 30.0)
        failures = 0
        while not self._stop.is_set():
            try:
                if time.monotonic() - self._last_recovery >= recovery_every:
                    self._last_recovery = time.monotonic()
                    self.recover_pending()
                self._read_new(cfg.batch_size, cfg.block_ms)
                failures = 0
            except (RedisConnectionError, RedisTimeoutError) as exc:
                failures += 1
                self._group_ready = False
                self._count(reconnections=1)
                delay = full_jitter_delay(
                    failures, cfg.reconnect_backoff, cfg.reconnect_backoff_max
                )
                logger.warning("Redis unavailable (%s); retrying in %.1fs", exc, delay)
                self._stop.wait(delay)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._group_ready = False
                logger.warning("Consumer group vanished; recreating it")

    def stop_consuming(self) -> None:
        """Ask a running ``start_consuming()`` loop to return (within ``block_ms``)."""
        self._stop.set()

    async def aconsume_once(self, count: int | None = None, block_ms: int | None = None) -> int:
        return await sync_to_async(self.consume_once, thread_sensitive=False)(count, block_ms)

    async def arecover_pending(self, count: int | None = None) -> int:
        return await sync_to_async(self.recover_pending, thread_sensitive=False)(count)

    def stream_length(self) -> int:
        """Number of entries in the events stream."""
        return int(self.client.xlen(self.config.stream_name))


def _decode(raw: str) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _describe(error: BaseException) -> str:
    if isinstance(error, _Poison):
        return str(error)
    return f"{type(error).__name__}: {error}"


class _Poison(EventBusError):
    """A message that no retry can fix (unknown type, undecodable, too many deliveries)."""


__all__ = [
    "REDIS_AVAILABLE",
    "RedisEventBus",
    "RedisEventBusConfig",
    "RedisEventBusStats",
    "serialize_fields",
]
