"""Random sequences of appends and reads give the same answers on both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from django.core.management.color import no_style
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_eventsource import (
    DomainEvent,
    EventSourceError,
    EventStore,
    ExpectedVersion,
    InMemoryEventStore,
    ReadDirection,
    ReadOptions,
)
from django_eventsource.models import EventRecord
from django_eventsource.stores.django import DjangoEventStore
from tests.testapp.domain import AccountOpened, MoneyDeposited

# Runs the SQL the app writes itself (again with server-side binding in CI).
pytestmark = pytest.mark.own_sql

T0 = datetime(2024, 1, 1, tzinfo=UTC)
STREAMS = 3
TENANTS = [UUID(int=1), UUID(int=2)]

expected_versions = st.one_of(
    st.sampled_from(
        ["current"] * 4
        + [ExpectedVersion.ANY, ExpectedVersion.NO_STREAM, ExpectedVersion.STREAM_EXISTS]
    ),
    st.integers(min_value=0, max_value=5),
)
appends = st.tuples(
    st.just("append"),
    st.integers(0, STREAMS - 1),  # stream
    st.sampled_from([1, 1, 2, 3, 0]),  # number of events
    # First version relative to current + 1: mostly right, sometimes stale or ahead.
    st.sampled_from([0, 0, 0, -1, -1, 1]),
    expected_versions,
    st.sampled_from(["fresh", "fresh", "replay", "steal"]),  # where the event ids come from
    st.integers(0, 1),  # tenant
)
read_options = st.builds(
    ReadOptions,
    direction=st.sampled_from(list(ReadDirection)),
    from_position=st.integers(0, 8),
    limit=st.none() | st.integers(0, 5),
    from_timestamp=st.none() | st.integers(0, 10).map(lambda m: T0 + timedelta(minutes=m)),
    to_timestamp=st.none() | st.integers(0, 10).map(lambda m: T0 + timedelta(minutes=m)),
    tenant_id=st.none() | st.sampled_from(TENANTS),
)
reads = st.one_of(
    st.tuples(st.just("read_all"), read_options),
    st.tuples(st.just("read_stream"), st.integers(0, STREAMS - 1), read_options),
    st.tuples(st.just("get_events"), st.integers(0, STREAMS - 1), st.integers(0, 4)),
    st.tuples(st.just("by_type"), st.none() | st.sampled_from(TENANTS)),
    st.tuples(st.just("version"), st.integers(0, STREAMS - 1)),
)
operations = st.lists(st.one_of(appends, appends, reads), min_size=4, max_size=16)
#: Every example starts from two populated streams, so conflicts and replays are likely.
SEED_OPS: list[tuple[Any, ...]] = [
    ("append", 0, 2, 0, "current", "fresh", 0),
    ("append", 1, 1, 0, "current", "fresh", 1),
]


def outcome(call: Any, *args: Any) -> Any:
    """What a user sees: the value, or the error type and its public attributes."""
    try:
        return ("ok", call(*args))
    except EventSourceError as exc:
        attrs = {k: v for k, v in vars(exc).items() if not k.startswith("_")}
        return ("error", type(exc).__name__, attrs)


def stored_view(items: Any) -> list[tuple[Any, ...]]:
    return [(s.event.to_dict(), s.stream_id, s.stream_position, s.global_position) for s in items]


class Scenario:
    """Builds identical events for both stores and replays operations on one store."""

    def __init__(self) -> None:
        self.streams = [uuid4() for _ in range(STREAMS)]
        self.clock = 0
        self.appended: dict[int, list[DomainEvent]] = {i: [] for i in range(STREAMS)}

    def events_for(self, op: tuple[Any, ...], current: int) -> tuple[list[DomainEvent], int]:
        _, stream, count, shift, expected, ids, tenant = op
        aggregate = self.streams[stream]
        if ids == "replay":  # the tail of the stream again (a retry), shifted
            first = max(1, current - count + 1 + shift)
        else:
            first = max(1, current + 1 + shift)
        events: list[DomainEvent] = []
        for version in range(first, first + count):
            self.clock += 1
            common: dict[str, Any] = {
                "aggregate_id": aggregate,
                "aggregate_version": version,
                "tenant_id": TENANTS[tenant],
                "occurred_at": T0 + timedelta(minutes=self.clock % 11),
            }
            previous = self.appended[stream]
            if ids == "replay" and version <= len(previous):
                events.append(previous[version - 1])
                continue
            if ids == "steal" and version == first and self.appended[(stream + 1) % STREAMS]:
                common["event_id"] = self.appended[(stream + 1) % STREAMS][0].event_id
            if version == 1:
                events.append(AccountOpened(owner="ada", **common))
            else:
                events.append(MoneyDeposited(amount=Decimal(version), **common))
        resolved = current if expected == "current" else expected
        return events, resolved

    def run(self, store: EventStore, ops: list[tuple[Any, ...]], plan: list[Any]) -> list[Any]:
        return [
            outcome(self.apply, store, op, planned) for op, planned in zip(ops, plan, strict=True)
        ]

    def apply(self, store: EventStore, op: tuple[Any, ...], planned: Any) -> Any:
        kind = op[0]
        if kind == "append":
            events, expected = planned
            return store.append_events(self.streams[op[1]], "Account", events, expected)
        if kind == "read_all":
            return stored_view(store.read_all(op[1]))
        if kind == "read_stream":
            return stored_view(store.read_stream(f"{self.streams[op[1]]}:Account", op[2]))
        if kind == "get_events":
            stream = store.get_events(self.streams[op[1]], "Account", from_version=op[2])
            return [e.to_dict() for e in stream.events], stream.version
        if kind == "by_type":
            return [e.to_dict() for e in store.get_events_by_type("Account", op[1])]
        return store.get_stream_version(self.streams[op[1]], "Account")


def empty_event_table() -> None:
    """Delete every event and restart positions at 1, so both stores number alike."""
    statements = connection.ops.sql_flush(
        no_style(), [EventRecord._meta.db_table], reset_sequences=True
    )
    connection.ops.execute_sql_flush(statements)


@pytest.mark.django_db
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_django_store_answers_exactly_like_the_in_memory_store(ops: list[tuple[Any, ...]]) -> None:
    ops = SEED_OPS + ops
    empty_event_table()
    scenario = Scenario()
    memory = InMemoryEventStore()
    # Events are built once, against the in-memory store's view, and fed to both stores.
    plan: list[Any] = []
    for op in ops:
        if op[0] == "append":
            current = memory.get_stream_version(scenario.streams[op[1]], "Account")
            events, expected = scenario.events_for(op, current)
            plan.append((events, expected))
            try:
                memory.append_events(scenario.streams[op[1]], "Account", events, expected)
                scenario.appended[op[1]] = memory.get_events(
                    scenario.streams[op[1]], "Account"
                ).events
            except EventSourceError:
                pass
        else:
            plan.append(None)

    memory.clear()
    django_store = DjangoEventStore()
    django_store.chunk_size = 2  # small pages, so paging is compared too
    expected_results = scenario.run(memory, ops, plan)
    actual_results = scenario.run(django_store, ops, plan)

    assert actual_results == expected_results
