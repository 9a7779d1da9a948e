"""Event store benchmark: ``DjangoEventStore`` beside the raw driver doing the same SQL.

Usage::

    python benchmarks/bench_store.py                    # PostgreSQL, then SQLite
    python benchmarks/bench_store.py --backend sqlite   # one backend
    python benchmarks/bench_store.py --explain          # also print the query plans

Each backend runs in its own process on a fresh database (``BENCH_PG_NAME``, default
``eventsource_bench_store``; ``BENCH_SQLITE_PATH``). The reference column runs the same
statements through psycopg 3 / ``sqlite3`` directly, without events, pydantic or Django.

PostgreSQL runs twice: with Django's default connection (client-side parameter binding,
no prepared statements) and with ``BENCH_PG_SERVER_SIDE_BINDING=1``, which sets Django's
``OPTIONS = {"server_side_binding": True, "prepare_threshold": 5}``. The raw reference
prepares its statements in the same cases as Django, so both sides do the same work on
the server.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import Row, print_table, setup_django

SAVE_REPEAT = 300
BATCH = 1_000
LOAD_EVENTS = 1_000
BATCH_REPEAT = 15
READ_ALL_EVENTS = 100_000

COLUMNS = (
    "position, event_id, event_type, event_version, occurred_at, aggregate_id, aggregate_type, "
    "aggregate_version, tenant_id, actor_id, correlation_id, causation_id, recorded_at, "
    "payload, metadata"
)
INSERT_COLUMNS = (
    "event_id, aggregate_type, aggregate_id, aggregate_version, event_type, event_version, "
    "tenant_id, actor_id, correlation_id, causation_id, occurred_at, payload, metadata"
)


class Raw:
    """The reference: the store's statements through the bare driver."""

    def __init__(self, backend: str) -> None:
        from django.db import connection

        self.postgres = backend == "postgres"
        settings = connection.settings_dict
        if self.postgres:
            import psycopg

            self.conn: Any = psycopg.connect(
                host=settings["HOST"],
                port=settings["PORT"],
                user=settings["USER"],
                dbname=settings["NAME"],
                autocommit=True,
            )
            # Prepare statements exactly when Django does: never by default, after
            # ``prepare_threshold`` executions with server-side binding. Otherwise the
            # comparison would measure a connection setting, not the library.
            options = settings.get("OPTIONS", {})
            self.conn.prepare_threshold = (
                options.get("prepare_threshold") if options.get("server_side_binding") else None
            )
            self.ph = "%s"
        else:
            import sqlite3

            self.conn = sqlite3.connect(settings["NAME"], isolation_level=None, timeout=30)
            self.ph = "?"

    def uuid(self, value: UUID) -> Any:
        return value if self.postgres else value.hex

    def when(self, value: datetime) -> Any:
        return value if self.postgres else value.astimezone(UTC).replace(tzinfo=None).isoformat(" ")

    def json(self, value: Any) -> Any:
        if self.postgres:
            from psycopg.types.json import Jsonb

            return Jsonb(value)
        return json.dumps(value)

    def load(self, aggregate_id: UUID) -> list[Any]:
        ph = self.ph
        cur = self.conn.execute(
            f"SELECT {COLUMNS} FROM eventsource_event WHERE aggregate_id = {ph} "
            f"AND aggregate_version > {ph} AND aggregate_type = {ph} ORDER BY aggregate_version",
            (self.uuid(aggregate_id), 0, "Account"),
        )
        return list(cur.fetchall())

    def append(self, aggregate_id: UUID, rows: list[tuple[Any, ...]]) -> int:
        """State query, multi-row insert (+ notify on PostgreSQL), in one transaction."""
        ph = self.ph
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE" if not self.postgres else "BEGIN")
        ids = [self.uuid(r[0]) for r in rows]
        conn.execute(
            f"SELECT NULL, NULL, NULL, COALESCE(MAX(aggregate_version), 0), NULL "
            f"FROM eventsource_event WHERE aggregate_id = {ph} AND aggregate_type = {ph} "
            f"UNION ALL SELECT event_id, aggregate_type, aggregate_id, aggregate_version, position "
            f"FROM eventsource_event WHERE event_id IN ({', '.join([ph] * len(ids))})",
            [self.uuid(aggregate_id), "Account", *ids],
        ).fetchall()
        params: list[Any] = []
        for r in rows:
            params += (
                self.uuid(r[0]),
                r[1],
                self.uuid(r[2]),
                r[3],
                r[4],
                r[5],
                None,
                None,
                self.uuid(r[6]),
                None,
                self.when(r[7]),
                self.json(r[8]),
                self.json(r[9]),
            )
        values = ", ".join(["(" + ", ".join([ph] * 13) + ")"] * len(rows))
        insert = f"INSERT INTO eventsource_event ({INSERT_COLUMNS}) VALUES {values}"
        if self.postgres:
            position = conn.execute(
                f"WITH inserted AS ({insert} RETURNING position) SELECT MAX(position), "
                f"pg_notify('eventsource_events', MAX(position)::text) FROM inserted",
                params,
            ).fetchone()[0]
        else:
            position = max(p for (p,) in conn.execute(f"{insert} RETURNING position", params))
        conn.execute("COMMIT")
        return int(position)

    def read_all(self, page_size: int = 1000) -> int:
        """Keyset pages of ``page_size`` rows over the whole table, as the store reads them."""
        ph = self.ph
        position, count = 0, 0
        while True:
            rows = self.conn.execute(
                f"SELECT {COLUMNS} FROM eventsource_event WHERE position > {ph} "
                f"ORDER BY position ASC LIMIT {int(page_size)}",
                (position,),
            ).fetchall()
            count += len(rows)
            if len(rows) < page_size:
                return count
            position = rows[-1][0]


