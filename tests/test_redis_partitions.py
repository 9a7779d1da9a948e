"""The partitioned Redis bus: an aggregate's events share a stream, each partition has one
consumer of the group at a time, and a dead consumer's partitions are taken over in order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from django_eventsource import DomainEvent
from django_eventsource.bus.redis import RedisEventBus, RedisEventBusConfig
from django_eventsource.bus.redis_partitions import PartitionLeases
from django_eventsource.partitioning import stable_bucket
from tests.testapp.domain import MoneyDeposited

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent


def _until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _history(aggregates: int, versions: int, first: int = 1) -> list[DomainEvent]:
    ids = [UUID(int=n + 1) for n in range(aggregates)]
    return [
        MoneyDeposited(aggregate_id=a, aggregate_version=v, amount=Decimal(1))
        for v in range(first, first + versions)
        for a in ids
    ]


@pytest.fixture
def config(redis_url: str) -> Iterator[RedisEventBusConfig]:
    cfg = RedisEventBusConfig(
        redis_url=redis_url,
        stream_prefix=f"test-{uuid4().hex}",
        consumer_group="group",
        consumer_name="consumer-a",
        claim_idle_ms=60_000,
        block_ms=100,
        partitions=4,
        partition_lease=0.5,
    )
    yield cfg
    cleaner = RedisEventBus(cfg)
    keys = list(cleaner.client.scan_iter(f"{cfg.stream_prefix}:*"))
    if keys:
        cleaner.client.delete(*keys)
    cleaner.close()


def test_each_aggregate_goes_to_the_stream_of_its_bucket_in_order(
    make_bus: Callable[..., RedisEventBus], config: RedisEventBusConfig
) -> None:
    bus = make_bus()
    events = _history(aggregates=12, versions=3)
    bus.publish(events)

    assert bus.stream_length() == 36
    seen: dict[str, list[int]] = defaultdict(list)
    for partition in range(4):
        stream = config.partition_stream(partition)
        assert stream == f"{config.stream_prefix}:events:{partition}"
        for _, fields in bus.client.xrange(stream):
            assert stable_bucket(fields["aggregate_id"], 4) == partition
            seen[fields["aggregate_id"]].append(int(fields["aggregate_version"]))
    assert len(seen) == 12
    assert all(versions == [1, 2, 3] for versions in seen.values())
    # More than one partition is used.
    assert len({stable_bucket(a, 4) for a in seen}) > 1


def test_one_partition_keeps_the_single_stream(
    make_bus: Callable[..., RedisEventBus], config: RedisEventBusConfig
) -> None:
    bus = make_bus(partitions=1)
    bus.publish(_history(aggregates=3, versions=1))
    assert bus.client.xlen(f"{config.stream_prefix}:events") == 3
    assert config.stream_names != replace(config, partitions=1).stream_names


@pytest.mark.parametrize("partitions", [0, -2, True, 2.5])
def test_a_bad_partition_count_is_refused(partitions: object) -> None:
    with pytest.raises(ValueError, match="partitions"):
        RedisEventBusConfig(partitions=partitions)  # type: ignore[arg-type]


def test_consumers_share_the_partitions_without_overlap(
    make_bus: Callable[..., RedisEventBus], config: RedisEventBusConfig
) -> None:
    a = PartitionLeases(replace(config, consumer_name="a"), lambda: make_bus().client)
    b = PartitionLeases(replace(config, consumer_name="b"), lambda: make_bus().client)
    c = PartitionLeases(replace(config, consumer_name="c"), lambda: make_bus().client)
    try:
        assert a.rebalance() == [0, 1, 2, 3]  # alone: every partition
        assert b.rebalance() == []  # none free yet
        assert len(a.rebalance()) == 2  # two live consumers: gives two back
        assert len(b.rebalance()) == 2
        assert set(a.held).isdisjoint(b.held)
        assert set(a.held) | set(b.held) == {0, 1, 2, 3}
        # A third consumer: shares of ceil(4 / 3) = 2, and nobody holds what another does.
        for leases in (c, a, b, c, a, b, c):
            leases.rebalance()
        holders = [set(leases.held) for leases in (a, b, c)]
        assert sum(len(h) for h in holders) == 4
        assert set().union(*holders) == {0, 1, 2, 3}
        assert all(len(h) >= 1 for h in holders)
    finally:
        for leases in (a, b, c):
            leases.release_all()


def test_a_dead_consumers_partitions_are_taken_over_with_their_pending_messages_first(
    make_bus: Callable[..., RedisEventBus], config: RedisEventBusConfig
) -> None:
    publisher = make_bus(consumer_name="publisher")
    publisher.publish(_history(aggregates=8, versions=3))
    dead = make_bus(consumer_name="dead")
    dead.ensure_group()
    leases = dead._consumer.leases
    assert leases is not None and leases.rebalance() == [0, 1, 2, 3]
    # The consumer reads every message, handles none, and dies (no renewals, no acks).
    read = dead.client.xreadgroup(
        "group", "dead", dict.fromkeys(config.stream_names, ">"), count=1000
    )
    assert sum(len(entries) for _, entries in read) == 24
    leases._stop_heartbeat()
    publisher.publish(_history(aggregates=8, versions=2, first=4))

    handled: list[tuple[str, int]] = []
    survivor = make_bus(consumer_name="survivor")
    survivor.subscribe_to_all_events(
        lambda e: handled.append((str(e.aggregate_id), e.aggregate_version))
    )
    started = time.monotonic()
    _until(lambda: survivor.consume_once(block_ms=50) >= 0 and len(handled) >= 40, "takeover")
    # Within about one lease (0.5 s here) of the last renewal, whatever claim_idle_ms says.
    assert time.monotonic() - started < 30

    by_aggregate: dict[str, list[int]] = defaultdict(list)
    for aggregate, version in handled:
        by_aggregate[aggregate].append(version)
    assert len(by_aggregate) == 8
    assert all(versions == [1, 2, 3, 4, 5] for versions in by_aggregate.values())
    client = survivor.client
    pending = sum(
        client.xpending(stream, "group")["pending"]  # type: ignore[no-untyped-call]
        for stream in config.stream_names
    )
    assert pending == 0


@pytest.mark.slow
def test_kill_9_of_one_of_two_consumer_processes_loses_nothing_and_keeps_order(
    redis_url: str, config: RedisEventBusConfig, make_bus: Callable[..., RedisEventBus]
) -> None:
    record_key = f"{config.stream_prefix}:handled"
    settings = {
        "EVENTSOURCE_EVENT_BUS": "redis",
        "EVENTSOURCE_REDIS_URL": redis_url,
        "EVENTSOURCE_REDIS_STREAM_PREFIX": config.stream_prefix,
        "EVENTSOURCE_REDIS_CONSUMER_GROUP": "group",
        "EVENTSOURCE_REDIS_PARTITIONS": 3,
        "EVENTSOURCE_REDIS_PARTITION_LEASE": 1.0,
        "EVENTSOURCE_EVENT_HANDLERS": ["tests.partition_recorder.record"],
    }
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "EVENTSOURCE_TEST_SETTINGS": json.dumps(settings),
        "EVENTSOURCE_TEST_RECORD_KEY": record_key,
        # Slow enough that both consumers hold partitions before the backlog is gone.
        "EVENTSOURCE_TEST_HANDLER_WAIT_MS": "2",
    }
    events = _history(aggregates=30, versions=100)
    make_bus(partitions=3).publish(events)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "manage.py", "consume_events", "--verbosity", "0"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    client = make_bus().client
    victim, survivor = start(), start()
    try:

        def handled_by(pid: int) -> int:
            return sum(line.split()[3] == str(pid) for line in client.lrange(record_key, 0, -1))

        _until(lambda: handled_by(victim.pid) >= 50, "the victim to hold partitions")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        expected = {str(e.event_id) for e in events}
        _until(
            lambda: {line.split()[2] for line in client.lrange(record_key, 0, -1)} >= expected,
            "every event to be handled",
            timeout=180,
        )
    finally:
        for process in (victim, survivor):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(60)

    records = [line.split() for line in client.lrange(record_key, 0, -1)]
    first_seen: dict[str, int] = {}
    order: dict[str, list[int]] = defaultdict(list)
    for aggregate, version, event_id, _pid, _at in records:
        if event_id not in first_seen:
            first_seen[event_id] = len(first_seen)
            order[aggregate].append(int(version))
    assert len(first_seen) == len(events)
    # Each version is first handled after every earlier version of its aggregate.
    assert all(versions == list(range(1, 101)) for versions in order.values())
    # The survivor took the victim's partitions over: it handled later versions of the
    # aggregates the victim was handling when it died.
    victim_aggregates = {a for a, _v, _e, pid, _t in records if pid == str(victim.pid)}
    last_of_victim = max(i for i, r in enumerate(records) if r[3] == str(victim.pid))
    taken_over = {
        a for a, _v, _e, pid, _t in records[last_of_victim + 1 :] if pid != str(victim.pid)
    }
    assert victim_aggregates and victim_aggregates <= taken_over
