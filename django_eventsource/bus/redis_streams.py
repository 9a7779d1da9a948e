"""The Redis Streams side of the Redis bus: configuration, entries, connections, counters.

Layout: with one partition (the default) every event goes to ONE stream,
``<stream_prefix>:events``, so the events of an aggregate keep their order in Redis
whatever their aggregate type. With ``partitions = P > 1`` an event goes to the stream
``<stream_prefix>:events:<n>``, ``n = stable_bucket(aggregate_id, P)``: all the events of an
aggregate still share one stream, and ``redis_partitions`` lets one consumer of the group
at a time read each stream. Each entry carries
``event_id`` (the consumers' idempotency key), ``event_type``, ``aggregate_type``,
``aggregate_id``, ``aggregate_version`` and ``data``, the JSON of ``event.to_dict()``.
Messages that cannot be processed go to ``<stream_prefix>:dlq``.

The ``redis`` package is imported here and only here to decide ``REDIS_AVAILABLE``;
without it this module still imports and no bus can be created.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .._runtime import worker_id
from ..events.serialization import StoredEventData
from ..partitioning import stable_bucket

try:
    import redis as redis_lib
    from redis.backoff import FullJitterBackoff
    from redis.retry import Retry
except ImportError:  # pragma: no cover - exercised only without the redis extra
    REDIS_AVAILABLE = False
else:
    REDIS_AVAILABLE = True

if TYPE_CHECKING:
    from redis import Redis

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
    ``partitions`` is the number of event streams (``EVENTSOURCE_REDIS_PARTITIONS``) and
    ``partition_lease`` the seconds a consumer's hold on a partition lasts unless renewed.
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
    partitions: int = 1
    partition_lease: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.partitions, bool) or not isinstance(self.partitions, int):
            raise ValueError(f"partitions must be an integer, got {self.partitions!r}")
        if self.partitions < 1:
            raise ValueError(f"partitions must be at least 1, got {self.partitions}")
        if not self.partition_lease > 0:
            raise ValueError(f"partition_lease must be positive, got {self.partition_lease!r}")

    @property
    def stream_name(self) -> str:
        """The events stream with one partition; the prefix of the partition streams."""
        return f"{self.stream_prefix}:{self.stream_suffix}"

    def partition_stream(self, partition: int) -> str:
        """The stream of partition ``partition`` (``stream_name`` with one partition)."""
        if self.partitions == 1:
            return self.stream_name
        return f"{self.stream_name}:{partition}"

    @property
    def stream_names(self) -> list[str]:
        """Every events stream, in partition order."""
        return [self.partition_stream(p) for p in range(self.partitions)]

    def stream_for(self, aggregate_id: str) -> str:
        """The stream of the events of the aggregate ``aggregate_id`` (its text form)."""
        if self.partitions == 1:
            return self.stream_name
        return self.partition_stream(stable_bucket(aggregate_id, self.partitions))

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
            "partitions": conf.REDIS_PARTITIONS,
            "partition_lease": conf.REDIS_PARTITION_LEASE,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def connect(config: RedisEventBusConfig) -> Redis[str]:
    """A redis-py client for ``config`` (it connects on first use and reconnects by itself)."""
    read_timeout = max(config.socket_timeout, config.block_ms / 1000 + 2)
    # No PING health checks: a dead connection surfaces as a connection error, which the
    # retry policy and the consumer loop handle.
    return redis_lib.Redis.from_url(
        config.redis_url,
        decode_responses=True,
        socket_timeout=read_timeout,
        socket_connect_timeout=config.socket_connect_timeout,
        retry=Retry(FullJitterBackoff(cap=1.0, base=0.05), config.connection_retries),
    )


@dataclass(frozen=True)
class RedisEventBusStats:
    """Counters of one ``RedisEventBus`` since it was created.

    ``events_published`` counts events Redis has stored. ``background_pending`` is the
    number of events handed to ``publish(..., background=True)`` and not sent yet;
    ``background_dropped`` those that never reached Redis (it refused them, or
    ``shutdown`` ran out of time first). ``database_retries`` counts handler runs cut
    short by a database outage and run again (they are not ``handler_errors``).
    """

    events_published: int = 0
    messages_received: int = 0
    messages_acknowledged: int = 0
    handler_errors: int = 0
    messages_recovered: int = 0
    messages_dead_lettered: int = 0
    reconnections: int = 0
    background_pending: int = 0
    background_dropped: int = 0
    database_retries: int = 0


class StatsCounter:
    """The running ``RedisEventBusStats`` of one bus.

    Its publishing and consuming halves both count, possibly from different threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats = RedisEventBusStats()

    def add(self, **increments: int) -> None:
        """Add to the named counters."""
        with self._lock:
            self._stats = replace(
                self._stats,
                **{name: getattr(self._stats, name) + n for name, n in increments.items()},
            )

    def snapshot(self) -> RedisEventBusStats:
        """The counters as they stand."""
        with self._lock:
            return self._stats


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


@dataclass(frozen=True)
class StreamMessage:
    """One entry read from an events stream, and how often it has been delivered."""

    message_id: str
    fields: dict[str, str]
    deliveries: int
    #: The stream it was read from (a partition's stream).
    stream: str = ""

    def data(self) -> object:
        """The decoded ``data`` field, or ``None`` when it is not JSON."""
        try:
            return json.loads(self.fields.get("data", ""))
        except ValueError:
            return None


__all__ = [
    "REDIS_AVAILABLE",
    "RedisEventBusConfig",
    "RedisEventBusStats",
    "StatsCounter",
    "StreamMessage",
    "connect",
    "serialize_fields",
]