def raw_rows(events: list[Any]) -> list[tuple[Any, ...]]:
    """Plain tuples of what the raw driver inserts (the events' data, no pydantic)."""
    return [
        (
            e.event_id,
            e.aggregate_type,
            e.aggregate_id,
            e.aggregate_version,
            e.event_type,
            e.event_version,
            e.correlation_id,
            e.occurred_at,
            {"amount": str(e.amount)} if hasattr(e, "amount") else {"owner": e.owner},
            {},
        )
        for e in events
    ]


def paired(library: Any, reference: Any, repeat: int) -> tuple[float, float]:
    """Median milliseconds of both, calls alternated so load changes hit both alike."""
    lib: list[float] = []
    ref: list[float] = []
    for _ in range(repeat):
        for func, samples in ((library, lib), (reference, ref)):
            start = time.perf_counter()
            func()
            samples.append(time.perf_counter() - start)
    return statistics.median(lib) * 1e3, statistics.median(ref) * 1e3


def deposits(aggregate_id: UUID, start: int, count: int) -> list[Any]:
    from tests.testapp.domain import AccountOpened, MoneyDeposited

    events: list[Any] = []
    for version in range(start, start + count):
        if version == 1:
            events.append(AccountOpened(aggregate_id=aggregate_id, owner="bench"))
        else:
            events.append(
                MoneyDeposited(
                    aggregate_id=aggregate_id, amount=Decimal(1), aggregate_version=version
                )
            )
    return events


