"""The consuming half of the Redis bus: consumer group, pending recovery, dead letters.

Consumers read through a consumer group (at-least-once): a message is acknowledged only
after every subscribed handler succeeded. A message left unacknowledged (handler error,
crashed consumer) is claimed by a consumer of the group with ``XAUTOCLAIM`` once it has
been idle ``claim_idle_ms``; after ``max_retries`` deliveries it moves to the dead-letter
stream ``<stream_prefix>:dlq`` with its error. Messages of unknown event types, or that
no longer validate, go there at once: nothing is dropped silently.

A handler that fails because the database is unavailable
(``_runtime.is_database_outage``) has not failed: the consumer loop closes the broken
connections, waits with backoff and runs the handlers of that message again, until the
database answers, without counting a delivery. A single pass (``consume_once``,
``recover_pending``) does not wait: it raises the database error and leaves the message
pending.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from .. import tracing
from .._runtime import (
    call_handler,
    close_broken_connections,
    close_stale_connections,
    full_jitter_delay,
    is_database_outage,
)
from ..events.registry import EventRegistry
from ..exceptions import EventBusError
from .interface import HandlerLike, handler_function
from .redis_partitions import PartitionLeases
from .redis_streams import RedisEventBusConfig, StatsCounter, StreamMessage

with suppress(ImportError):  # without redis no bus, hence no consumer, is ever created
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from redis import Redis

# The documented logger of the Redis bus, whichever of its modules logs.
logger = logging.getLogger("django_eventsource.bus.redis")


class StreamConsumer:
    """Reads the events stream as one consumer of a group and runs the handlers.

    ``RedisEventBus`` owns one and documents the behaviour; the bus supplies its client
    (``client()``, created on first use), its subscriptions (``handlers_for(event_type)``)
    and its counters.
    """

    def __init__(
        self,
        config: RedisEventBusConfig,
        registry: EventRegistry,
        client: Callable[[], Redis[str]],
        handlers_for: Callable[[str], list[HandlerLike]],
        stats: StatsCounter,
    ) -> None:
        self.config = config
        self.registry = registry
        self._client = client
        self._handlers_for = handlers_for
        self._stats = stats
        self._group_ready = False
        self._last_recovery = 0.0
        #: With more than one partition: which partitions this consumer reads.
        self.leases = PartitionLeases(config, client) if config.partitions > 1 else None

    def ensure_group(self) -> None:
        if self._group_ready:
            return
        for stream in self.config.stream_names:
            try:
                self._client().xgroup_create(
                    stream, self.config.consumer_group, id="0", mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._group_ready = True

    def _streams(self) -> list[str]:
        """The streams this consumer reads now (its partitions' streams)."""
        if self.leases is None:
            return [self.config.stream_name]
        self.leases.rebalance_if_due()
        fresh = self.leases.take_fresh()
        if fresh:
            # Taken over: what the previous holder left pending comes before anything new.
            self._recover(
                [self.config.partition_stream(p) for p in sorted(fresh)], None, None, idle_ms=0
            )
        return [self.config.partition_stream(p) for p in self.leases.held]

    def release_partitions(self) -> None:
        """Give back the partitions this consumer holds (when it stops)."""
        if self.leases is not None:
            self.leases.release_all()

    def consume_once(self, count: int | None = None, block_ms: int | None = None) -> int:
        handled = self.recover_pending(count)
        return handled + self.read_new(count, block_ms)

    def read_new(
        self, count: int | None, block_ms: int | None, stop: threading.Event | None = None
    ) -> int:
        """Read messages never delivered to the group and process them.

        With ``stop`` (the consumer loop), a database outage is waited out until the
        database is back or ``stop`` is set; without, its error is raised.
        """
        cfg = self.config
        self.ensure_group()
        streams = self._streams()
        if not streams:
            # Every partition has its consumer: wait as a blocking read would.
            if block_ms:
                (stop or threading.Event()).wait(block_ms / 1000)
            return 0
        try:
            response = self._client().xreadgroup(
                cfg.consumer_group,
                cfg.consumer_name,
                dict.fromkeys(streams, ">"),
                count=count or cfg.batch_size,
                block=block_ms if block_ms else None,
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                # The stream or group vanished (Redis restarted without persistence).
                self._group_ready = False
            raise
        messages = [
            StreamMessage(message_id, entry_fields, 1, stream)
            for stream, entries in (response or [])
            for message_id, entry_fields in entries
            if entry_fields is not None
        ]
        return self._process(messages, stop)

    def recover_pending(self, count: int | None = None, stop: threading.Event | None = None) -> int:
        self.ensure_group()
        return self._recover(self._streams(), count, stop, idle_ms=self.config.claim_idle_ms)

    def _recover(
        self, streams: list[str], count: int | None, stop: threading.Event | None, *, idle_ms: int
    ) -> int:
        """Claim the entries of ``streams`` pending for ``idle_ms`` or more and process them."""
        cfg = self.config
        handled = 0
        for stream in streams:
            cursor = "0-0"
            while True:
                response = self._client().xautoclaim(
                    stream,
                    cfg.consumer_group,
                    cfg.consumer_name,
                    min_idle_time=idle_ms,
                    start_id=cursor,
                    count=count or cfg.batch_size,
                )
                cursor = response[0]
                claimed = [(mid, f) for mid, f in response[1] if f is not None]
                # Entries trimmed from the stream while pending cannot be processed any
                # more; XAUTOCLAIM has already dropped them from the pending list.
                if claimed:
                    self._stats.add(messages_recovered=len(claimed))
                    deliveries = self._delivery_counts(stream, [mid for mid, _ in claimed])
                    handled += self._process(
                        [
                            StreamMessage(mid, f, deliveries.get(mid, 1), stream)
                            for mid, f in claimed
                        ],
                        stop,
                    )
                # XAUTOCLAIM scans a bounded slice of the pending list per call; the
                # cursor returns to 0-0 once the whole list has been looked at.
                if cursor in ("0-0", "0"):
                    break
        return handled

    def _delivery_counts(self, stream: str, message_ids: list[str]) -> dict[str, int]:
        cfg = self.config
        pipe = self._client().pipeline(transaction=False)
        for message_id in message_ids:
            pipe.xpending_range(stream, cfg.consumer_group, min=message_id, max=message_id, count=1)
        return {
            str(p["message_id"]): int(p["times_delivered"])
            for result in pipe.execute()
            for p in result
        }

    def _process(self, messages: list[StreamMessage], stop: threading.Event | None = None) -> int:
        if not messages:
            return 0
        self._stats.add(messages_received=len(messages))
        cfg = self.config
        acked: list[StreamMessage] = []
        handled = 0
        try:
            for index, message in enumerate(messages):
                error = self._attempt(message)
                if isinstance(error, _DatabaseUnavailable):
                    # What is done is acknowledged before waiting, so that nobody
                    # claims it again meanwhile.
                    handled += self._acknowledge(acked)
                    acked = []
                    error = self._wait_out_outage(message, error, messages[index:], stop)
                if error is None:
                    acked.append(message)
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
        finally:
            # Also when a single pass stops at a database outage: the messages handled
            # before it are done.
            handled += self._acknowledge(acked)
        return handled

    def _stream_of(self, message: StreamMessage) -> str:
        return message.stream or self.config.stream_name

    def _by_stream(self, messages: list[StreamMessage]) -> dict[str, list[str]]:
        ids: dict[str, list[str]] = {}
        for message in messages:
            ids.setdefault(self._stream_of(message), []).append(message.message_id)
        return ids

    def _acknowledge(self, messages: list[StreamMessage]) -> int:
        for stream, message_ids in self._by_stream(messages).items():
            self._client().xack(  # type: ignore[no-untyped-call]
                stream, self.config.consumer_group, *message_ids
            )
        if messages:
            self._stats.add(messages_acknowledged=len(messages))
        return len(messages)

    def _attempt(self, message: StreamMessage) -> BaseException | None:
        """Run the handlers of ``message`` once, in a span; the error that stopped them."""
        data = message.data()
        attributes = {
            "event_type": message.fields.get("event_type"),
            "event_id": message.fields.get("event_id"),
            "message_id": message.message_id,
            "deliveries": message.deliveries,
            "consumer_group": self.config.consumer_group,
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
        return error

    def _wait_out_outage(
        self,
        message: StreamMessage,
        outage: _DatabaseUnavailable,
        waiting: list[StreamMessage],
        stop: threading.Event | None,
    ) -> BaseException | None:
        """Run the handlers of ``message`` again until the database is back.

        Returns the outcome of the first attempt that was not cut short by the outage.
        ``waiting`` (this message and the rest of its batch) stays claimed by this
        consumer meanwhile, without counting a delivery. Raises the database error when
        there is no ``stop`` event (a single pass), and ``_Stopped`` once it is set.
        """
        cfg = self.config
        outages = 0
        error: BaseException | None = outage
        while isinstance(error, _DatabaseUnavailable):
            self._stats.add(database_retries=1)
            close_broken_connections()
            if stop is None:
                raise error.error
            outages += 1
            # Capped so that the claim is renewed before it looks abandoned.
            delay = min(
                full_jitter_delay(outages, cfg.reconnect_backoff, cfg.reconnect_backoff_max),
                cfg.claim_idle_ms / 2000,
            )
            logger.warning(
                "Database unavailable while handling event %s (message %s): %s; "
                "retrying in %.1fs, not counted as a delivery",
                message.fields.get("event_id"),
                message.message_id,
                _describe(error.error),
                delay,
                extra={
                    "event_id": message.fields.get("event_id"),
                    "message_id": message.message_id,
                    "attempt": outages,
                    "consumer": cfg.consumer_name,
                },
            )
            self._keep_claimed(waiting)
            if stop.wait(delay):
                raise _Stopped
            error = self._attempt(message)
        return error

    def _keep_claimed(self, messages: list[StreamMessage]) -> None:
        """Reset the idle time of messages this consumer holds; ``JUSTID`` claims do not
        count a delivery."""
        cfg = self.config
        try:
            for stream, message_ids in self._by_stream(messages).items():
                self._client().xclaim(  # type: ignore[no-untyped-call]
                    stream,
                    cfg.consumer_group,
                    cfg.consumer_name,
                    0,
                    message_ids,
                    justid=True,
                )
        except (RedisConnectionError, RedisTimeoutError):
            # Redis is away too: the messages may be claimed again later, which only
            # costs a delivery.
            logger.debug("Could not renew the claim on %d messages", len(messages))

    def _handle(self, message: StreamMessage, data: object) -> BaseException | None:
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
                if is_database_outage(exc):
                    return _DatabaseUnavailable(exc)
                self._stats.add(handler_errors=1)
                return exc
        return None

    def _dead_letter(self, message: StreamMessage, error: str) -> None:
        cfg = self.config
        entry = {
            **message.fields,
            "error": error,
            "original_stream": self._stream_of(message),
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
        pipe = self._client().pipeline(transaction=True)
        pipe.xadd(cfg.dead_letter_stream, entry)
        pipe.xack(self._stream_of(message), cfg.consumer_group, message.message_id)
        pipe.execute()
        self._stats.add(messages_dead_lettered=1)

    def dead_letters(self, count: int) -> list[tuple[str, dict[str, str]]]:
        return [
            (str(mid), dict(f))
            for mid, f in self._client().xrange(self.config.dead_letter_stream, count=count)
        ]

    def run(self, stop: threading.Event) -> None:
        """The consumer loop: until ``stop`` is set, through Redis and database outages."""
        cfg = self.config
        recovery_every = min(max(cfg.claim_idle_ms / 2000, 0.05), 30.0)
        try:
            self._loop(stop, recovery_every)
        finally:
            self.release_partitions()

    def _loop(self, stop: threading.Event, recovery_every: float) -> None:
        cfg = self.config
        failures = 0
        while not stop.is_set():
            try:
                if time.monotonic() - self._last_recovery >= recovery_every:
                    self._last_recovery = time.monotonic()
                    self.recover_pending(stop=stop)
                handled = self.read_new(cfg.batch_size, cfg.block_ms, stop)
                failures = 0
                if handled < cfg.batch_size:
                    # As the projection runner does between polls; not between the
                    # batches of a backlog, where CONN_MAX_AGE = 0 would mean a new
                    # connection per batch.
                    close_stale_connections()
            except _Stopped:
                return
            except (RedisConnectionError, RedisTimeoutError) as exc:
                failures += 1
                self._group_ready = False
                self._stats.add(reconnections=1)
                delay = full_jitter_delay(
                    failures, cfg.reconnect_backoff, cfg.reconnect_backoff_max
                )
                logger.warning("Redis unavailable (%s); retrying in %.1fs", exc, delay)
                stop.wait(delay)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._group_ready = False
                logger.warning("Consumer group vanished; recreating it")


def _describe(error: BaseException) -> str:
    if isinstance(error, _Poison):
        return str(error)
    return f"{type(error).__name__}: {error}"


class _Poison(EventBusError):
    """A message that no retry can fix (unknown type, undecodable, too many deliveries)."""


class _DatabaseUnavailable(Exception):
    """A handler failed because the database is unavailable: not the handler's failure."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _Stopped(Exception):
    """The consumer loop was asked to stop while it waited for the database."""


__all__ = ["StreamConsumer"]
