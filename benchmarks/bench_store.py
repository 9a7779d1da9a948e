"""Event store benchmark: ``DjangoEventStore`` beside the raw driver doing the same work.

Usage::

    python benchmarks/bench_store.py                    # PostgreSQL, then SQLite
    python benchmarks/bench_store.py --backend postgres # one backend
    python benchmarks/bench_store.py --quick            # smaller sizes, fewer rounds
    python benchmarks/bench_store.py --explain          # also print the query plans

Each backend runs in its own process on a fresh database (``BENCH_PG_NAME``, default
``eventsource_bench_store``; ``BENCH_SQLITE_PATH``). The reference column runs the same
transactions through psycopg 3 / ``sqlite3`` directly, without events, pydantic or
Django, decoding what it reads (JSON included) with the driver's own loaders.

``read_all`` is measured twice on the same 100,000 events: first on the freshly loaded
table, which has never been analyzed (autovacuum is switched off for it until then), as
after an import or a burst of writes; then after ``ANALYZE``.

``BENCH_PG_SERVER_SIDE_BINDING=1`` sets Django's ``OPTIONS = {"server_side_binding":
True, "prepare_threshold": 5}``; the raw reference prepares its statements in the same
cases as Django (never by default), so both sides do the same work on the server.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import Row, print_table, raw_connection, setup_django

COLUMNS = (
    "position, event_id, event_type, event_version, occurred_at, aggregate_id, aggregate_type, "
    "aggregate_version, tenant_id, actor_id, correlation_id, causation_id, recorded_at, "
    "payload, metadata"
)
INSERT_COLUMNS = (
    "event_id, aggregate_type, aggregate_id, aggregate_version, event_type, event_version, "
    "tenant_id, actor_id, correlation_id, causation_id, occurred_at, payload, metadata"
)
OUTBOX_COLUMNS = (
    "event_id, event_type, aggregate_id, aggregate_type, aggregate_version, tenant_id, "
    "event_data, status, retry_count, last_error, claimed_by"
)


class Sizes:
    def __init__(self, quick: bool) -> None:
        self.save_repeat = 60 if quick else 300
        self.batch = 1_000
        self.batch_repeat = 5 if quick else 15
        self.load_events = 1_000
        self.load_repeat = 10 if quick else 30
        self.read_all_events = 20_000 if quick else 100_000
        self.read_all_rounds = 2 if quick else 5
        self.writer_threads = 8
        self.writer_transactions = 40 if quick else 150
        self.writer_rounds = 1 if quick else 3


class Raw:
    """The reference: the same transactions through the bare driver.

    ``decode`` rows as the driver does (psycopg: UUIDs, datetimes, ``jsonb`` to dicts;
    ``sqlite3``: the JSON columns through ``json.loads``).
    """

    def __init__(self, backend: str) -> None:
        self.postgres = backend == "postgres"
        self.conn, self.ph = raw_connection(backend, autocommit=True)

    def close(self) -> None:
        self.conn.close()

    def uuid(self, value: UUID) -> Any:
        return value if self.postgres else value.hex

    def when(self, value: datetime) -> Any:
        return value if self.postgres else value.astimezone(UTC).replace(tzinfo=None).isoformat(" ")

    def decoded(self, rows: list[Any]) -> list[Any]:
        if self.postgres:
            return rows  # psycopg's loaders already decoded every column
        return [(*r[:13], json.loads(r[13]), json.loads(r[14])) for r in rows]

    def load(self, aggregate_id: UUID) -> list[Any]:
        ph = self.ph
        cur = self.conn.execute(
            f"SELECT {COLUMNS} FROM eventsource_event WHERE aggregate_id = {ph} "
            f"AND aggregate_type = {ph} AND aggregate_version > {ph} ORDER BY aggregate_version",
            (self.uuid(aggregate_id), "Account", 0),
        )
        return self.decoded(cur.fetchall())

    def append(self, aggregate_id: UUID, rows: list[tuple[Any, ...]]) -> int:
        """One transaction: stream state query, events and outbox rows, notify, commit."""
        if self.postgres:
            return self._append_postgres(aggregate_id, rows)
        return self._append_sqlite(aggregate_id, rows)

    def _append_postgres(self, aggregate_id: UUID, rows: list[tuple[Any, ...]]) -> int:
        from psycopg.types.json import Jsonb

        conn = self.conn
        conn.execute("BEGIN")
        conn.execute(
            "SELECT NULL, NULL, NULL, COALESCE(MAX(aggregate_version), 0), NULL "
            "FROM eventsource_event WHERE aggregate_id = %s AND aggregate_type = %s "
            "UNION ALL SELECT event_id, aggregate_type, aggregate_id, aggregate_version, "
            "position FROM eventsource_event WHERE event_id = ANY(%b)",
            [aggregate_id, "Account", [r[0] for r in rows]],
        ).fetchall()
        # Multi-row insert through unnest, with binary arrays: the fastest form psycopg
        # offers for a batch in one statement.
        columns = [list(column) for column in zip(*rows, strict=True)]
        position = conn.execute(
            f"WITH batch AS MATERIALIZED (SELECT * FROM unnest(%b::uuid[], %b::text[], "
            f"%b::uuid[], %b::int[], %b::text[], %b::int[], %b::uuid[], %b::timestamptz[], "
            f"%b::jsonb[], %b::jsonb[], %b::jsonb[]) AS b(event_id, aggregate_type, "
            f"aggregate_id, aggregate_version, event_type, event_version, correlation_id, "
            f"occurred_at, payload, metadata, event_data)), "
            f"inserted AS (INSERT INTO eventsource_event ({INSERT_COLUMNS}) SELECT event_id, "
            f"aggregate_type, aggregate_id, aggregate_version, event_type, event_version, "
            f"NULL, NULL, correlation_id, NULL, occurred_at, payload, metadata FROM batch "
            f"ORDER BY aggregate_version RETURNING position), "
            f"outboxed AS (INSERT INTO eventsource_outbox ({OUTBOX_COLUMNS}) SELECT "
            f"event_id, event_type, aggregate_id, aggregate_type, aggregate_version, NULL, "
            f"event_data, 'pending', 0, '', '' FROM batch ORDER BY aggregate_version) "
            f"SELECT MAX(position), pg_notify('eventsource_events', MAX(position)::text) "
            f"FROM inserted",
            [
                *columns[:8],
                [Jsonb(p) for p in columns[8]],
                [Jsonb(m) for m in columns[9]],
                [Jsonb(d) for d in columns[10]],
            ],
        ).fetchone()[0]
        conn.execute("COMMIT")
        return int(position)

    def _append_sqlite(self, aggregate_id: UUID, rows: list[tuple[Any, ...]]) -> int:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        ids = [r[0].hex for r in rows]
        conn.execute(
            f"SELECT NULL, NULL, NULL, COALESCE(MAX(aggregate_version), 0), NULL "
            f"FROM eventsource_event WHERE aggregate_id = ? AND aggregate_type = ? "
            f"UNION ALL SELECT event_id, aggregate_type, aggregate_id, aggregate_version, "
            f"position FROM eventsource_event WHERE event_id IN ({', '.join('?' * len(ids))})",
            [aggregate_id.hex, "Account", *ids],
        ).fetchall()
        position = 0
        for start in range(0, len(rows), 2_000):
            chunk = rows[start : start + 2_000]
            params: list[Any] = []
            for r in chunk:
                params += (
                    r[0].hex,
                    r[1],
                    r[2].hex,
                    r[3],
                    r[4],
                    r[5],
                    None,
                    None,
                    r[6].hex,
                    None,
                    self.when(r[7]),
                    json.dumps(r[8]),
                    json.dumps(r[9]),
                )
            values = ", ".join(["(" + ", ".join("?" * 13) + ")"] * len(chunk))
            cur = conn.execute(
                f"INSERT INTO eventsource_event ({INSERT_COLUMNS}) VALUES {values} "
                "RETURNING position",
                params,
            )
            position = max(position, *(p for (p,) in cur.fetchall()))
        conn.executemany(
            f"INSERT INTO eventsource_outbox ({OUTBOX_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, NULL, ?, 'pending', 0, '', '')",
            [(r[0].hex, r[4], r[2].hex, r[1], r[3], json.dumps(r[10])) for r in rows],
        )
        conn.execute("COMMIT")
        return int(position)

    def read_all(self, page_size: int = 1000) -> int:
        """Keyset pages of ``page_size`` rows over the whole table, decoded."""
        ph = self.ph
        position, count = 0, 0
        while True:
            rows = self.decoded(
                self.conn.execute(
                    f"SELECT {COLUMNS} FROM eventsource_event WHERE position > {ph} "
                    f"ORDER BY position ASC LIMIT {int(page_size)}",
                    (position,),
                ).fetchall()
            )
            count += len(rows)
            if len(rows) < page_size:
                return count
            position = rows[-1][0]


def plain_rows(aggregate_id: UUID, start: int, count: int) -> list[tuple[Any, ...]]:
    """What the raw driver inserts for the events ``deposits`` builds, without pydantic:
    the event row's values, its payload and metadata, and the outbox row's event data.
    """
    now = datetime.now(UTC)
    rows = []
    for version in range(start, start + count):
        event_id, correlation_id = uuid4(), uuid4()
        if version == 1:
            event_type, payload = "AccountOpened", {"owner": "bench", "opening_balance": "0"}
        else:
            event_type, payload = "MoneyDeposited", {"amount": "1"}
        event_data = {
            "event_id": str(event_id),
            "event_type": event_type,
            "event_version": 1,
            "aggregate_id": str(aggregate_id),
            "aggregate_type": "Account",
            "aggregate_version": version,
            "correlation_id": str(correlation_id),
            "occurred_at": now.isoformat(),
            "metadata": {},
            **payload,
        }
        rows.append(
            (
                event_id,
                "Account",
                aggregate_id,
                version,
                event_type,
                1,
                correlation_id,
                now,
                payload,
                {},
                event_data,
            )
        )
    return rows


def paired(
    library: Callable[[], Any], reference: Callable[[], Any], repeat: int
) -> tuple[float, float]:
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


def fill(store: Any, count: int, batch: int = 1_000) -> None:
    """Append ``count`` events, ``batch`` per aggregate."""
    written = 0
    while written < count:
        agg = uuid4()
        size = min(batch, count - written)
        store.append_events(agg, "Account", deposits(agg, 1, size), 0)
        written += size


PAGE_QUERIES = {
    "read_all page as the store reads it (a window of positions)": (
        f"SELECT {COLUMNS} FROM eventsource_event WHERE position > %(after)s "
        "AND position <= %(after)s + 1000"
    ),
    "keyset page without upper bound (the raw reference)": (
        f"SELECT {COLUMNS} FROM eventsource_event WHERE position > %(after)s "
        "ORDER BY position ASC LIMIT 1000"
    ),
    "former page (keyset up to the safe mark)": (
        f"SELECT {COLUMNS} FROM eventsource_event WHERE position > %(after)s "
        "AND position <= %(mark)s ORDER BY position ASC LIMIT 1000"
    ),
}


def page_plans(label: str, total: int) -> list[str]:
    """``EXPLAIN ANALYZE`` of the page queries at mid-table (PostgreSQL)."""
    from django.db import connection

    lines = [f"\n== query plans, {label}"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT MIN(position), MAX(position) FROM eventsource_event")
        first, last = cursor.fetchone()
        params = {"after": first + total // 2, "mark": last}
        for name, sql in PAGE_QUERIES.items():
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) {sql}", params)
            lines.append(f"-- {name}")
            lines += ["    " + row[0] for row in cursor.fetchall()]
    return lines


def never_analyzed() -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT last_analyze IS NULL AND last_autoanalyze IS NULL "
            "FROM pg_stat_user_tables WHERE relname = 'eventsource_event'"
        )
        return bool(cursor.fetchone()[0])


def forget_statistics() -> None:
    """Put the event table back where the planner sees it as never analyzed: no column
    statistics, unknown row count (needs a superuser; the benchmark database is its own).
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM pg_statistic WHERE starelid = 'eventsource_event'::regclass")
        cursor.execute(
            "UPDATE pg_class SET reltuples = -1, relpages = 0 "
            "WHERE oid = 'eventsource_event'::regclass"
        )


