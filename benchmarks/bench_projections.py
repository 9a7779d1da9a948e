"""Projection catch-up benchmark: ``run_projections`` beside a plain read of the same rows.

Usage::

    python benchmarks/bench_projections.py                    # PostgreSQL, then SQLite
    python benchmarks/bench_projections.py --backend sqlite   # one backend
    python benchmarks/bench_projections.py --events 20000     # a smaller log

Each backend runs in its own process on a fresh database (``BENCH_PG_NAME``, default
``eventsource_bench_projections``; ``BENCH_SQLITE_PATH``). The store holds ``--events``
events (1,000 accounts). Rows measured, in events per second:

* ``read_all`` - iterating ``DjangoEventStore.read_all()`` over every event (the events a
  projection receives, deserialized): the reference the catch-up is compared with;
* raw driver - the same rows in keyset pages through Django's cursor, no deserialization;
* catch-up, counting - ``run_projections(once=True)`` with a projection that counts events
  in memory: batch transactions, checkpoint once per batch, a savepoint and an
  ``event_context`` per event - the runner's own cost;
* catch-up, one UPDATE per event - the same with a projection that updates a read-model
  row per event (``tests.testapp.projections.TallyProjection``);
* the two catch-ups again with ``optimistic_batches = True`` (one savepoint per batch,
  per-event savepoints only after a failure).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import Row, print_table, setup_django

ACCOUNTS = 1_000


def populate(events: int) -> None:
    from decimal import Decimal
    from uuid import uuid4

    from django_eventsource import DjangoEventStore, ExpectedVersion
    from tests.testapp.domain import AccountOpened, MoneyDeposited

    store = DjangoEventStore()
    per_account = max(events // ACCOUNTS, 1)
    for _ in range(ACCOUNTS):
        account_id = uuid4()
        batch: list[Any] = [AccountOpened(aggregate_id=account_id, owner="x", aggregate_version=1)]
        batch += [
            MoneyDeposited(aggregate_id=account_id, amount=Decimal(v), aggregate_version=v)
            for v in range(2, per_account + 1)
        ]
        store.append_events(account_id, "Account", batch, ExpectedVersion.NO_STREAM)


def raw_read_seconds() -> tuple[int, float]:
    from django.db import connection

    start = time.perf_counter()
    count = 0
    with connection.cursor() as cursor:
        last = 0
        while True:
            cursor.execute(
                "SELECT position, event_id, event_type, event_version, occurred_at, aggregate_id,"
                " aggregate_type, aggregate_version, tenant_id, actor_id, correlation_id,"
                " causation_id, recorded_at, payload, metadata FROM eventsource_event"
                " WHERE position > %s ORDER BY position LIMIT 500",
                [last],
            )
            rows = cursor.fetchall()
            if not rows:
                break
            count += len(rows)
            last = rows[-1][0]
    return count, time.perf_counter() - start


def store_read_seconds() -> tuple[int, float]:
    from django_eventsource import DjangoEventStore

    start = time.perf_counter()
    count = sum(1 for _ in DjangoEventStore().read_all())
    return count, time.perf_counter() - start


def catch_up_seconds(path: str, name: str) -> tuple[int, float]:
    from django.test.utils import override_settings

    from django_eventsource.projections.runner import reset_projection, run_projections

    with override_settings(EVENTSOURCE_PROJECTIONS=[path]):
        reset_projection(name)
        start = time.perf_counter()
        summary = run_projections(once=True)
        return summary.total_processed, time.perf_counter() - start


def run_backend(backend: str, events: int) -> None:
    os.environ.setdefault("BENCH_PG_NAME", "eventsource_bench_projections")
    setup_django(backend)
    populate(events)
    projections = {
        "counting": "CountingProjection",
        "counting_optimistic": "OptimisticCountingProjection",
        "tally": "TallyProjection",
        "tally_optimistic": "OptimisticTallyProjection",
    }
    rate: dict[str, float] = {}
    for label, func in [("read_all", store_read_seconds), ("raw", raw_read_seconds)]:
        count, seconds = func()
        rate[label] = count / seconds
    for label, name in projections.items():
        count, seconds = catch_up_seconds(f"tests.testapp.projections.{name}", name)
        rate[label] = count / seconds
    reference = rate["read_all"]
    rows = [
        Row("raw driver SELECT (events/s)", rate["raw"], reference, "/s", "", True),
        Row("catch-up, counting", rate["counting"], reference, "/s", ">= 0.25x", True),
        Row(
            "catch-up, counting, optimistic_batches",
            rate["counting_optimistic"],
            reference,
            "/s",
            ">= 0.25x",
            True,
        ),
        Row("catch-up, 1 UPDATE/event", rate["tally"], reference, "/s", "", True),
        Row(
            "catch-up, 1 UPDATE/event, optimistic_batches",
            rate["tally_optimistic"],
            reference,
            "/s",
            "",
            True,
        ),
    ]
    print_table(f"Projection catch-up over {events} events, {backend} (reference: read_all)", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    if args.backend:
        run_backend(args.backend, args.events)
        return
    for backend in ("postgres", "sqlite"):
        subprocess.run(
            [sys.executable, __file__, "--backend", backend, "--events", str(args.events)],
            check=True,
        )


if __name__ == "__main__":
    main()
