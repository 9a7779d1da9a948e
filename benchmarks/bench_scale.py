"""Scaling figures: the relay with hot aggregates, and the partitioned Redis bus.

    python benchmarks/bench_scale.py relay [--analyze]   # PostgreSQL (BENCH_PG_* variables)
    python benchmarks/bench_scale.py redis               # Redis at BENCH_REDIS_URL

relay: 50 aggregates x 1,000 outbox rows, interleaved (every batch holds the next rows of
every aggregate). It times one claim made while the previous batch is still in flight
(the look-ahead), without the scan bound and with it, and drains the backlog with
``publish_outbox`` through a bus that accepts serialized events and does nothing, with and
without the bound (the rate over the first 5,000 rows). Run on the freshly loaded table
and, with ``--analyze``, after ANALYZE.

redis: 50,000 events of 50 aggregates published to a bus with 3 partitions; then 1
consumer process, and 3 consumer processes of one group, handle them all (and, for
comparison, 3 consumers of a single unpartitioned stream). Every handler waits
``BENCH_HANDLER_WAIT_MS`` (default 1 ms, an I/O-bound handler; 0 for a CPU-only one) and
records (aggregate, version) with its consumer; the script counts, per aggregate, how
often a version was first handled after a later one (inversions, must be 0 when
partitioned) and prints the rate of each run (first to last handled message) and the
ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


#: Rows the relay runs publish (of the 50,000 loaded) before the rate is taken.
DRAINED = 5_000


def relay(analyze: bool) -> None:
    os.environ.setdefault("BENCH_PG_NAME", "eventsource_bench_scale")
    from benchmarks._harness import setup_django

    setup_django("postgres")
    from collections.abc import Mapping, Sequence
    from decimal import Decimal
    from typing import Any
    from uuid import uuid4

    from django.db import connection
    from django.utils import timezone

    from django_eventsource.bus.memory import InMemoryEventBus
    from django_eventsource.events.serialization import outbox_row_values
    from django_eventsource.models import OutboxMessage
    from django_eventsource.outbox import relay as relay_module
    from django_eventsource.outbox.django import DjangoOutboxRepository
    from django_eventsource.outbox.rows import RelayReport
    from tests.testapp.domain import MoneyDeposited

    class NullSerializedBus(InMemoryEventBus):
        def publish_serialized(self, events: Sequence[Mapping[str, Any]]) -> None:
            for event in events:
                event.get("event_id")

    def load() -> None:
        OutboxMessage.objects.all().delete()
        aggregates = [uuid4() for _ in range(50)]
        rows = [
            OutboxMessage(
                **outbox_row_values(
                    MoneyDeposited(aggregate_id=a, aggregate_version=v, amount=Decimal(1))
                )
            )
            for v in range(1, 1001)
            for a in aggregates
        ]
        OutboxMessage.objects.bulk_create(rows, batch_size=5000)
        if analyze:
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE eventsource_outbox")

    repository = DjangoOutboxRepository()
    print(f"relay, 50 aggregates x 1,000 rows, {'analyzed' if analyze else 'never analyzed'}")
    for label, scan in (("unbounded", None), ("bounded", 4 * 100)):
        load()
        now = timezone.now()
        in_flight = repository.claim_due("relay-a", 100, now=now, claim_timeout=300)
        start = time.perf_counter()
        ahead = repository.claim_due(
            "relay-a", 100, now=now, claim_timeout=300, scan_limit=scan, exclude_ids=()
        )
        took = time.perf_counter() - start
        print(
            f"  look-ahead claim {label:<9}: {len(ahead)} rows in {took * 1000:7.1f} ms "
            f"({len(in_flight)} rows in flight)"
        )
    rates = {}
    for label, bound in (("unbounded", None), ("bounded", 4)):
        load()
        relay_module.LOOK_AHEAD_SCAN = bound
        stop = threading.Event()

        def enough(totals: RelayReport, stop: threading.Event = stop) -> None:
            if totals.published >= DRAINED:
                stop.set()

        start = time.perf_counter()
        report = relay_module.publish_outbox(
            once=True, bus=NullSerializedBus(), batch_size=100, stop_event=stop, progress=enough
        )
        took = time.perf_counter() - start
        rates[label] = report.published / took
        print(f"  publish_outbox {label:<9}: {report.published} rows, {rates[label]:8.0f} rows/s")
    relay_module.LOOK_AHEAD_SCAN = 4
    print(f"  ratio bounded/unbounded: {rates['bounded'] / rates['unbounded']:.2f}x")


MESSAGES = 50_000
AGGREGATES = 50


def _consume(
    redis_url: str, prefix: str, group: str, partitions: int, processes: int, wait_ms: float
) -> tuple[float, int, int, str]:
    """Run ``processes`` consume_events processes of ``group`` until every message is
    handled; returns (messages/s from the first to the last handled, handled, inversions,
    a note on duplicates and each process's share).
    """
    import json
    import signal
    import subprocess

    import redis

    record_key = f"{prefix}:handled:{group}"
    settings = {
        "EVENTSOURCE_EVENT_BUS": "redis",
        "EVENTSOURCE_REDIS_URL": redis_url,
        "EVENTSOURCE_REDIS_STREAM_PREFIX": prefix,
        "EVENTSOURCE_REDIS_CONSUMER_GROUP": group,
        "EVENTSOURCE_REDIS_PARTITIONS": partitions,
        "EVENTSOURCE_REDIS_PARTITION_LEASE": 2.0,
        "EVENTSOURCE_REDIS_MAX_STREAM_LENGTH": None,
        "EVENTSOURCE_EVENT_HANDLERS": ["tests.partition_recorder.record"],
    }
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "EVENTSOURCE_TEST_SETTINGS": json.dumps(settings),
        "EVENTSOURCE_TEST_RECORD_KEY": record_key,
        "EVENTSOURCE_TEST_HANDLER_WAIT_MS": str(wait_ms),
    }
    root = Path(__file__).resolve().parent.parent
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    workers = [
        subprocess.Popen(
            [sys.executable, "manage.py", "consume_events", "--verbosity", "0"],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    try:
        deadline = time.monotonic() + 900
        while client.llen(record_key) < MESSAGES:
            if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                raise RuntimeError("the consumers did not handle every message")
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(60)
    records = [line.split() for line in client.lrange(record_key, 0, -1)]
    client.delete(record_key)
    times = [float(r[4]) for r in records]
    seen: set[str] = set()
    highest: dict[str, int] = {}
    inversions = 0
    for aggregate, version, event_id, _pid, _at in records:
        if event_id in seen:
            continue
        seen.add(event_id)
        if int(version) < highest.get(aggregate, 0):
            inversions += 1
        highest[aggregate] = max(highest.get(aggregate, 0), int(version))
    shares: dict[str, int] = {}
    for record in records:
        shares[record[3]] = shares.get(record[3], 0) + 1
    note = f"{len(records) - len(seen)} redelivered; per process " + "/".join(
        str(n) for n in sorted(shares.values(), reverse=True)
    )
    return len(seen) / (max(times) - min(times)), len(seen), inversions, note


def redis_part() -> None:
    from decimal import Decimal
    from uuid import UUID, uuid4

    from benchmarks._harness import setup_django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    import django

    django.setup()
    del setup_django
    from django_eventsource.bus.redis import RedisEventBus, RedisEventBusConfig
    from tests.testapp.domain import MoneyDeposited

    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"bench-scale-{uuid4().hex[:8]}"
    aggregates = [UUID(int=n + 1) for n in range(AGGREGATES)]
    events = [
        MoneyDeposited(aggregate_id=a, aggregate_version=v, amount=Decimal(1)).to_dict()
        for v in range(1, MESSAGES // AGGREGATES + 1)
        for a in aggregates
    ]
    wait_ms = float(os.environ.get("BENCH_HANDLER_WAIT_MS", "1"))
    print(
        f"redis: {MESSAGES:,} messages of {AGGREGATES} aggregates; handler = "
        f"{wait_ms:g} ms of waiting (I/O) + one RPUSH"
    )
    rows = []
    try:
        for partitions in (3, 1):
            bus = RedisEventBus(
                RedisEventBusConfig(
                    redis_url=redis_url,
                    stream_prefix=f"{prefix}-p{partitions}",
                    partitions=partitions,
                    max_stream_length=None,
                )
            )
            for start in range(0, len(events), 1000):
                bus.publish_serialized(events[start : start + 1000])
            bus.close()
        for label, partitions, processes in (
            ("1 consumer, 3 partitions", 3, 1),
            ("3 consumers, 3 partitions", 3, 3),
            ("3 consumers, 1 stream (unordered)", 1, 3),
        ):
            rate, handled, inversions, note = _consume(
                redis_url,
                f"{prefix}-p{partitions}",
                f"g{processes}",
                partitions,
                processes,
                wait_ms,
            )
            rows.append((label, rate))
            print(
                f"  {label:<34}: {handled:,} handled, {rate:8.0f} msg/s, "
                f"{inversions:,} per-aggregate inversions ({note})"
            )
    finally:
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
    print(f"  ratio 3 partitioned consumers / 1: {rows[1][1] / rows[0][1]:.2f}x (target >= 2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["relay", "redis"])
    parser.add_argument("--analyze", action="store_true", help="ANALYZE the loaded tables")
    args = parser.parse_args()
    if args.part == "relay":
        relay(args.analyze)
    else:
        redis_part()


if __name__ == "__main__":
    main()