def bench_read_all(backend: str, sizes: Sizes, store: Any, raw: Raw, rows: list[Row]) -> list[str]:
    """read_all on the freshly loaded, never analyzed table and after ANALYZE.

    On PostgreSQL the two states alternate, round by round, so that load changes on the
    machine hit both alike: the first round reads the table as loaded (autovacuum is
    off for it), later ones after the statistics have been removed again. Each
    measured read follows an unmeasured one, so both states start from a warm cache.
    """
    from django.db import connection

    plans: list[str] = []
    postgres = backend == "postgres"
    if postgres:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE eventsource_event SET (autovacuum_enabled = false)")
    fill(store, sizes.read_all_events)
    total = sum(1 for _ in store.read_all())

    def library() -> None:
        assert sum(1 for _ in store.read_all()) == total

    def reference() -> None:
        assert raw.read_all() == total

    states = ("fresh table, never analyzed", "after ANALYZE") if postgres else ("",)
    samples: dict[str, tuple[list[float], list[float]]] = {s: ([], []) for s in states}
    for round_number in range(sizes.read_all_rounds):
        for state in states:
            if postgres and state.startswith("fresh"):
                if round_number == 0:
                    assert never_analyzed(), "autovacuum analyzed the table"
                else:
                    forget_statistics()
            elif postgres:
                with connection.cursor() as cursor:
                    cursor.execute("ANALYZE eventsource_event")
            # ANALYZE reads the table and warms the cache: an unmeasured read first,
            # in both states, so that neither starts colder than the other.
            library()
            lib_ms, raw_ms = paired(library, reference, 1)
            samples[state][0].append(lib_ms)
            samples[state][1].append(raw_ms)
            if postgres and round_number == 0:
                plans += page_plans(state, total)
    for state, (lib, ref) in samples.items():
        rows.append(
            Row(
                f"read_all {total:,}{', ' + state if state else ''}"[:44],
                total / statistics.median(lib),
                total / statistics.median(ref),
                "k/s",
                ">= 0.60x",
                higher_is_better=True,
            )
        )
    if postgres:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE eventsource_event RESET (autovacuum_enabled)")
        fresh, after = rows[-2:]
        rows.append(
            Row(
                "read_all: fresh ÷ analyzed (library)",
                fresh.library,
                after.library,
                "k/s",
                ">= 0.80x",
                higher_is_better=True,
            )
        )
    return plans


