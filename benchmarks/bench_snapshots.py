"""Load time of a 10,000-event aggregate with and without snapshots.

    python benchmarks/bench_snapshots.py                 # PostgreSQL, then SQLite
    python benchmarks/bench_snapshots.py --backend sqlite

The aggregate (the test suite's ``Account``) has 10,099 events: 10,000 saved 1,000 at a time
by a repository with ``snapshot_every=100`` (so the latest snapshot is at
version 10,000), then 99 more in one save that crosses no multiple of 100 -- the worst
case, as many events after the snapshot as there can be. Each row times
``AggregateRepository.load`` (median of the repeats) beside the raw driver running the
same SELECTs on the same connection and fetching every row (no event objects built).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import Row, print_table, setup_django, timed

EVENTS_AT_SNAPSHOT = 10_000
EVENTS_AFTER_SNAPSHOT = 99
SNAPSHOT_EVERY = 100
REPEAT = 7


def _build_aggregate() -> UUID:
    from django_eventsource import AggregateRepository, DjangoEventStore, DjangoSnapshotStore
    from tests.testapp.domain import Account

    repo = AggregateRepository(
        DjangoEventStore(),
        Account,
        snapshot_store=DjangoSnapshotStore(),
        snapshot_every=SNAPSHOT_EVERY,
    )
    account = repo.create_new(uuid4())
    account.open("bench")
    remaining = EVENTS_AT_SNAPSHOT - 1
    while remaining:
        size = min(1_000, remaining)
        for _ in range(size):
            account.deposit(Decimal("1"))
        repo.save(account)
        remaining -= size
    for _ in range(EVENTS_AFTER_SNAPSHOT):
        account.deposit(Decimal("1"))
    repo.save(account)
    return account.aggregate_id


def _raw_load(aggregate_id: UUID, with_snapshot: bool) -> None:
    """The same SELECTs as ``load``, through the DB-API connection under Django's."""
    from django.db import connection

    connection.ensure_connection()
    raw: Any = connection.connection
    is_pg = connection.vendor == "postgresql"
    key: Any = aggregate_id if is_pg else aggregate_id.hex
    mark = "%s" if is_pg else "?"
    from_version = 0
    cursor = raw.cursor()
    if with_snapshot:
        cursor.execute(
            "SELECT version, schema_version, state, tenant_id, created_at "
            f"FROM eventsource_snapshot WHERE aggregate_type = {mark} AND aggregate_id = {mark}",
            ["Account", key],
        )
        from_version = cursor.fetchone()[0]
    cursor.execute(
        "SELECT position, event_id, event_type, event_version, occurred_at, aggregate_id, "
        "aggregate_type, aggregate_version, tenant_id, actor_id, correlation_id, "
        "causation_id, recorded_at, payload, metadata FROM eventsource_event "
        f"WHERE aggregate_id = {mark} AND aggregate_version > {mark} "
        f"AND aggregate_type = {mark} ORDER BY aggregate_version",
        [key, from_version, "Account"],
    )
    cursor.fetchall()
    cursor.close()


def run(backend: str) -> None:
    os.environ.setdefault("BENCH_PG_NAME", "eventsource_bench_snapshots")
    os.environ.setdefault(
        "BENCH_SQLITE_PATH", str(Path("/tmp") / "eventsource_bench_snapshots.sqlite3")
    )
    setup_django(backend)
    from django_eventsource import AggregateRepository, DjangoEventStore, DjangoSnapshotStore
    from tests.testapp.domain import Account

    aggregate_id = _build_aggregate()
    total = EVENTS_AT_SNAPSHOT + EVENTS_AFTER_SNAPSHOT
    plain = AggregateRepository(DjangoEventStore(), Account)
    snapshotting = AggregateRepository(
        DjangoEventStore(),
        Account,
        snapshot_store=DjangoSnapshotStore(),
        snapshot_every=SNAPSHOT_EVERY,
    )
    assert plain.load(aggregate_id).state == snapshotting.load(aggregate_id).state

    full = timed(lambda: plain.load(aggregate_id), repeat=REPEAT)
    snap = timed(lambda: snapshotting.load(aggregate_id), repeat=REPEAT)
    raw_full = timed(lambda: _raw_load(aggregate_id, with_snapshot=False), repeat=REPEAT)
    raw_snap = timed(lambda: _raw_load(aggregate_id, with_snapshot=True), repeat=REPEAT)
    rows = [
        Row(f"load, full replay ({total:,} events)", full * 1e3, raw_full * 1e3, "ms"),
        Row(
            f"load, snapshot + {EVENTS_AFTER_SNAPSHOT} events",
            snap * 1e3,
            raw_snap * 1e3,
            "ms",
            target="<= 100 events read",
        ),
    ]
    print_table(f"Snapshots on {backend} (median of {REPEAT})", rows)
    print(f"snapshot speed-up over full replay: {full / snap:.0f}x")
    _explain(aggregate_id)


def _explain(aggregate_id: UUID) -> None:
    """Print the plans of the two queries of a snapshot load (PostgreSQL only)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    queries: dict[str, tuple[str, list[Any]]] = {
        "snapshot row": (
            "SELECT version FROM eventsource_snapshot "
            "WHERE aggregate_type = %s AND aggregate_id = %s LIMIT 1",
            ["Account", aggregate_id],
        ),
        "events after the snapshot": (
            "SELECT * FROM eventsource_event WHERE aggregate_id = %s "
            "AND aggregate_version > %s AND aggregate_type = %s ORDER BY aggregate_version",
            [aggregate_id, EVENTS_AT_SNAPSHOT, "Account"],
        ),
    }
    with connection.cursor() as cursor:
        for label, (sql, params) in queries.items():
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + sql, params)
            print(f"\nEXPLAIN {label}:")
            for (line,) in cursor.fetchall():
                print("  " + line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
