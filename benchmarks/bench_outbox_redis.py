"""Throughput of the outbox relay and of the Redis consumer beside raw redis-py.

    python benchmarks/bench_outbox_redis.py                 # PostgreSQL, then SQLite
    python benchmarks/bench_outbox_redis.py --backend sqlite

Relay: 5,000 events of 500 accounts (10 each) are saved once with the outbox enabled.
Each repeat resets every outbox row to pending (then, on PostgreSQL, ``VACUUM ANALYZE``
as autovacuum would), then times ``publish_outbox(once=True)``
(batches of 500: claim, pipelined XADD, mark published; the XADD of one batch overlaps
the marking of the previous one and the claim of the next) to a fresh stream. The reference
is raw redis-py sending the same 5,000 payloads (the JSON the relay sends, prepared
beforehand) with pipelined XADD in batches of 500 -- Redis work only, no database.

Consumer: a stream holding the same 5,000 entries. Each repeat creates a new consumer
group and times ``RedisEventBus.consume_once`` until the group is drained, with one no-op
handler subscribed to every event (so each message is decoded, validated into its event
class and dispatched). The reference reads the same entries with raw XREADGROUP (count
500) and acknowledges each batch with one XACK, decoding nothing.

Library and reference runs alternate (7 of each); figures are medians.

Redis: ``BENCH_REDIS_URL`` (default redis://127.0.0.1:6379/0); keys are prefixed with a
fresh uuid and deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import Row, print_table, setup_django

ACCOUNTS = 500
EVENTS_PER_ACCOUNT = 10
BATCH = 500
REPEAT = 7
TOTAL = ACCOUNTS * EVENTS_PER_ACCOUNT


def _median_rates(
    library: tuple[Callable[[int], Any], Callable[[Any], object]],
    reference: tuple[Callable[[int], Any], Callable[[Any], object]],
) -> tuple[float, float]:
    """Median events/s of the library and the reference, run alternately.

    Each side is ``(prepare, work)``; only ``work(prepare(i))`` is timed. Alternating
    the two makes a change in machine load hit both alike.
    """
    rates: tuple[list[float], list[float]] = ([], [])
    for i in range(REPEAT):
        for (prepare, work), samples in zip((library, reference), rates, strict=True):
            state = prepare(i)
            start = time.perf_counter()
            work(state)
            samples.append(TOTAL / (time.perf_counter() - start))
    return statistics.median(rates[0]), statistics.median(rates[1])


def _save_events() -> None:
    from django_eventsource import AggregateRepository, DjangoEventStore
    from tests.testapp.domain import Account

    repo = AggregateRepository(DjangoEventStore(outbox_enabled=True), Account)
    for _ in range(ACCOUNTS):
        account = repo.create_new(uuid4())
        account.open("bench")
        for n in range(EVENTS_PER_ACCOUNT - 1):
            account.deposit(Decimal(n + 1))
        repo.save(account)


def run(backend: str) -> None:
    os.environ.setdefault("BENCH_PG_NAME", "eventsource_bench_outbox")
    os.environ.setdefault(
        "BENCH_SQLITE_PATH", str(Path("/tmp") / "eventsource_bench_outbox.sqlite3")
    )
    setup_django(backend)
    from django.db import connection

    from django_eventsource.bus.redis import RedisEventBus, RedisEventBusConfig, serialize_fields
    from django_eventsource.models import OutboxMessage
    from django_eventsource.outbox.relay import publish_outbox

    _save_events()
    prefix = f"bench-{uuid4().hex}"
    url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    config = RedisEventBusConfig(redis_url=url, stream_prefix=prefix, max_stream_length=None)
    bus = RedisEventBus(config)
    client = bus.client
    payloads = [
        serialize_fields(data)
        for data in OutboxMessage.objects.order_by("id").values_list("event_data", flat=True)
    ]

    # -- relay ------------------------------------------------------------------------
    def reset_outbox(i: int) -> RedisEventBus:
        OutboxMessage.objects.update(status="pending", published_at=None)
        if connection.vendor == "postgresql":
            # Steady state, as autovacuum keeps it: no dead row versions left over from
            # the previous repeat, current statistics.
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE eventsource_outbox")
        client.delete(config.stream_name)
        return bus

    def relay(target: RedisEventBus) -> None:
        report = publish_outbox(once=True, bus=target, batch_size=BATCH)
        assert report.published == TOTAL, report

    def raw_stream(i: int) -> str:
        name = f"{prefix}:raw"
        client.delete(name)
        return name

    def raw_xadd(name: str) -> None:
        for start in range(0, TOTAL, BATCH):
            pipe = client.pipeline(transaction=False)
            for fields in payloads[start : start + BATCH]:
                pipe.xadd(name, fields)
            pipe.execute()

    relay_rate, raw_publish_rate = _median_rates((reset_outbox, relay), (raw_stream, raw_xadd))

    # -- consumer ---------------------------------------------------------------------
    client.delete(config.stream_name)
    raw_xadd(config.stream_name)

    def new_consumer(i: int) -> RedisEventBus:
        consumer = RedisEventBus(
            RedisEventBusConfig(
                redis_url=url, stream_prefix=prefix, consumer_group=f"lib-{i}", batch_size=BATCH
            )
        )
        consumer.subscribe_to_all_events(lambda event: None)
        consumer.ensure_group()
        return consumer

    def consume(consumer: RedisEventBus) -> None:
        handled = 0
        while (batch := consumer.consume_once(BATCH)) > 0:
            handled += batch
        assert handled == TOTAL, handled
        consumer.close()

    def new_raw_group(i: int) -> str:
        group = f"raw-{i}"
        client.xgroup_create(config.stream_name, group, id="0")
        return group

    def raw_consume(group: str) -> None:
        handled = 0
        while True:
            response = client.xreadgroup(group, "c", {config.stream_name: ">"}, count=BATCH)
            if not response:
                break
            ids = [message_id for message_id, _ in response[0][1]]
            client.xack(config.stream_name, group, *ids)  # type: ignore[no-untyped-call]
            handled += len(ids)
        assert handled == TOTAL, handled

    consume_rate, raw_consume_rate = _median_rates(
        (new_consumer, consume), (new_raw_group, raw_consume)
    )

    client.delete(config.stream_name, config.dead_letter_stream, f"{prefix}:raw")
    bus.close()
    rows = [
        Row(
            f"relay: outbox -> Redis ({TOTAL:,} events)",
            relay_rate,
            raw_publish_rate,
            "/s",
            target=">= 0.30x raw XADD",
            higher_is_better=True,
        ),
        Row(
            f"consumer: Redis -> handler ({TOTAL:,} events)",
            consume_rate,
            raw_consume_rate,
            "/s",
            target=">= 0.40x raw XREADGROUP+XACK",
            higher_is_better=True,
        ),
    ]
    print_table(f"Outbox relay and Redis bus on {backend} (events/s, median of {REPEAT})", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    args = parser.parse_args()
    if args.backend != "both":
        run(args.backend)
        return
    for backend in ("postgres", "sqlite"):
        # One process per backend: Django is configured once per process.
        subprocess.run([sys.executable, __file__, "--backend", backend], check=True)


if __name__ == "__main__":
    main()
