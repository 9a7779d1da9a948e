"""Every ``EVENTSOURCE_*`` setting with its default, read from Django settings on each access.

Reading at call time (never at import time) keeps ``override_settings`` working.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Dotted paths of the Projection classes run by run_projections.
    "PROJECTIONS": [],
    # None, "memory", "redis" or the dotted path of an EventBus subclass / factory.
    "EVENT_BUS": None,
    # Redis connection URL for the Redis Streams bus.
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    # Prefix of the Redis stream names.
    "REDIS_STREAM_PREFIX": "eventsource",
    # Consumer group used by consume_events.
    "REDIS_CONSUMER_GROUP": "django-eventsource",
    # Approximate maximum length of each Redis stream (MAXLEN ~); None keeps everything.
    "REDIS_MAX_STREAM_LENGTH": 100_000,
    # Deliveries of one message before it goes to the dead-letter stream.
    "REDIS_MAX_RETRIES": 5,
    # Milliseconds a message may stay pending before another consumer claims it.
    "REDIS_CLAIM_IDLE_MS": 60_000,
    # Write one outbox row per event in the append transaction.
    "OUTBOX_ENABLED": False,
    # Rows claimed per publish_outbox batch.
    "OUTBOX_BATCH_SIZE": 100,
    # Publishing attempts before an outbox row is marked failed.
    "OUTBOX_MAX_ATTEMPTS": 10,
    # Seconds after which an unfinished claim on an outbox row is taken over.
    "OUTBOX_CLAIM_TIMEOUT": 300.0,
    # Published outbox rows older than this many days are deleted by publish_outbox.
    "OUTBOX_RETENTION_DAYS": 7,
    # Base delay in seconds of the outbox relay's backoff (full jitter) after a failed attempt.
    "OUTBOX_RETRY_BACKOFF": 1.0,
    # Upper bound in seconds of one outbox backoff delay.
    "OUTBOX_RETRY_BACKOFF_MAX": 300.0,
    # Dotted paths of EventSubscriber classes or handler functions run by consume_events.
    "EVENT_HANDLERS": [],
    # Events read per projection batch.
    "PROJECTION_BATCH_SIZE": 500,
    # Seconds a run_projections lease on a projection lasts (non-PostgreSQL databases);
    # renewed before every batch, taken over by another runner once it expires.
    "PROJECTION_LEASE_SECONDS": 30.0,
    # Seconds between polls of the loops (run_projections, publish_outbox, consume_events).
    "POLL_INTERVAL": 1.0,
    # Attempts of a failing projection handler before the event is dead-lettered.
    "MAX_RETRIES": 3,
    # Base delay in seconds of the exponential backoff between attempts.
    "RETRY_BACKOFF": 0.1,
    # Upper bound in seconds of one backoff delay.
    "RETRY_BACKOFF_MAX": 30.0,
    # Emit OpenTelemetry spans; None means "when opentelemetry is importable".
    "TRACING": None,
    # Health view thresholds.
    "HEALTH_MAX_LAG_EVENTS": 10_000,
    "HEALTH_MAX_LAG_SECONDS": 300.0,
    "HEALTH_MAX_DEAD_LETTERS": 0,
    # Seconds readers may be held back by an open transaction before it is logged.
    "HELD_BACK_WARNING_SECONDS": 60.0,
    # Request header carrying the correlation id (EventMetadataMiddleware).
    "CORRELATION_ID_HEADER": "X-Correlation-ID",
}


class Settings:
    """Attribute access to the settings: ``conf.MAX_RETRIES`` reads
    ``settings.EVENTSOURCE_MAX_RETRIES``, or its default, at each access."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown django_eventsource setting {name!r}")
        return getattr(settings, f"EVENTSOURCE_{name}", DEFAULTS[name])

    def default(self, name: str) -> Any:
        """The value used when ``EVENTSOURCE_<name>`` is not set."""
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown django_eventsource setting {name!r}")
        return DEFAULTS[name]

    def __dir__(self) -> list[str]:
        return sorted(DEFAULTS)


conf = Settings()

__all__ = ["DEFAULTS", "Settings", "conf"]
