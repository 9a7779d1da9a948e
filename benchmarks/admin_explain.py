"""The events admin on a million events: query counts, timings and EXPLAIN plans.

Loads 1,000,000 events into PostgreSQL with one ``INSERT … SELECT generate_series``,
renders the events changelist unfiltered, filtered and searched through the Django
test client, and prints, for every page, the number of queries, the median render time
and ``EXPLAIN ANALYZE`` of each query that reads ``eventsource_event``. Fails when a
plan contains ``Seq Scan on eventsource_event``.

    .venv/bin/python benchmarks/admin_explain.py [--events 1000000] [--full-plans]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import setup_django, timed

AGGREGATE_TYPES = ["Account", "Order", "Invoice", "Shipment", "Customer"]
# Skewed on purpose: one common type, some medium ones and a rare one (1 in 1,000).
EVENT_TYPES = (
    ["MoneyDeposited"] * 500 + ["AccountOpened"] * 200 + ["OrderPlaced"] * 299 + ["AccountClosed"]
)
TENANTS = 20
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]


def load_events(count: int) -> float:
    """Insert ``count`` events (10 per aggregate) and ANALYZE; returns the seconds taken."""
    from django.db import connection

    event_types = "ARRAY[" + ",".join(f"'{t}'" for t in EVENT_TYPES) + "]"
    aggregate_types = "ARRAY[" + ",".join(f"'{t}'" for t in AGGREGATE_TYPES) + "]"
    start = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO eventsource_event (
                event_id, aggregate_type, aggregate_id, aggregate_version, event_type,
                event_version, tenant_id, actor_id, correlation_id, causation_id,
                occurred_at, recorded_at, payload, metadata)
            SELECT gen_random_uuid(),
                   ({aggregate_types})[1 + (g / 10) % {len(AGGREGATE_TYPES)}],
                   md5('aggregate' || (g / 10))::uuid,
                   1 + g % 10,
                   ({event_types})[1 + (g::bigint * 7919) % {len(EVENT_TYPES)}],
                   1,
                   CASE WHEN g % 4 = 0 THEN NULL
                        ELSE md5('tenant' || (g / 10) % {TENANTS})::uuid END,
                   'user-' || (g % 100),
                   md5('correlation' || (g / 5))::uuid,
                   NULL,
                   now() - make_interval(secs => ({count} - g)),
                   now() - make_interval(secs => ({count} - g)),
                   jsonb_build_object('amount', (g % 1000)::text, 'note', 'event ' || g),
                   '{{}}'::jsonb
            FROM generate_series(0, {count - 1}) AS g
            """
        )
        cursor.execute("ANALYZE eventsource_event")
    return time.perf_counter() - start


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


def abridged(plan: str) -> str:
    noise = ("Rows Removed", "Planning Time", "Recheck Cond", "Heap Blocks", "Sort Method")
    keep = [line for line in plan.splitlines() if not any(n in line for n in noise)]
    return "\n".join(keep)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--full-plans", action="store_true", help="do not abridge the plans")
    args = parser.parse_args()

    os.environ.setdefault("BENCH_PG_NAME", "eventsource_bench_admin")
    setup_django("postgres")

    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client, override_settings
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from django_eventsource.models import EventRecord

    seconds = load_events(args.events)
    print(f"Loaded {args.events:,} events in {seconds:.1f} s (INSERT … SELECT generate_series)")

    # A fresh table numbers events from 1: this one is g = events/2 + 1, odd, so it has a tenant.
    sample = EventRecord.objects.get(position=args.events // 2 + 2)
    changelist = reverse("admin:django_eventsource_eventrecord_changelist")
    pages: list[tuple[str, dict[str, str]]] = [
        ("unfiltered", {}),
        ("event type (common)", {"event_type": "MoneyDeposited"}),
        ("event type (rare, 0.1%)", {"event_type": "AccountClosed"}),
        ("aggregate type", {"aggregate_type": "Invoice"}),
        ("tenant", {"tenant_id": str(sample.tenant_id)}),
        (
            "aggregate stream link",
            {"aggregate_type": sample.aggregate_type, "aggregate_id": str(sample.aggregate_id)},
        ),
        ("search by UUID", {"q": str(sample.correlation_id)}),
    ]

    failures = 0
    with override_settings(MIDDLEWARE=MIDDLEWARE, DEBUG=False):
        user = User.objects.create_superuser("bench", "bench@example.com", "bench")
        client = Client()
        client.force_login(user)
        detail = reverse("admin:django_eventsource_eventrecord_change", args=[sample.position])
        rows: list[tuple[str, int, float]] = []
        for label, params in [*pages, ("event detail page", {"__url__": detail})]:
            url = params.pop("__url__", changelist)

            def render(url: str = url, params: dict[str, str] = params, label: str = label) -> Any:
                response = client.get(url, params)
                assert response.status_code == 200, (label, response.status_code)
                return response

            render()  # warm the cache like a second visit would
            with CaptureQueriesContext(connection) as context:
                render()
            # The log is cleared by the next request: keep a copy.
            queries = list(context.captured_queries)
            median = timed(render, repeat=5)
            rows.append((label, len(queries), median * 1000))
            print(f"\n=== {label}: {len(queries)} queries, {median * 1000:.1f} ms median ===")
            for query in queries:
                sql = query["sql"]
                if "eventsource_event" not in sql:
                    continue
                if sql.startswith("EXPLAIN"):
                    print(f"-- row estimate (no execution): {sql[:100]} …")
                    continue
                plan = explain(sql)
                print(f"-- {sql[:160]}{' …' if len(sql) > 160 else ''}")
                print(plan if args.full_plans else abridged(plan))
                if "Seq Scan on eventsource_event" in plan:
                    failures += 1
                    print("!! sequential scan on eventsource_event")

    print("\npage                          queries   median ms")
    for label, count, ms in rows:
        print(f"{label:<30}{count:>7}{ms:>12.1f}")
    if failures:
        print(f"\nFAILED: {failures} plan(s) with a sequential scan on eventsource_event")
        return 1
    print("\nOK: no sequential scan on eventsource_event")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
