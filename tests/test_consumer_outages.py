"""The Redis consumer when the database goes away: waited out, never counted against
the message.

The last test restarts a PostgreSQL cluster of its own under a ``consume_events``
process; the shared servers are never stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest
from django.db import OperationalError

from django_eventsource import DomainEvent
from django_eventsource.bus.redis import RedisEventBus, RedisEventBusConfig
from tests.factories import account_history
from tests.services import ThrowawayPostgres

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent


def lost_connection() -> OperationalError:
    """What Django raises when the server goes away under a query."""
    error = OperationalError("server closed the connection unexpectedly")
    error.__cause__ = psycopg.OperationalError("server closed the connection unexpectedly")
    return error


def locked_database() -> OperationalError:
    """An OperationalError on a connection that works: the handler's own failure."""
    return OperationalError("database is locked")


def wait_until(
    condition: Callable[[], object],
    timeout: float = 30.0,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` s or if ``process`` ended."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            pytest.fail(f"the process exited with {process.returncode}: {stderr}")
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.02)


@pytest.fixture
def bus(redis_url: str) -> Iterator[RedisEventBus]:
    config = RedisEventBusConfig(
        redis_url=redis_url,
        stream_prefix=f"test-{uuid4().hex}",
        consumer_name="consumer-a",
        max_retries=1,
        block_ms=100,
        reconnect_backoff=0.01,
        reconnect_backoff_max=0.05,
    )
    bus = RedisEventBus(config)
    yield bus
    bus.client.delete(config.stream_name, config.dead_letter_stream)
    bus.close()


def failing_first(
    times: int, error: Callable[[], Exception], seen: list[UUID]
) -> Callable[[DomainEvent], None]:
    """A handler that raises ``error()`` on its first ``times`` calls, then records."""
    remaining = [times]

    def handle(event: DomainEvent) -> None:
        if remaining[0] > 0:
            remaining[0] -= 1
            raise error()
        seen.append(event.event_id)

    return handle


def test_the_consumer_loop_waits_out_a_database_outage_without_counting_a_delivery(
    bus: RedisEventBus,
) -> None:
    seen: list[UUID] = []
    bus.subscribe_to_all_events(failing_first(3, lost_connection, seen))
    events = account_history(deposits=2)
    bus.publish(events)
    loop = threading.Thread(target=bus.start_consuming)
    loop.start()
    try:
        wait_until(lambda: len(seen) == len(events))
    finally:
        bus.stop_consuming()
        loop.join(timeout=5)

    # max_retries is 1: a failure counted against the first message would have
    # dead-lettered it, and the next ones would have overtaken it.
    assert seen == [e.event_id for e in events]
    assert bus.get_dead_letters() == []
    stats = bus.get_stats()
    assert (stats.database_retries, stats.handler_errors) == (3, 0)
    assert stats.messages_acknowledged == len(events)


def test_a_database_error_on_a_working_connection_counts_as_the_handlers_failure(
    bus: RedisEventBus,
) -> None:
    seen: list[UUID] = []
    bus.subscribe_to_all_events(failing_first(1, locked_database, seen))
    event = account_history(deposits=0)[0]
    bus.publish([event])

    bus.consume_once()

    [(_, dead_letter)] = bus.get_dead_letters()
    assert dead_letter["event_id"] == str(event.event_id)
    assert "database is locked" in dead_letter["error"]
    assert bus.get_stats().database_retries == 0


def test_a_single_pass_stops_at_a_database_outage_and_leaves_the_message_pending(
    bus: RedisEventBus,
) -> None:
    seen: list[UUID] = []

    def fail_on_the_second(event: DomainEvent) -> None:
        if seen:
            raise lost_connection()
        seen.append(event.event_id)

    bus.subscribe_to_all_events(fail_on_the_second)
    events = account_history(deposits=1)
    bus.publish(events)

    with pytest.raises(OperationalError, match="closed the connection"):
        bus.consume_once()

    cfg = bus.config
    pending = bus.client.xpending_range(cfg.stream_name, cfg.consumer_group, "-", "+", 10)
    assert seen == [events[0].event_id]
    assert [p["times_delivered"] for p in pending] == [1]
    assert bus.get_dead_letters() == []


def handled_event_ids(cluster: ThrowawayPostgres) -> list[str]:
    with psycopg.connect(cluster.dsn) as connection:
        rows = connection.execute("SELECT event_id FROM testapp_handledevent").fetchall()
    return [str(row[0]) for row in rows]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_consume_events_outlives_a_database_restart_and_dead_letters_nothing(
    throwaway_postgres: ThrowawayPostgres, redis_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "consumer.log"
    config = RedisEventBusConfig(redis_url=redis_url, stream_prefix=f"test-{uuid4().hex}")
    settings = {
        # A persistent connection, as in production: after the restart it is broken.
        "DATABASES": {"default": throwaway_postgres.database_settings(CONN_MAX_AGE=None)},
        "EVENTSOURCE_EVENT_BUS": "redis",
        "EVENTSOURCE_REDIS_URL": redis_url,
        "EVENTSOURCE_REDIS_STREAM_PREFIX": config.stream_prefix,
        # Short enough that counted failures would dead-letter within the outage.
        "EVENTSOURCE_REDIS_CLAIM_IDLE_MS": 400,
        "EVENTSOURCE_REDIS_MAX_RETRIES": 2,
        "EVENTSOURCE_EVENT_HANDLERS": ["tests.test_consume_events.record_handled"],
        "LOGGING": {
            "version": 1,
            "handlers": {"file": {"class": "logging.FileHandler", "filename": str(log)}},
            "loggers": {"django_eventsource": {"handlers": ["file"], "level": "WARNING"}},
        },
    }
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "EVENTSOURCE_TEST_SETTINGS": json.dumps(settings),
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run(
        [*manage, "migrate", "--run-syncdb", "--verbosity", "0"], cwd=ROOT, env=env, check=True
    )
    consumer = subprocess.Popen(
        [*manage, "consume_events", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    publisher = RedisEventBus(config)
    try:
        before, during = account_history(deposits=4), account_history(deposits=4)
        publisher.publish(before)
        wait_until(lambda: len(handled_event_ids(throwaway_postgres)) == 5, process=consumer)

        throwaway_postgres.stop()
        try:
            publisher.publish(during)
            # Several attempts fail while the database is down (or, if they counted,
            # the first message reaches the dead-letter stream).
            wait_until(
                lambda: (
                    log.read_text().count("Database unavailable") >= 3
                    or publisher.get_dead_letters()
                ),
                process=consumer,
            )
        finally:
            throwaway_postgres.start()
        wait_until(
            lambda: (
                len(handled_event_ids(throwaway_postgres)) == 10 or publisher.get_dead_letters()
            ),
            process=consumer,
        )

        assert publisher.get_dead_letters() == []
        handled = Counter(handled_event_ids(throwaway_postgres))
        assert handled == Counter(str(e.event_id) for e in before + during)
        consumer.send_signal(signal.SIGTERM)
        _, stderr = consumer.communicate(timeout=30)
        assert consumer.returncode == 0, stderr.decode()
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
        publisher.client.delete(config.stream_name, config.dead_letter_stream)
        publisher.close()