def explain(backend: str) -> None:
    from django.db import connection

    from django_eventsource.stores.django import DjangoEventStore

    store = DjangoEventStore()
    aggregate = connection.cursor()
    aggregate.execute("SELECT aggregate_id FROM eventsource_event ORDER BY position DESC LIMIT 1")
    agg_id = aggregate.fetchone()[0]
    prefix = (
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)"
        if backend == "postgres"
        else ("EXPLAIN QUERY PLAN")
    )
    queries = {
        "load one stream": (
            f"SELECT {COLUMNS} FROM eventsource_event WHERE aggregate_id = %s "
            "AND aggregate_version > 0 AND aggregate_type = 'Account' ORDER BY aggregate_version",
            [agg_id],
        ),
        "stream version": (
            "SELECT COALESCE(MAX(aggregate_version), 0) FROM eventsource_event "
            "WHERE aggregate_id = %s AND aggregate_type = 'Account'",
            [agg_id],
        ),
        "event id lookup": (
            "SELECT event_id FROM eventsource_event WHERE event_id IN (%s)",
            [uuid4() if backend == "postgres" else uuid4().hex],
        ),
        "read_all page": (
            f"SELECT {COLUMNS} FROM eventsource_event WHERE position > 50000 "
            "ORDER BY position ASC LIMIT 1000",
            [],
        ),
    }
    if backend == "postgres":
        queries["gap scan (blockers present)"] = (
            "SELECT MIN(run.position) FROM (SELECT position, lead(position) OVER "
            "(ORDER BY position) AS next FROM eventsource_event WHERE position > 50000 "
            "AND position <= 60000) run WHERE run.next IS NULL OR run.next <> run.position + 1",
            [],
        )
    with connection.cursor() as cursor:
        if backend == "postgres":
            cursor.execute("VACUUM ANALYZE eventsource_event")
        for name, (sql, params) in queries.items():
            cursor.execute(f"{prefix} {sql}", params)
            print(f"\n-- {name}")
            for row in cursor.fetchall():
                print("   ", row[-1])
    print(f"\nsafe_high_water_mark() = {store.safe_high_water_mark()}")


