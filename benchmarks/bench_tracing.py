"""Save and load cost with tracing on (OpenTelemetry API, no-op provider) vs off.

    python benchmarks/bench_tracing.py                 # PostgreSQL, then SQLite
    python benchmarks/bench_tracing.py --backend sqlite --rounds 30

"On" is ``EVENTSOURCE_TRACING=True`` with only the OpenTelemetry API at work: no tracer
provider is installed, so every span is the API's no-op span. That is the cost a project
pays for leaving tracing enabled where no SDK is configured; "off" is
``EVENTSOURCE_TRACING=False``. ``save`` stores a new ``Account`` with two events;
``load`` rebuilds an ``Account`` of ten events. Each round times a block of operations
with tracing off and a block with it on (the order alternates between rounds, so drift
of the machine's load hits both alike); the table shows the median per operation over
the rounds, "library" being tracing on and "reference" tracing off.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import Row, print_table, setup_django

#: Operations per timed block (saves wait for the disk, so fewer of them).
BLOCK = {"save": 50, "load": 200}
LOAD_POOL = 200
EVENTS_PER_LOADED_AGGREGATE = 10


def _save_new_account() -> None:
    from django_eventsource import AggregateRepository, DjangoEventStore
    from tests.testapp.domain import Account

    repo = AggregateRepository(DjangoEventStore(), Account)
    account = repo.create_new(uuid4())
    account.open("bench")
    account.deposit(Decimal("1"))
    repo.save(account)


def _build_load_pool() -> list[UUID]:
    from django_eventsource import AggregateRepository, DjangoEventStore
    from tests.testapp.domain import Account

    repo = AggregateRepository(DjangoEventStore(), Account)
    ids = []
    for _ in range(LOAD_POOL):
        account = repo.create_new(uuid4())
        account.open("bench")
        for _ in range(EVENTS_PER_LOADED_AGGREGATE - 1):
            account.deposit(Decimal("1"))
        repo.save(account)
        ids.append(account.aggregate_id)
    return ids


def _per_op_seconds(operation: str, pool: list[UUID]) -> float:
    from django_eventsource import AggregateRepository, DjangoEventStore
    from tests.testapp.domain import Account

    block = BLOCK[operation]
    start = time.perf_counter()
    if operation == "save":
        for _ in range(block):
            _save_new_account()
    else:
        repo = AggregateRepository(DjangoEventStore(), Account)
        for index in range(block):
            repo.load(pool[index % len(pool)])
    return (time.perf_counter() - start) / block


def _span_cost_seconds() -> float:
    """Per-span cost of ``tracing.span`` + ``set_attributes`` on the no-op provider."""
    from django.test import override_settings

    from django_eventsource import tracing

    count = 20_000
    with override_settings(EVENTSOURCE_TRACING=True):
        start = time.perf_counter()
        for _ in range(count):
            with tracing.span("bench", {"aggregate_type": "Account"}) as current:
                tracing.set_attributes(current, event_count=2)
        return (time.perf_counter() - start) / count


def run(backend: str, rounds: int) -> None:
    os.environ.setdefault("BENCH_PG_NAME", "eventsource_bench_tracing")
    os.environ.setdefault(
        "BENCH_SQLITE_PATH", str(Path("/tmp") / "eventsource_bench_tracing.sqlite3")
    )
    setup_django(backend)
    from django.test import override_settings
    from opentelemetry import trace

    from django_eventsource import tracing

    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider", (
        "a tracer provider is installed; this benchmark measures the API's no-op path"
    )
    pool = _build_load_pool()
    for operation in ("save", "load"):  # warm caches and connections
        _per_op_seconds(operation, pool)

    samples: dict[tuple[str, bool], list[float]] = {}
    for round_number in range(rounds):
        modes = (False, True) if round_number % 2 == 0 else (True, False)
        for operation in ("save", "load"):
            for enabled in modes:
                with override_settings(EVENTSOURCE_TRACING=enabled):
                    assert tracing.tracing_enabled() is enabled
                    seconds = _per_op_seconds(operation, pool)
                samples.setdefault((operation, enabled), []).append(seconds)

    rows = []
    for operation, label in (
        ("save", "save (new aggregate, 2 events)"),
        ("load", "load (10 events)"),
    ):
        on = statistics.median(samples[(operation, True)])
        off = statistics.median(samples[(operation, False)])
        rows.append(Row(label, on * 1e6, off * 1e6, "us", target="<= 1.05x"))
    print_table(
        f"Tracing on (no-op provider) vs off on {backend} "
        f"(median of {rounds} rounds of {BLOCK['save']} saves / {BLOCK['load']} loads)",
        rows,
    )
    for row in rows:
        print(f"{row.operation}: overhead {100 * (row.ratio - 1):+.1f} %")
    print(f"one no-op span with attributes: {_span_cost_seconds() * 1e6:.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    if args.backend != "both":
        run(args.backend, args.rounds)
        return
    for backend in ("postgres", "sqlite"):
        # One process per backend: Django is configured once per process.
        subprocess.run(
            [sys.executable, __file__, "--backend", backend, "--rounds", str(args.rounds)],
            check=True,
        )


if __name__ == "__main__":
    main()
