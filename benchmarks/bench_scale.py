"""Scaling figures: the relay with hot aggregates, and the partitioned Redis bus.

    python benchmarks/bench_scale.py relay [--analyze]   # PostgreSQL (BENCH_PG_* variables)
    python benchmarks/bench_scale.py redis               # Redis at BENCH_REDIS_URL

relay: 50 aggregates x 1,000 outbox rows, interleaved (every batch holds the next rows of
every aggregate). It times one claim made while the previous batch is still in flight
(the look-ahead), without the scan bound and with it, and drains the backlog with
``publish_outbox`` through a bus that accepts serialized events and does nothing, with and
without the bound (the rate over the first 5,000 rows). Run on the freshly loaded table
and, with ``--analyze``, after ANALYZE.

redis: 50,000 events of 500 aggregates published to a bus with 3 partitions; then 1
consumer process, and 3 consumer processes of one group, handle them all. Every handler
records (aggregate, version) with its consumer; the script counts, per aggregate, how
often a version was handled after a later one (inversions, must be 0) and prints the
rate of each run and their ratio.
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
                **outbox_row_values(MoneyDeposited(aggregate_id=a, aggregate_version=v, amount=1))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["relay", "redis"])
    parser.add_argument("--analyze", action="store_true", help="ANALYZE the loaded tables")
    args = parser.parse_args()
    if args.part == "relay":
        relay(args.analyze)
    else:
        from benchmarks import bench_scale_redis

        bench_scale_redis.run()


if __name__ == "__main__":
    main()