def bench_writers(backend: str, sizes: Sizes, store: Any, rows: list[Row]) -> None:
    """``writer_threads`` threads, each committing 1-event transactions on new streams."""
    from django.db import connections

    threads, per_thread = sizes.writer_threads, sizes.writer_transactions

    def run(work: Callable[[int], Callable[[], None]], done: Callable[[], None]) -> float:
        barrier = threading.Barrier(threads + 1)
        errors: list[BaseException] = []

        def worker(index: int) -> None:
            step = work(index)
            try:
                barrier.wait()
                for _ in range(per_thread):
                    step()
            except BaseException as exc:
                errors.append(exc)
            finally:
                done()

        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - start
        if errors:
            raise errors[0]
        return threads * per_thread / elapsed

    def library(index: int) -> Callable[[], None]:
        def step() -> None:
            agg = uuid4()
            store.append_events(agg, "Account", deposits(agg, 1, 1), 0)

        return step

    local = threading.local()

    def reference(index: int) -> Callable[[], None]:
        local.raw = raw = Raw(backend)

        def step() -> None:
            agg = uuid4()
            raw.append(agg, plain_rows(agg, 1, 1))

        return step

    def close_raw() -> None:
        raw = getattr(local, "raw", None)
        if raw is not None:
            raw.close()

    lib_rates, raw_rates = [], []
    for _ in range(sizes.writer_rounds):
        lib_rates.append(run(library, connections.close_all))
        raw_rates.append(run(reference, close_raw))
    rows.append(
        Row(
            f"{threads} writer threads, 1-event transactions",
            statistics.median(lib_rates) / 1e3,
            statistics.median(raw_rates) / 1e3,
            "k/s",
            ">= 0.50x",
            higher_is_better=True,
        )
    )


