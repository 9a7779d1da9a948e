"""The event-sourcing admin on a million events: query counts, timings and EXPLAIN plans.

Loads 1,000,000 events (and 100,000 published outbox rows, a few pending and failed ones,
checkpoints and dead letters) into PostgreSQL with ``INSERT … SELECT generate_series``,
renders the admin pages through the Django test client (the events list unfiltered,
filtered, searched, paged by position deep into the table, one aggregate's stream, an
event's page, the dashboard, the outbox list and an outbox row's page) and prints, for
every page, the number of queries (all, and those on the event-sourcing tables), the
median render time and ``EXPLAIN ANALYZE`` of each query that reads an event-sourcing
table. Every page is measured twice: on the freshly loaded, never-analyzed tables, then
after ``ANALYZE``. Fails when a plan contains ``Seq Scan on eventsource_event`` or
``Seq Scan on eventsource_outbox``, or a page runs 3 or more queries on the
event-sourcing tables.

    .venv/bin/python benchmarks/admin_explain.py [--events 1000000] [--full-plans]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

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


MAX_OWN_QUERIES = 2  # "under 3 queries per page" on the event-sourcing tables
OUTBOX_PUBLISHED = 100_000


def load_events(count: int) -> float:
    """Insert ``count`` events (10 per aggregate); returns the seconds taken."""
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
    return time.perf_counter() - start


def load_operations(events: int) -> None:
    """Published, pending and failed outbox rows, checkpoints and dead letters."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO eventsource_outbox (
                event_id, event_type, aggregate_id, aggregate_type, aggregate_version,
                tenant_id, event_data, created_at, status, published_at, retry_count,
                last_error, next_attempt_at, first_failed_at, claimed_by, claimed_at)
            SELECT gen_random_uuid(), 'MoneyDeposited', md5('outbox' || g)::uuid, 'Account', 1,
                   NULL, jsonb_build_object('n', g), now() - make_interval(secs => g),
                   CASE WHEN g < 20 THEN 'pending' WHEN g < 25 THEN 'failed'
                        ELSE 'published' END,
                   CASE WHEN g >= 25 THEN now() - make_interval(secs => g) END,
                   CASE WHEN g BETWEEN 20 AND 24 THEN 9 ELSE 0 END,
                   CASE WHEN g BETWEEN 20 AND 24 THEN 'ConnectionError: bus down' ELSE '' END,
                   NULL, NULL, '', NULL
            FROM generate_series(0, {OUTBOX_PUBLISHED + 24}) AS g
            """
        )
    # Through the ORM: columns added later get their defaults.
    from django.utils import timezone

    from django_eventsource.models import Checkpoint, DeadLetter

    Checkpoint.objects.bulk_create(
        Checkpoint(projection_name=f"Projection{i}", position=events - behind)
        for i, behind in enumerate((0, 500, events // 2))
    )
    now = timezone.now()
    DeadLetter.objects.bulk_create(
        DeadLetter(
            event_id=uuid4(),
            projection_name=f"Projection{n % 3}",
            event_type="MoneyDeposited",
            global_position=n,
            error_message="boom",
            error_stacktrace="Traceback",
            retry_count=3,
            status="failed" if n % 2 == 0 else "resolved",
            first_failed_at=now,
            last_failed_at=now,
        )
        for n in range(1, 1001)
    )


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in ("eventsource_event", "eventsource_outbox", "eventsource_checkpoint"):
            cursor.execute(f"ANALYZE {table}")


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

    from django_eventsource.models import EventRecord, OutboxMessage

    seconds = load_events(args.events)
    print(f"Loaded {args.events:,} events in {seconds:.1f} s (INSERT … SELECT generate_series)")
    load_operations(args.events)
    print(f"Loaded {OUTBOX_PUBLISHED:,} published outbox rows, 3 checkpoints, 1,000 dead letters")

    # A fresh table numbers events from 1: this one is g = events/2 + 1, odd, so it has a tenant.
    sample = EventRecord.objects.get(position=args.events // 2 + 2)
    failed_row = OutboxMessage.objects.filter(status="failed").first()
    assert failed_row is not None
    changelist = reverse("admin:django_eventsource_eventrecord_changelist")
    outbox = reverse("admin:django_eventsource_outboxmessage_changelist")
    deep = str(args.events // 1000)  # 99.9 % of the table is newer
    pages: list[tuple[str, str, dict[str, str]]] = [
        ("unfiltered", changelist, {}),
        ("event type (common)", changelist, {"event_type": "MoneyDeposited"}),
        ("event type (rare, 0.1%)", changelist, {"event_type": "AccountClosed"}),
        ("aggregate type", changelist, {"aggregate_type": "Invoice"}),
        ("tenant", changelist, {"tenant_id": str(sample.tenant_id)}),
        (
            "aggregate stream",
            changelist,
            {"aggregate_type": sample.aggregate_type, "aggregate_id": str(sample.aggregate_id)},
        ),
        ("search by UUID", changelist, {"q": str(sample.correlation_id)}),
        ("older than a deep position", changelist, {"before": deep}),
        ("jump to a deep position", changelist, {"position": deep}),
        ("oldest page", changelist, {"after": "0"}),
        ("newer than a deep position", changelist, {"after": deep}),
        ("deep, filtered by type", changelist, {"event_type": "AccountClosed", "before": deep}),
        (
            "event detail page",
            reverse("admin:django_eventsource_eventrecord_change", args=[sample.position]),
            {},
        ),
        ("dashboard", reverse("admin:django_eventsource_dashboard"), {}),
        ("outbox list", outbox, {}),
        ("outbox failed rows", outbox, {"status__exact": "failed"}),
        (
            "outbox detail page",
            reverse("admin:django_eventsource_outboxmessage_change", args=[failed_row.pk]),
            {},
        ),
    ]

    failures: list[str] = []
    results: dict[str, list[tuple[str, int, int, float]]] = {}
    with override_settings(MIDDLEWARE=MIDDLEWARE, DEBUG=False):
        user = User.objects.create_superuser("bench", "bench@example.com", "bench")
        client = Client()
        client.force_login(user)
        for state in ("fresh (never analyzed)", "analyzed"):
            if state == "analyzed":
                analyze()
            rows = results[state] = []
            print(f"\n##### {state} tables #####")
            for label, url, params in pages:

                def render(
                    url: str = url, params: dict[str, str] = params, label: str = label
                ) -> Any:
                    response = client.get(url, params)
                    assert response.status_code == 200, (label, response.status_code)
                    return response

                render()  # warm the cache like a second visit would
                with CaptureQueriesContext(connection) as context:
                    render()
                # The log is cleared by the next request: keep a copy.
                queries = list(context.captured_queries)
                own = [q for q in queries if "eventsource_" in q["sql"]]
                median = timed(render, repeat=5)
                rows.append((label, len(queries), len(own), median * 1000))
                print(
                    f"\n=== {label}: {len(queries)} queries, {len(own)} on event-sourcing "
                    f"tables, {median * 1000:.1f} ms median ==="
                )
                if len(own) > MAX_OWN_QUERIES:
                    failures.append(f"{state}: {label} runs {len(own)} event-sourcing queries")
                for query in own:
                    sql = query["sql"]
                    if sql.startswith("EXPLAIN"):
                        print(f"-- row estimate (no execution): {sql[:100]} …")
                        continue
                    plan = explain(sql)
                    print(f"-- {sql[:160]}{' …' if len(sql) > 160 else ''}")
                    print(plan if args.full_plans else abridged(plan))
                    for table in ("eventsource_event", "eventsource_outbox"):
                        if f"Seq Scan on {table}" in plan:
                            failures.append(f"{state}: {label} scans {table} sequentially")
                            print(f"!! sequential scan on {table}")

    for state, rows in results.items():
        print(f"\n{state}:")
        print(f"{'page':<30}{'queries':>8}{'own':>6}{'median ms':>12}")
        for label, count, own_count, ms in rows:
            print(f"{label:<30}{count:>8}{own_count:>6}{ms:>12.1f}")
    print(
        "\n'queries' counts every query of the request (the session and the user too); "
        "'own' those on the event-sourcing tables."
    )
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print(f"\nOK: no sequential scan, at most {MAX_OWN_QUERIES} event-sourcing queries per page")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
