"""RedisEventBus on a real Redis: publishing, consumer groups, recovery, dead letters."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest
from asgiref.sync import async_to_sync

from django_eventsource import DomainEvent
from django_eventsource.bus import redis as redis_bus
from django_eventsource.bus.redis import RedisEventBus, RedisEventBusConfig
from django_eventsource.exceptions import EventBusError, RedisNotAvailableError
from tests.factories import account_history
from tests.testapp.domain import AccountOpened, MoneyDeposited

pytestmark = pytest.mark.redis


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.01)


@pytest.fixture
def config(redis_url: str) -> Iterator[RedisEventBusConfig]:
    cfg = RedisEventBusConfig(
        redis_url=redis_url,
        stream_prefix=f"test-{uuid4().hex}",
        consumer_group="group",
        consumer_name="consumer-a",
        claim_idle_ms=100,
        max_retries=3,
        block_ms=100,
    )
    yield cfg
    cleaner = RedisEventBus(cfg)
    cleaner.client.delete(cfg.stream_name, cfg.dead_letter_stream)
    cleaner.close()


def test_published_events_are_stream_entries_with_id_type_and_json(
    make_bus: Callable[..., RedisEventBus],
) -> None:
    bus = make_bus()
    events = account_history(deposits=1)

    bus.publish(events)

    entries = bus.client.xrange(bus.config.stream_name)
    assert [f["event_id"] for _, f in entries] == [str(e.event_id) for e in events]
    assert entries[0][1]["event_type"] == "AccountOpened"
    assert json.loads(entries[1][1]["data"]) == events[1].to_dict()
    assert bus.get_stats().events_published == 2


def test_handlers_receive_events_in_order_and_messages_are_acknowledged(
    make_bus: Callable[..., RedisEventBus],
) -> None:
    bus = make_bus()
    seen: list[DomainEvent] = []
    opened: list[UUID] = []
    bus.subscribe_to_all_events(seen.append)
    bus.subscribe(AccountOpened, lambda e: opened.append(e.aggregate_id))
    events = account_history(deposits=3)
    bus.publish(events)

    handled = bus.consume_once()

    assert handled == 4
    assert seen == events
    assert opened == [events[0].aggregate_id]
    pending = bus.client.xpending(bus.config.stream_name, bus.config.consumer_group)
    assert pending["pending"] == 0


def test_async_handlers_and_handler_objects_are_supported(
    make_bus: Callable[..., RedisEventBus],
) -> None:
    bus = make_bus()
    seen: list[str] = []

    async def on_deposit(event: DomainEvent) -> None:
        seen.append(f"async:{event.aggregate_version}")

    class Auditor:
        def handle(self, event: DomainEvent) -> None:
            seen.append(f"object:{event.aggregate_version}")

    bus.subscribe(MoneyDeposited, on_deposit)
    bus.subscribe("MoneyDeposited", Auditor())
    bus.publish(account_history(deposits=1))

    bus.consume_once()

    assert seen == ["async:2", "object:2"]


def test_a_group_created_after_publishing_still_sees_earlier_events(
    make_bus: Callable[..., RedisEventBus],
) -> None:
    make_bus().publish(account_history(deposits=1))
    consumer = make_bus()
    seen: list[DomainEvent] = []
    consumer.subscribe_to_all_events(seen.append)

    consumer.consume_once()

    assert len(seen) == 2


def test_a_message_read_by_a_consumer_that_died_is_processed_by_another(
    make_bus: Callable[..., RedisEventBus],
) -> None:
    publisher = make_bus()
    event = account_history(deposits=0)[0]
    publisher.publish([event])
    cfg = publisher.config
    publisher.ensure_group()
    # Consumer A reads the message and "dies" before acknowledging it.
    publisher.client.xreadgroup(cfg.consumer_group, "consumer-a", {cfg.stream_name: ">"})
    survivor = make_bus(consumer_name="consumer-b")
    seen: list[UUID] = []
    survivor.subscribe_to_all_events(lambda e: seen.append(e.event_id))

    wait_until(lambda: survivor.consume_once() > 0)

    assert seen == [event.event_id]
    assert survivor.get_stats().messages_recovered == 1
    assert survivor.client.xpending(cfg.stream_name, cfg.consumer_group)["pending"] == 0


def test_a_failing_handler_is_retried_then_dead_lettered_with_its_error(
    make_bus: Callable[..., RedisEventBus],
) -> None:
    bus = make_bus()
    attempts: list[int] = []

    def explode(event: DomainEvent) -> None:
        attempts.append(1)
        raise RuntimeError("ledger closed")

    bus.subscribe_to_all_events(explode)
    event = account_history(deposits=0)[0]
    bus.publish([event])

    wait_until(lambda: (bus.consume_once(), len(bus.get_dead_letters()))[1] == 1)

    assert len(attempts) == bus.config.max_retries
    ((_, letter),) = bus.get_dead_letters()
    assert letter["event_id"] == str(event.event_id)
    assert "ledger closed" in letter["error"]
    assert letter["deliveries"] == "3"
    assert json.loads(letter["data"]) == event.to_dict()
    pending = bus.client.xpending(bus.config.stream_name, bus.config.consumer_group)
    assert pending["pending"] == 0


def test_a_later_success_acknowledges_the_message(make_bus: Callable[..., RedisEventBus]) -> None:
    bus = make_bus()
    calls: list[int] = []

    def flaky(event: DomainEvent) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("transient")

    bus.subscribe_to_all_events(flaky)
    bus.publish(account_history(deposits=0))

    wait_until(lambda: (bus.consume_once(), len(calls))[1] == 2)

    assert bus.get_dead_letters() == []
    assert bus.client.xpending(bus.config.stream_name, bus.config.consumer_group)["pending"] == 0


def test_unknown_event_types_go_to_the_dead_letter_stream(
    make_bus: Callable[..., RedisEventBus],
) -> None:
    bus = make_bus()
    data = {**account_history(deposits=0)[0].to_dict(), "event_type": "Teleported"}
    bus.publish_serialized([data])
    seen: list[DomainEvent] = []
    bus.subscribe_to_all_events(seen.append)

    assert bus.consume_once() == 1

    assert seen == []
    ((_, letter),) = bus.get_dead_letters()
    assert letter["event_type"] == "Teleported"
    assert "Unknown event type 'Teleported'" in letter["error"]


def test_streams_are_trimmed_to_about_the_maximum_length(
    make_bus: Callable[..., RedisEventBus],
) -> None:
    bus = make_bus(max_stream_length=100)
    for _ in range(10):
        bus.publish(account_history(deposits=99))

    assert 100 <= bus.stream_length() < 1000


def test_the_consumer_loop_runs_until_stopped(make_bus: Callable[..., RedisEventBus]) -> None:
    bus = make_bus()
    seen: list[DomainEvent] = []
    bus.subscribe_to_all_events(seen.append)
    loop = threading.Thread(target=bus.start_consuming)
    loop.start()
    try:
        bus.publish(account_history(deposits=2))
        wait_until(lambda: len(seen) == 3)
    finally:
        bus.stop_consuming()
        loop.join(timeout=5)

    assert not loop.is_alive()


def test_the_consumer_loop_survives_redis_going_away(
    make_bus: Callable[..., RedisEventBus],
) -> None:
    bus = make_bus(redis_url="redis://127.0.0.1:1/0", connection_retries=0, reconnect_backoff=0.01)
    loop = threading.Thread(target=bus.start_consuming)
    loop.start()
    try:
        wait_until(lambda: bus.get_stats().reconnections >= 2)
    finally:
        bus.stop_consuming()
        loop.join(timeout=5)

    assert not loop.is_alive()


def test_publishing_to_an_unreachable_redis_raises_a_bus_error(
    make_bus: Callable[..., RedisEventBus],
) -> None:
    from django_eventsource.exceptions import EventBusError

    bus = make_bus(redis_url="redis://127.0.0.1:1/0", connection_retries=0)

    with pytest.raises(EventBusError, match="unavailable"):
        bus.publish(account_history(deposits=0))


def test_without_the_redis_package_the_bus_raises_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redis_bus, "REDIS_AVAILABLE", False)

    with pytest.raises(RedisNotAvailableError, match="pip install"):
        RedisEventBus(RedisEventBusConfig())


def test_the_default_consumer_name_names_this_process_and_is_shared_by_its_buses() -> None:
    first, second = RedisEventBusConfig(), RedisEventBusConfig()

    host, pid, token = first.consumer_name.split(":")

    assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    assert token
    assert second.consumer_name == first.consumer_name


def test_async_twins_publish_and_consume(make_bus: Callable[..., RedisEventBus]) -> None:
    bus = make_bus()
    seen: list[DomainEvent] = []
    bus.subscribe_to_all_events(seen.append)

    async def publish_and_consume() -> int:
        await bus.apublish(account_history(deposits=1))
        return await bus.aconsume_once()

    handled = async_to_sync(publish_and_consume)()

    assert handled == 2 and len(seen) == 2


# -- background publishing and shutdown ------------------------------------------------


def event_ids(bus: RedisEventBus) -> list[str]:
    return [fields["event_id"] for _, fields in bus.client.xrange(bus.config.stream_name)]


def test_background_publishes_reach_the_stream_in_order_once_shutdown_returns(
    make_bus: Callable[..., RedisEventBus],
) -> None:
    bus = make_bus()
    batches = [account_history(deposits=2) for _ in range(5)]
    for events in batches:
        bus.publish(events, background=True)

    bus.shutdown(timeout=10)

    assert event_ids(make_bus()) == [str(e.event_id) for events in batches for e in events]
    stats = bus.get_stats()
    assert (stats.events_published, stats.background_pending, stats.background_dropped) == (
        15,
        0,
        0,
    )


def test_a_background_publish_returns_while_redis_is_still_busy_with_it(
    make_bus: Callable[..., RedisEventBus], monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = make_bus()
    sending, release = threading.Event(), threading.Event()
    real_pipeline = bus.client.pipeline

    def slow_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        def execute(*a: Any, **k: Any) -> Any:
            sending.set()
            release.wait(5)
            return real_execute(*a, **k)

        monkeypatch.setattr(pipe, "execute", execute)
        return pipe

    monkeypatch.setattr(bus.client, "pipeline", slow_pipeline)
    events = account_history(deposits=1)

    bus.publish(events, background=True)

    assert not release.is_set()
    assert sending.wait(5)
    assert bus.get_stats().background_pending == 2
    release.set()
    bus.shutdown(timeout=10)
    assert event_ids(make_bus()) == [str(e.event_id) for e in events]


def test_shutdown_drops_the_background_events_still_queued_when_its_timeout_passes(
    make_bus: Callable[..., RedisEventBus],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = make_bus()
    sending, release = threading.Event(), threading.Event()
    real_pipeline = bus.client.pipeline

    def slow_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        def execute(*a: Any, **k: Any) -> Any:
            sending.set()
            release.wait(5)
            return real_execute(*a, **k)

        monkeypatch.setattr(pipe, "execute", execute)
        return pipe

    monkeypatch.setattr(bus.client, "pipeline", slow_pipeline)
    sent, queued = account_history(deposits=0), account_history(deposits=1)
    bus.publish(sent, background=True)
    assert sending.wait(5)
    bus.publish(queued, background=True)
    caplog.set_level(logging.WARNING, logger="django_eventsource")

    bus.shutdown(timeout=0.1)
    release.set()

    wait_until(lambda: bus.get_stats().background_pending == 0)
    assert event_ids(make_bus()) == [str(sent[0].event_id)]
    assert bus.get_stats().background_dropped == 2
    assert any("3 background event(s) pending" in r.getMessage() for r in caplog.records)
    (dropped,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert dropped.event_ids == [str(e.event_id) for e in queued]  # type: ignore[attr-defined]


def test_a_background_publish_that_redis_refuses_is_logged_and_counted_not_raised(
    make_bus: Callable[..., RedisEventBus], caplog: pytest.LogCaptureFixture
) -> None:
    bus = make_bus(redis_url="redis://127.0.0.1:1/0", connection_retries=0)
    events = account_history(deposits=1)
    caplog.set_level(logging.ERROR, logger="django_eventsource")

    bus.publish(events, background=True)
    bus.shutdown(timeout=10)

    stats = bus.get_stats()
    assert (stats.events_published, stats.background_dropped) == (0, 2)
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "2 background event(s) were not published" in record.getMessage()
    assert record.event_ids == [str(e.event_id) for e in events]  # type: ignore[attr-defined]


def test_apublish_in_the_background_queues_the_events_for_the_worker(
    make_bus: Callable[..., RedisEventBus],
) -> None:
    bus = make_bus()
    events = account_history(deposits=1)

    async def publish() -> None:
        await bus.apublish(events, background=True)

    async_to_sync(publish)()
    bus.shutdown(timeout=10)

    assert event_ids(make_bus()) == [str(e.event_id) for e in events]


def test_after_shutdown_the_bus_refuses_to_publish_or_consume(
    make_bus: Callable[..., RedisEventBus],
) -> None:
    bus = make_bus()
    events = account_history(deposits=0)

    bus.shutdown()

    assert bus.is_shut_down
    with pytest.raises(EventBusError, match="shut down"):
        bus.publish(events)
    with pytest.raises(EventBusError, match="shut down"):
        bus.publish(events, background=True)
    with pytest.raises(EventBusError, match="shut down"):
        bus.publish_serialized([events[0].to_dict()])
    with pytest.raises(EventBusError, match="shut down"):
        bus.consume_once()
    with pytest.raises(EventBusError, match="shut down"):
        bus.start_consuming()
    bus.shutdown()  # a second call is harmless
    assert event_ids(make_bus()) == []


def test_shutdown_stops_a_running_consumer_loop_and_waits_for_it(
    make_bus: Callable[..., RedisEventBus],
) -> None:
    bus = make_bus(block_ms=1500)
    seen: list[DomainEvent] = []
    bus.subscribe_to_all_events(seen.append)
    loop = threading.Thread(target=bus.start_consuming)
    loop.start()
    make_bus().publish(account_history(deposits=0))
    wait_until(lambda: len(seen) == 1)

    bus.shutdown(timeout=10)

    # Well within the 1.5 s read the loop was blocked in: shutdown waited for it to return.
    loop.join(timeout=0.5)
    assert not loop.is_alive()


def test_a_handler_may_shut_down_the_bus_whose_loop_is_running_it(
    make_bus: Callable[..., RedisEventBus],
) -> None:
    bus = make_bus()
    seen: list[DomainEvent] = []

    def last_one(event: DomainEvent) -> None:
        seen.append(event)
        bus.shutdown(timeout=5)

    bus.subscribe_to_all_events(last_one)
    make_bus().publish(account_history(deposits=0))
    loop = threading.Thread(target=bus.start_consuming)
    started = time.monotonic()
    loop.start()
    loop.join(timeout=10)

    assert not loop.is_alive()
    assert time.monotonic() - started < 5  # the handler did not wait for its own loop
    assert len(seen) == 1
    assert bus.client.xpending(bus.config.stream_name, bus.config.consumer_group)["pending"] == 0
