"""An event handler for consumer subprocesses: records what it handled, in Redis.

``EVENTSOURCE_TEST_RECORD_KEY`` names a Redis list; every handled event is appended as
``aggregate_id version event_id pid time``. ``EVENTSOURCE_TEST_HANDLER_WAIT_MS`` (the
benchmark's I/O-bound case) makes each call wait that long first, as a handler that
writes to another service does. Used by ``tests/test_redis_partitions.py``
and ``benchmarks/bench_scale.py`` (``EVENTSOURCE_EVENT_HANDLERS``).
"""

from __future__ import annotations

import os
import time

import redis
from django.conf import settings

import tests.testapp.domain  # noqa: F401  (registers the event types handled)
from django_eventsource import DomainEvent

_client: redis.Redis[str] | None = None


def record(event: DomainEvent) -> None:
    global _client
    wait_ms = float(os.environ.get("EVENTSOURCE_TEST_HANDLER_WAIT_MS", "0"))
    if wait_ms:
        time.sleep(wait_ms / 1000)
    if _client is None:
        _client = redis.Redis.from_url(settings.EVENTSOURCE_REDIS_URL, decode_responses=True)
    entry = (
        f"{event.aggregate_id} {event.aggregate_version} {event.event_id} "
        f"{os.getpid()} {time.time():.6f}"
    )
    _client.rpush(os.environ["EVENTSOURCE_TEST_RECORD_KEY"], entry)
