"""The catch-up read's pages stay index range scans of one window of positions when
PostgreSQL knows nothing about the event table (loaded a moment ago, never analyzed).

Before, a page asked for ``position > a AND position <= ceiling ORDER BY position
LIMIT n``; without statistics the planner read every row up to the ceiling and sorted
them, on every page, so a catch-up over N events cost O(N²).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import pytest
from django.db import connection

from django_eventsource.events.registry import EventRegistry
from django_eventsource.stores.django import DjangoEventStore
from django_eventsource.stores.interface import ReadOptions
from tests.testapp.domain import MoneyDeposited

pytestmark = [pytest.mark.postgres, pytest.mark.own_sql, pytest.mark.django_db]

LOADED = 100_000
WINDOW = 1_000


def _forget_statistics() -> None:
    """Leave the event table as PostgreSQL sees one nobody has analyzed yet.

    Autovacuum may have analyzed the test database's table earlier in the run; the
    test's transaction rolls this back with everything else.
    """
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM pg_statistic WHERE starelid = 'eventsource_event'::regclass")
        cursor.execute(
            "UPDATE pg_class SET reltuples = -1, relpages = 0 "
            "WHERE oid = 'eventsource_event'::regclass"
        )


def _load(count: int, streams: int | None = None) -> int:
    """``count`` deposit events, written in one statement; the first position.

    One stream each, or spread over ``streams`` streams.
    """
    stream, version = "gen_random_uuid()", "2"
    if streams is not None:
        stream, version = f"md5('account' || (n %% {streams}))::uuid", f"n / {streams} + 1"
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO eventsource_event (event_id, aggregate_type, aggregate_id, "
            "aggregate_version, event_type, event_version, correlation_id, occurred_at, "
            f"payload, metadata) SELECT gen_random_uuid(), 'Account', {stream}, {version}, "
            "'MoneyDeposited', 1, gen_random_uuid(), now(), '{\"amount\": \"1\"}', '{}' "
            "FROM generate_series(0, %s - 1) AS n RETURNING position",
            [count],
        )
        return min(row[0] for row in cursor.fetchall())


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _plan(sql: str, params: Any) -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
        document = cursor.fetchone()[0]
    if isinstance(document, str):
        document = json.loads(document)
    plan: dict[str, Any] = document[0]["Plan"]
    return plan


def _is_page_query(sql: str) -> bool:
    return sql.lstrip().upper().startswith("SELECT") and '"payload"' in sql


def _explaining_pages(plans: list[dict[str, Any]]) -> Callable[..., Any]:
    def wrapper(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        if _is_page_query(sql):
            plans.append(_plan(sql, params))
        return execute(sql, params, many, context)

    return wrapper


def test_catch_up_pages_are_index_range_scans_on_a_never_analyzed_table() -> None:
    first = _load(LOADED)
    _forget_statistics()
    registry = EventRegistry()
    registry.register(MoneyDeposited)
    store = DjangoEventStore(registry=registry)
    store.chunk_size = WINDOW
    start = first + LOADED // 2

    plans: list[dict[str, Any]] = []
    with connection.execute_wrapper(_explaining_pages(plans)):
        read = [
            stored.global_position
            for stored in store.read_all(ReadOptions(from_position=start, limit=2_500))
        ]

    assert read == list(range(start + 1, start + 2_501))
    assert len(plans) >= 3
    for plan in plans:
        nodes = list(_nodes(plan))
        kinds = {node["Node Type"] for node in nodes}
        assert "Seq Scan" not in kinds, plan
        assert "Sort" not in kinds, plan
        assert any("position" in node.get("Index Cond", "") for node in nodes), plan
        # The page reads one window of the primary key, not the table up to the end.
        assert all(node["Actual Rows"] <= WINDOW for node in nodes), plan


def test_the_table_really_has_no_statistics_for_the_planner() -> None:
    # The premise of the test above: on this table, the page query of earlier versions
    # (an upper bound and ORDER BY … LIMIT) reads and sorts every row up to the ceiling.
    first = _load(LOADED)
    _forget_statistics()
    start = first + LOADED // 2
    plan = _plan(
        'SELECT * FROM eventsource_event WHERE "position" > %s AND "position" <= %s '
        'ORDER BY "position" LIMIT 1000',
        [start, first + LOADED],
    )
    scanned = max(node["Actual Rows"] for node in _nodes(plan) if "Scan" in node["Node Type"])
    assert scanned > 10 * WINDOW


def _stream_version_plans(plans: list[dict[str, Any]]) -> Callable[..., Any]:
    def wrapper(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        if "aggregate_version" in sql and sql.lstrip().upper().startswith("SELECT"):
            plans.append(_plan(sql, params))
        return execute(sql, params, many, context)

    return wrapper


def test_an_append_finds_the_stream_version_by_its_index_on_a_never_analyzed_table() -> None:
    # 2,000 events of 20 other aggregates of the same type, then a stream of 3 events.
    _load(2_000, streams=20)
    store = DjangoEventStore()
    account = uuid4()
    for version in range(1, 4):
        store.append_events(
            account,
            "Account",
            [MoneyDeposited(aggregate_id=account, amount=1, aggregate_version=version)],
            version - 1,
        )
    _forget_statistics()
    with connection.cursor() as cursor:
        # Its indexes as well, as on a table created and loaded a moment ago.
        cursor.execute(
            "UPDATE pg_class SET reltuples = 0, relpages = 0 WHERE oid IN "
            "(SELECT indexrelid FROM pg_index WHERE indrelid = 'eventsource_event'::regclass)"
        )

    plans: list[dict[str, Any]] = []
    with connection.execute_wrapper(_stream_version_plans(plans)):
        result = store.append_events(
            account,
            "Account",
            [MoneyDeposited(aggregate_id=account, amount=1, aggregate_version=4)],
            3,
        )
        assert store.get_stream_version(account, "Account") == 4

    assert result.new_version == 4
    assert len(plans) >= 2  # the append's lookup, then get_stream_version
    for plan in plans:
        # The stream's own rows through the (id, type, version) index: not the 2,000
        # other events of its type.
        scanned = [node for node in _nodes(plan) if "Scan" in node["Node Type"]]
        assert scanned, plan
        assert all(node["Actual Rows"] <= 4 for node in scanned), plan