def run(backend: str, show_plans: bool) -> None:
    if backend == "postgres":
        os.environ.setdefault("BENCH_PG_NAME", "eventsource_bench_store")
    else:
        path = Path(tempfile.gettempdir()) / "eventsource_bench_store.sqlite3"
        os.environ.setdefault("BENCH_SQLITE_PATH", str(path))
    setup_django(backend)

    from django_eventsource import AggregateRepository
    from django_eventsource.stores.django import DjangoEventStore
    from tests.testapp.domain import Account

    store = DjangoEventStore()
    repo = AggregateRepository(store, Account)
    raw = Raw(backend)
    rows: list[Row] = []

    # 1. Save one new event on an existing 10-event aggregate: load, then save in its own
    # transaction. Every call uses another aggregate, so the stream length stays at 10.
    count = SAVE_REPEAT + 20
    lib_ids, raw_ids = [uuid4() for _ in range(count)], [uuid4() for _ in range(count)]
    for lib_id, raw_id in zip(lib_ids, raw_ids, strict=True):
        store.append_events(lib_id, "Account", deposits(lib_id, 1, 10), 0)
        raw.append(raw_id, raw_rows(deposits(raw_id, 1, 10)))
    raw_new = [raw_rows(deposits(raw_id, 11, 1)) for raw_id in raw_ids]
    lib_next, raw_next = iter(lib_ids), iter(zip(raw_ids, raw_new, strict=True))

    def lib_save() -> None:
        account = repo.load(next(lib_next))
        account.deposit(Decimal(1))
        repo.save(account)

    def raw_save() -> None:
        raw_id, new_rows = next(raw_next)
        raw.load(raw_id)
        raw.append(raw_id, new_rows)

    for _ in range(20):  # warm up connections and caches
        lib_save()
        raw_save()
    lib_ms, raw_ms = paired(lib_save, raw_save, SAVE_REPEAT)
    rows.append(Row("save: load + 1 new event (own transaction)", lib_ms, raw_ms, "ms", "<= 1.5x"))

    # 2. Append a batch of 1,000 events to a new aggregate (events built beforehand).
    lib_batches = []
    raw_batches = []
    for _ in range(BATCH_REPEAT + 2):
        lib_id, raw_id = uuid4(), uuid4()
        lib_batches.append((lib_id, deposits(lib_id, 1, BATCH)))
        raw_batches.append((raw_id, raw_rows(deposits(raw_id, 1, BATCH))))
    lib_batch_iter, raw_batch_iter = iter(lib_batches), iter(raw_batches)

    def lib_batch() -> None:
        agg, events = next(lib_batch_iter)
        store.append_events(agg, "Account", events, 0)

    def raw_batch() -> None:
        raw.append(*next(raw_batch_iter))

    paired(lib_batch, raw_batch, 2)  # warm-up
    lib_ms, raw_ms = paired(lib_batch, raw_batch, BATCH_REPEAT)
    rows.append(Row(f"append {BATCH:,} events in one call", lib_ms, raw_ms, "ms", "<= 2x"))

    # 3. Load a 1,000-event aggregate.
    big, raw_big = uuid4(), uuid4()
    store.append_events(big, "Account", deposits(big, 1, LOAD_EVENTS), 0)
    raw.append(raw_big, raw_rows(deposits(raw_big, 1, LOAD_EVENTS)))
    paired(lambda: store.get_events(big, "Account"), lambda: raw.load(raw_big), 3)
    lib_ms, raw_ms = paired(lambda: store.get_events(big, "Account"), lambda: raw.load(raw_big), 30)
    rows.append(
        Row(f"load {LOAD_EVENTS:,} events (store.get_events)", lib_ms, raw_ms, "ms", "<= 2.5x")
    )
    # What validation alone costs: rebuilding the same 1,000 events from plain dicts.
    dicts = [(type(e), e.to_dict()) for e in store.get_events(big, "Account").events]
    lib_ms, raw_ms = paired(
        lambda: [cls.model_validate(d) for cls, d in dicts], lambda: raw.load(raw_big), 30
    )
    rows.append(
        Row(f"pydantic validation alone, {LOAD_EVENTS:,} events", lib_ms, raw_ms, "ms", "(info)")
    )
    lib_ms, raw_ms = paired(lambda: repo.load(big), lambda: raw.load(raw_big), 30)
    rows.append(
        Row(f"load {LOAD_EVENTS:,}-event aggregate (repo.load)", lib_ms, raw_ms, "ms", "(info)")
    )

    # 4. read_all throughput over 100,000 events.
    stored = store.get_global_position()
    while stored < READ_ALL_EVENTS:
        agg = uuid4()
        count = min(BATCH, READ_ALL_EVENTS - stored)
        store.append_events(agg, "Account", deposits(agg, 1, count), 0)
        stored += count
    total = sum(1 for _ in store.read_all())
    lib_ms, raw_ms = paired(lambda: sum(1 for _ in store.read_all()), raw.read_all, 3)
    rows.append(
        Row(
            f"read_all over {total:,} events",
            total / lib_ms,
            total / raw_ms,
            "k/s",
            ">= 0.40x",
            higher_is_better=True,
        )
    )

    from django.db import connection

    server = ".".join(str(part) for part in connection.get_database_version())
    binding = (
        ", server-side binding, prepared statements"
        if connection.settings_dict.get("OPTIONS", {}).get("server_side_binding")
        else ""
    )
    print_table(f"Event store on {connection.display_name} {server}{binding}", rows)
    if show_plans:
        explain(backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["postgres", "sqlite"])
    parser.add_argument("--explain", action="store_true", help="print the hot queries' plans")
    args = parser.parse_args()
    if args.backend:
        run(args.backend, args.explain)
        return
    runs = [
        ("postgres", {}),
        ("postgres", {"BENCH_PG_SERVER_SIDE_BINDING": "1"}),
        ("sqlite", {}),
    ]
    for backend, env in runs:
        command = [sys.executable, __file__, "--backend", backend]
        if args.explain and not env:
            command.append("--explain")
        subprocess.run(command, check=True, env={**os.environ, **env})


if __name__ == "__main__":
    main()