def run(backend: str, show_plans: bool, quick: bool) -> None:
    if backend == "postgres":
        os.environ.setdefault("BENCH_PG_NAME", "eventsource_bench_store")
    else:
        path = Path(tempfile.gettempdir()) / "eventsource_bench_store.sqlite3"
        os.environ.setdefault("BENCH_SQLITE_PATH", str(path))
    setup_django(backend)

    from django.db import connection

    from django_eventsource import AggregateRepository
    from django_eventsource.stores.django import DjangoEventStore
    from tests.testapp.domain import Account

    sizes = Sizes(quick)
    store = DjangoEventStore(outbox_enabled=True)
    repo = AggregateRepository(store, Account)
    raw = Raw(backend)
    rows: list[Row] = []

    # 1. read_all first, while the event table has never been analyzed.
    plans = bench_read_all(backend, sizes, store, raw, rows)

    # 2. Load a 10-event aggregate, append one event, commit. Every call uses another
    # aggregate, so the stream length stays at 10.
    count = sizes.save_repeat + 20
    lib_ids, raw_ids = [uuid4() for _ in range(count)], [uuid4() for _ in range(count)]
    for lib_id, raw_id in zip(lib_ids, raw_ids, strict=True):
        store.append_events(lib_id, "Account", deposits(lib_id, 1, 10), 0)
        raw.append(raw_id, plain_rows(raw_id, 1, 10))
    lib_next, raw_next = iter(lib_ids), iter(raw_ids)

    def lib_save() -> None:
        account = repo.load(next(lib_next))
        account.deposit(Decimal(1))
        repo.save(account)

    def raw_save() -> None:
        raw_id = next(raw_next)
        loaded = raw.load(raw_id)
        # The same one new event, built from what was loaded (no pydantic).
        version = loaded[-1][7] + 1
        raw.append(raw_id, plain_rows(raw_id, version, 1))

    for _ in range(20):  # warm up connections and caches
        lib_save()
        raw_save()
    lib_ms, raw_ms = paired(lib_save, raw_save, sizes.save_repeat)
    rows.append(Row("load 10 + append 1 + commit", lib_ms, raw_ms, "ms", "<= 2x"))

    # 3. Append 1,000 events to a new aggregate in one transaction (events built
    # beforehand; serializing them is part of the library's time, encoding the JSON
    # part of the reference's).
    batches: list[tuple[Any, ...]] = []
    for _ in range(sizes.batch_repeat + 2):
        lib_id, raw_id = uuid4(), uuid4()
        batches.append(
            (lib_id, deposits(lib_id, 1, sizes.batch), raw_id, plain_rows(raw_id, 1, sizes.batch))
        )
    lib_batch_iter, raw_batch_iter = iter(batches), iter(batches)

    def lib_batch() -> None:
        agg, events, _, _ = next(lib_batch_iter)
        store.append_events(agg, "Account", events, 0)

    def raw_batch() -> None:
        _, _, agg, raw_batch_rows = next(raw_batch_iter)
        raw.append(agg, raw_batch_rows)

    paired(lib_batch, raw_batch, 2)  # warm-up
    lib_ms, raw_ms = paired(lib_batch, raw_batch, sizes.batch_repeat)
    rows.append(
        Row(f"append {sizes.batch:,} events, one transaction", lib_ms, raw_ms, "ms", "<= 1.5x")
    )

    # 4. Load a 1,000-event aggregate.
    big, raw_big = uuid4(), uuid4()
    store.append_events(big, "Account", deposits(big, 1, sizes.load_events), 0)
    raw.append(raw_big, plain_rows(raw_big, 1, sizes.load_events))
    paired(lambda: store.get_events(big, "Account"), lambda: raw.load(raw_big), 3)
    lib_ms, raw_ms = paired(
        lambda: store.get_events(big, "Account"), lambda: raw.load(raw_big), sizes.load_repeat
    )
    rows.append(
        Row(f"load {sizes.load_events:,} events (get_events)", lib_ms, raw_ms, "ms", "<= 2x")
    )
    lib_ms, raw_ms = paired(lambda: repo.load(big), lambda: raw.load(raw_big), sizes.load_repeat)
    rows.append(
        Row(
            f"load {sizes.load_events:,}-event aggregate (repo.load)", lib_ms, raw_ms, "ms", "<= 2x"
        )
    )

    # 5. Concurrent single-event writers.
    raw.close()
    connection.close()
    bench_writers(backend, sizes, store, rows)

    server = ".".join(str(part) for part in connection.get_database_version())
    binding = (
        ", server-side binding, prepared statements"
        if connection.settings_dict.get("OPTIONS", {}).get("server_side_binding")
        else ""
    )
    print_table(f"Event store on {connection.display_name} {server}{binding}", rows)
    if show_plans:
        print("\n".join(plans))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["postgres", "sqlite"])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    parser.add_argument("--explain", action="store_true", help="print the page query plans")
    args = parser.parse_args()
    if args.backend:
        run(args.backend, args.explain, args.quick)
        return
    for backend in ("postgres", "sqlite"):
        command = [sys.executable, __file__, "--backend", backend]
        command += ["--quick"] * args.quick + ["--explain"] * args.explain
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
