"""Every ``EVENTSOURCE_*`` setting with its default, read from Django settings on each access.

``conf.MAX_RETRIES`` reads ``settings.EVENTSOURCE_MAX_RETRIES`` (or the default) every time
it is used, never at import time, so ``override_settings`` works. Each setting is a typed
attribute of :class:`Settings`; numbers are converted to their type on the way out, and the
system checks (``django_eventsource.E003``) report values that cannot be.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from django.conf import settings

T = TypeVar("T")


class Setting(Generic[T]):
    """One ``EVENTSOURCE_<NAME>`` setting: its default and the type it is read as."""

    def __init__(self, default: T, convert: Callable[[Any], T] | None = None) -> None:
        self.default = default
        self.convert = convert
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Setting[T]: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> T: ...
    def __get__(self, obj: object | None, objtype: type | None = None) -> Setting[T] | T:
        if obj is None:
            return self
        value = getattr(settings, f"EVENTSOURCE_{self.name}", self.default)
        if self.convert is None or value is None:
            return value
        return self.convert(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


class Settings:
    """The app's settings, each read at access time (see the module docstring)."""

    # Dotted paths of the Projection classes run by run_projections.
    PROJECTIONS: Setting[list[str]] = Setting([])
    # None, "memory", "redis" or the dotted path of an EventBus subclass / factory.
    EVENT_BUS: Setting[str | None] = Setting(None)
    # Redis connection URL for the Redis Streams bus.
    REDIS_URL: Setting[str] = Setting("redis://127.0.0.1:6379/0")
    # Prefix of the Redis stream names.
    REDIS_STREAM_PREFIX: Setting[str] = Setting("eventsource")
    # Consumer group used by consume_events.
    REDIS_CONSUMER_GROUP: Setting[str] = Setting("django-eventsource")
    # Approximate maximum length of each Redis stream (MAXLEN ~); None keeps everything.
    REDIS_MAX_STREAM_LENGTH: Setting[int | None] = Setting(100_000, _optional_int)
    # Deliveries of one message before it goes to the dead-letter stream.
    REDIS_MAX_RETRIES: Setting[int] = Setting(5, int)
    # Milliseconds a message may stay pending before another consumer claims it.
    REDIS_CLAIM_IDLE_MS: Setting[int] = Setting(60_000, int)
    # Partitions (streams) of the Redis bus; an aggregate's events all go to one, and each
    # partition has at most one consumer of the group at a time. 1 = a single stream.
    REDIS_PARTITIONS: Setting[int] = Setting(1, int)
    # Seconds a consumer's hold on a partition lasts unless renewed (partitions > 1): a
    # dead consumer's partitions are taken over after at most this long.
    REDIS_PARTITION_LEASE: Setting[float] = Setting(10.0, float)
    # Write one outbox row per event in the append transaction.
    OUTBOX_ENABLED: Setting[bool] = Setting(False, bool)
    # Rows claimed per publish_outbox batch.
    OUTBOX_BATCH_SIZE: Setting[int] = Setting(100, int)
    # Seconds after an outbox row's first failed publishing attempt from which its next
    # failed attempt marks it failed.
    OUTBOX_GIVE_UP_AFTER: Setting[float] = Setting(3600.0, float)
    # Deprecated: when set, a row is also marked failed after this many failed attempts.
    OUTBOX_MAX_ATTEMPTS: Setting[int | None] = Setting(None, _optional_int)
    # Seconds after which an unfinished claim on an outbox row is taken over.
    OUTBOX_CLAIM_TIMEOUT: Setting[float] = Setting(300.0, float)
    # Seconds a relay's claim lasts unless renewed: a live relay renews its claims every
    # third of it, so a dead relay's rows are claimed again after at most this long.
    # A claim is never renewed past OUTBOX_CLAIM_TIMEOUT.
    OUTBOX_CLAIM_LEASE: Setting[float] = Setting(10.0, float)
    # Published outbox rows older than this many days are deleted by publish_outbox.
    OUTBOX_RETENTION_DAYS: Setting[int] = Setting(7, int)
    # Base delay in seconds of the outbox relay's backoff (full jitter) after a failed attempt.
    OUTBOX_RETRY_BACKOFF: Setting[float] = Setting(1.0, float)
    # Upper bound in seconds of one outbox backoff delay.
    OUTBOX_RETRY_BACKOFF_MAX: Setting[float] = Setting(300.0, float)
    # Dotted paths of EventSubscriber classes or handler functions run by consume_events.
    EVENT_HANDLERS: Setting[list[str]] = Setting([])
    # Events read per projection batch.
    PROJECTION_BATCH_SIZE: Setting[int] = Setting(500, int)
    # Seconds a run_projections lease on a projection lasts (non-PostgreSQL databases);
    # renewed before every batch, taken over by another runner once it expires.
    PROJECTION_LEASE_SECONDS: Setting[float] = Setting(30.0, float)
    # How run_projections keeps one runner per projection on PostgreSQL: "advisory"
    # (session advisory locks, LISTEN wake-ups) or "lease" (Checkpoint leases and polling,
    # for transaction-mode poolers such as PgBouncer's pool_mode = transaction).
    PROJECTION_LOCK: Setting[str] = Setting("advisory", str)
    # Seconds between polls of the loops (run_projections, publish_outbox, consume_events).
    POLL_INTERVAL: Setting[float] = Setting(1.0, float)
    # Attempts of a failing projection handler before the event is dead-lettered.
    MAX_RETRIES: Setting[int] = Setting(3, int)
    # Base delay in seconds of the exponential backoff between attempts.
    RETRY_BACKOFF: Setting[float] = Setting(0.1, float)
    # Upper bound in seconds of one backoff delay.
    RETRY_BACKOFF_MAX: Setting[float] = Setting(30.0, float)
    # Consecutive dead-lettered events after which a projection pauses (0: never pauses).
    PROJECTION_PAUSE_AFTER: Setting[int] = Setting(10, int)
    # Emit OpenTelemetry spans; None means "when opentelemetry is importable".
    TRACING: Setting[bool | None] = Setting(None)
    # Health view thresholds.
    HEALTH_MAX_LAG_EVENTS: Setting[int] = Setting(10_000, int)
    HEALTH_MAX_LAG_SECONDS: Setting[float] = Setting(300.0, float)
    HEALTH_MAX_DEAD_LETTERS: Setting[int] = Setting(0, int)
    # Show the SQL of reader-blocking sessions in the health view, to active staff users only.
    HEALTH_SHOW_QUERIES: Setting[bool] = Setting(False, bool)
    # Seconds readers may be held back by an open transaction before it is logged.
    HELD_BACK_WARNING_SECONDS: Setting[float] = Setting(60.0, float)
    # Request header carrying the correlation id (EventMetadataMiddleware).
    CORRELATION_ID_HEADER: Setting[str] = Setting("X-Correlation-ID")

    def raw(self, name: str) -> Any:
        """``EVENTSOURCE_<name>`` exactly as configured (or its default), unconverted."""
        return getattr(settings, f"EVENTSOURCE_{name}", self.default(name))

    def default(self, name: str) -> Any:
        """The value used when ``EVENTSOURCE_<name>`` is not set."""
        setting = vars(Settings).get(name)
        if not isinstance(setting, Setting):
            raise AttributeError(f"Unknown django_eventsource setting {name!r}")
        return setting.default

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not settings.
        raise AttributeError(f"Unknown django_eventsource setting {name!r}")

    def __dir__(self) -> list[str]:
        return sorted(DEFAULTS)


#: Every setting's default, by name without the ``EVENTSOURCE_`` prefix.
DEFAULTS: dict[str, Any] = {
    name: value.default for name, value in vars(Settings).items() if isinstance(value, Setting)
}

conf = Settings()

__all__ = ["DEFAULTS", "Setting", "Settings", "conf"]
