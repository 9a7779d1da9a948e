"""Projection catch-up benchmark: ``run_projections`` beside a plain read of the same rows.

Usage::

    python benchmarks/bench_projections.py                    # PostgreSQL, then SQLite
    python benchmarks/bench_projections.py --backend sqlite   # one backend
    python benchmarks/bench_projections.py --events 20000     # a smaller log
    python benchmarks/bench_projections.py --quick            # 20,000 events, fewer rounds

Each backend runs in its own process on a fresh database (``BENCH_PG_NAME``, default
``eventsource_bench_projections``; ``BENCH_SQLITE_PATH``). The store holds ``--events``
events (1,000 accounts); the table is vacuumed (PostgreSQL) and read once before anything
is timed. Rows measured, in events per second:

* raw driver - the rows in keyset pages of 500 through psycopg 3 (its own loaders:
  UUIDs, timestamps and JSON decoded) or ``sqlite3``, no pydantic, no Django: the
  reference (median of 3, alternating with ``read_all``);
* ``read_all`` - iterating ``DjangoEventStore.read_all()`` over every event (the events a
  projection receives, deserialized);
* catch-up, counting - ``run_projections(once=True)`` with a projection that counts events
  in memory: batch transactions, checkpoint once per batch, a per-event savepoint (sent
  only if the handler queries, so none here) and an ``event_context`` per event - the
  runner's own cost;
* catch-up, one UPDATE per event - the same with a projection that updates a read-model
  row per event (``tests.testapp.projections.TallyProjection``), so with a savepoint per
  event;
* the two catch-ups again with ``optimistic_batches = True`` (one savepoint per batch,
  per-event savepoints only after a failure).

A second table builds a realistic read model, one summary row per account, per event,
as a batch projection, inline and through the bare driver (see ``benchmarks/_read_model.py``
for the method). Its raw and batch figures are taken twice: first on the freshly loaded
table, never analyzed (autovacuum is off for it until then), then after
``VACUUM ANALYZE``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _read_model as read_model
from benchmarks._harness import Row, print_table, setup_django

ACCOUNTS = 1_000
READ_REPEAT = 3


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
    """The rows in keyset pages of 500 through the bare driver (psycopg 3 or ``sqlite3``)."""
    from benchmarks.bench_store import Raw

    raw = Raw(os.environ["BENCH_DB"])
    start = time.perf_counter()
    count = raw.read_all(page_size=500)
    elapsed = time.perf_counter() - start
    raw.conn.close()
    return count, elapsed


def store_read_seconds() -> tuple[int, float]:
    from django_eventsource import DjangoEventStore

    start = time.perf_counter()
    count = sum(1 for _ in DjangoEventStore().read_all())
    return count, time.perf_counter() - start


def catch_up_seconds(path: str, name: str) -> tuple[int, float]:
    from django.test.utils import override_settings

    from django_eventsource.projections.maintenance import reset_projection
    from django_eventsource.projections.runner import run_projections

    with override_settings(EVENTSOURCE_PROJECTIONS=[path]):
        reset_projection(name)
        start = time.perf_counter()
        summary = run_projections(once=True)
        return summary.total_processed, time.perf_counter() - start


def run_backend(backend: str, events: int, quick: bool) -> None:
    os.environ.setdefault("BENCH_PG_NAME", "eventsource_bench_projections")
    setup_django(backend)
    if backend == "postgres":
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE eventsource_event SET (autovacuum_enabled = false)")
    populate(events)
    fresh = read_model.compare(backend, rounds=1 if quick else 2, fresh=True)
    projections = {
        "counting": "CountingProjection",
        "counting_optimistic": "OptimisticCountingProjection",
        "tally": "TallyProjection",
        "tally_optimistic": "OptimisticTallyProjection",
    }
    settle(backend)
    rate: dict[str, float] = {}
    reads: dict[str, list[float]] = {"raw": [], "read_all": []}
    for _ in range(READ_REPEAT):  # alternate, so a change in machine load hits both
        for label, func in [("raw", raw_read_seconds), ("read_all", store_read_seconds)]:
            count, seconds = func()
            reads[label].append(count / seconds)
    rate.update({label: statistics.median(samples) for label, samples in reads.items()})
    for label, name in projections.items():
        count, seconds = catch_up_seconds(f"tests.testapp.projections.{name}", name)
        rate[label] = count / seconds
    reference = rate["raw"]
    rows = [
        Row("read_all (deserialized events)", rate["read_all"], reference, "/s", "", True),
        Row("catch-up, counting", rate["counting"], reference, "/s", ">= 0.25x", True),
        Row(
            "catch-up, counting, optimistic_batches",
            rate["counting_optimistic"],
            reference,
            "/s",
            "",
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
    print_table(
        f"Projection catch-up over {events} events, {backend} (reference: raw driver SELECT)",
        rows,
    )
    report_read_model(backend, events, quick, fresh)


def report_read_model(
    backend: str, events: int, quick: bool, fresh: tuple[float, float, bool]
) -> None:
    analyzed = read_model.compare(backend, rounds=1 if quick else 3, fresh=False)
    per_event_limit = 2_000 if quick else 10_000
    per_event = read_model.per_event_rate(per_event_limit)
    saves, rounds = (100, 3) if quick else (300, 5)
    without, with_inline, applied = read_model.inline_rates(saves, rounds, "InlineActivityUpsert")
    orm_without, orm_inline, orm_applied = read_model.inline_rates(
        saves, rounds, "InlineActivityProjection"
    )
    batch_target = ">= 0.5x" + (", >= 30x per-event" if backend == "postgres" else "")
    rows = [
        Row("batch projection, fresh table", fresh[1], fresh[0], "/s", batch_target, True),
        Row("batch projection, analyzed", analyzed[1], analyzed[0], "/s", batch_target, True),
        Row(
            f"per-event projection (first {per_event_limit:,})",
            per_event,
            analyzed[0],
            "/s",
            "",
            True,
        ),
        Row("save of 1 event, inline SQL upsert (saves/s)", with_inline, without, "/s", "", True),
        Row(
            "save of 1 event, inline ORM update (saves/s)", orm_inline, orm_without, "/s", "", True
        ),
    ]
    print_table(
        f"Read model, one summary row per account, {events} events of {ACCOUNTS} accounts, "
        f"{backend} (reference: raw driver fold + upsert; last row: the same save without "
        "the inline projection)",
        rows,
    )
    print(f"batch / per-event: {analyzed[1] / per_event:.1f}x (target on PostgreSQL: >= 30x)")
    print(
        f"inline save cost: {without / with_inline:.2f}x the save without it with one SQL "
        f"upsert (target <= 1.3x), {orm_without / orm_inline:.2f}x with an ORM update()"
    )
    print(
        "same read model from raw and batch: "
        f"{'yes' if fresh[2] and analyzed[2] else 'NO'}; inline applied every save: "
        f"{'yes' if applied and orm_applied else 'NO'}"
    )


def settle(backend: str) -> None:
    """Bring the freshly written table to a steady state before anything is timed.

    On PostgreSQL, ``VACUUM ANALYZE`` (what autovacuum would soon do) sets the hint bits
    the first reader would otherwise write; a first full read warms the caches on both.
    """
    from django.db import connection

    if backend == "postgres":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE eventsource_event")
            cursor.execute("VACUUM ANALYZE testapp_accountactivity")
            cursor.execute("ALTER TABLE eventsource_event RESET (autovacuum_enabled)")
    raw_read_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"])
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument(
        "--quick", action="store_true", help="20,000 events (unless --events), fewer rounds"
    )
    args = parser.parse_args()
    events = args.events or (20_000 if args.quick else 100_000)
    if args.backend:
        run_backend(args.backend, events, args.quick)
        return
    for backend in ("postgres", "sqlite"):
        command = [sys.executable, __file__, "--backend", backend, "--events", str(events)]
        subprocess.run(command + (["--quick"] if args.quick else []), check=True)


if __name__ == "__main__":
    main()
