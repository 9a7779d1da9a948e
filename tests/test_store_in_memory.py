"""InMemoryEventStore: optimistic locking, idempotency, input checks and reads."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest

from django_eventsource import (
    DomainEvent,
    EventStream,
    ExpectedVersion,
    InMemoryEventStore,
    OptimisticLockError,
    ReadDirection,
    ReadOptions,
    StoredEvent,
)
from django_eventsource.exceptions import (
    DuplicateEventIdError,
    InvalidEventError,
    InvalidReadOptionsError,
)
from tests.factories import AccountOpenedFactory, MoneyDepositedFactory, account_history

ACCOUNT = "Account"


@pytest.fixture
def store() -> InMemoryEventStore:
    return InMemoryEventStore()


def append(store: InMemoryEventStore, events: list[DomainEvent], expected: int) -> int:
    result = store.append_events(events[0].aggregate_id, ACCOUNT, events, expected)
    assert result.success
    return result.new_version


def stream_id(aggregate_id: UUID) -> str:
    return f"{aggregate_id}:{ACCOUNT}"


# -- expected version ---------------------------------------------------------------------


def test_no_stream_accepts_the_first_events(store: InMemoryEventStore) -> None:
    events = account_history(deposits=2)
    result = store.append_events(events[0].aggregate_id, ACCOUNT, events, ExpectedVersion.NO_STREAM)
    assert (result.success, result.new_version, result.global_position) == (True, 3, 3)
    assert store.get_stream_version(events[0].aggregate_id, ACCOUNT) == 3


def test_no_stream_refuses_an_existing_stream(store: InMemoryEventStore) -> None:
    history = account_history(deposits=1)
    append(store, history, ExpectedVersion.NO_STREAM)
    retry = account_history(history[0].aggregate_id, deposits=1, start_version=3)
    with pytest.raises(OptimisticLockError) as excinfo:
        store.append_events(history[0].aggregate_id, ACCOUNT, retry, ExpectedVersion.NO_STREAM)
    assert excinfo.value.actual_version == 2


def test_stream_exists_refuses_a_new_stream_and_accepts_an_existing_one(
    store: InMemoryEventStore,
) -> None:
    history = account_history(deposits=0)
    agg_id = history[0].aggregate_id
    with pytest.raises(OptimisticLockError) as excinfo:
        store.append_events(agg_id, ACCOUNT, history, ExpectedVersion.STREAM_EXISTS)
    assert excinfo.value.actual_version == 0
    append(store, history, ExpectedVersion.NO_STREAM)
    more = account_history(agg_id, deposits=1, start_version=2)
    assert append(store, more, ExpectedVersion.STREAM_EXISTS) == 2


def test_any_appends_whatever_the_version(store: InMemoryEventStore) -> None:
    history = account_history(deposits=0)
    agg_id = history[0].aggregate_id
    assert append(store, history, ExpectedVersion.ANY) == 1
    assert append(store, account_history(agg_id, 2, start_version=2), ExpectedVersion.ANY) == 3


def test_any_still_refuses_events_built_on_a_stale_version(store: InMemoryEventStore) -> None:
    history = account_history(deposits=2)
    append(store, history, ExpectedVersion.NO_STREAM)
    stale = account_history(history[0].aggregate_id, deposits=1, start_version=2)
    with pytest.raises(OptimisticLockError):
        store.append_events(history[0].aggregate_id, ACCOUNT, stale, ExpectedVersion.ANY)
    assert store.get_stream_version(history[0].aggregate_id, ACCOUNT) == 3


def test_an_exact_version_must_match_the_stream(store: InMemoryEventStore) -> None:
    history = account_history(deposits=1)
    agg_id = history[0].aggregate_id
    append(store, history, ExpectedVersion.NO_STREAM)
    next_event = account_history(agg_id, deposits=1, start_version=3)
    with pytest.raises(OptimisticLockError) as excinfo:
        store.append_events(agg_id, ACCOUNT, next_event, 1)
    error = excinfo.value
    assert (error.aggregate_id, error.expected_version, error.actual_version) == (agg_id, 1, 2)
    assert append(store, next_event, 2) == 3


def test_sixteen_writers_racing_on_one_version_have_exactly_one_winner(
    store: InMemoryEventStore,
) -> None:
    history = account_history(deposits=0)
    agg_id = history[0].aggregate_id
    append(store, history, ExpectedVersion.NO_STREAM)
    writers = 16
    barrier = threading.Barrier(writers)
    winners: list[int] = []
    conflicts: list[OptimisticLockError] = []
    unexpected: list[BaseException] = []

    def write(index: int) -> None:
        event = MoneyDepositedFactory(aggregate_id=agg_id, aggregate_version=2)
        barrier.wait(timeout=10)
        try:
            store.append_events(agg_id, ACCOUNT, [event], expected_version=1)
            winners.append(index)
        except OptimisticLockError as exc:
            conflicts.append(exc)
        except BaseException as exc:  # reported to the main thread below
            unexpected.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert unexpected == []
    assert len(winners) == 1
    assert len(conflicts) == writers - 1
    assert {exc.actual_version for exc in conflicts} == {2}
    assert store.get_stream_version(agg_id, ACCOUNT) == 2
    assert len(store.get_events(agg_id, ACCOUNT).events) == 2


# -- idempotency and duplicate ids --------------------------------------------------------


def test_re_appending_the_same_events_is_an_idempotent_success(store: InMemoryEventStore) -> None:
    history = account_history(deposits=2)
    first = store.append_events(history[0].aggregate_id, ACCOUNT, history, 0)
    retry = store.append_events(history[0].aggregate_id, ACCOUNT, history, 0)
    assert retry == first
    assert store.get_global_position() == 3


def test_an_event_id_stored_in_another_stream_is_a_duplicate(store: InMemoryEventStore) -> None:
    stored = AccountOpenedFactory()
    append(store, [stored], ExpectedVersion.NO_STREAM)
    other_id = uuid4()
    copy = stored.model_copy(update={"aggregate_id": other_id})
    with pytest.raises(DuplicateEventIdError) as excinfo:
        store.append_events(other_id, ACCOUNT, [copy], ExpectedVersion.NO_STREAM)
    assert excinfo.value.event_id == stored.event_id
    assert excinfo.value.stream_id == stream_id(stored.aggregate_id)
    assert not store.get_events(other_id, ACCOUNT).events


def test_a_retry_that_is_only_partly_stored_is_a_conflict_with_the_real_version(
    store: InMemoryEventStore,
) -> None:
    history = account_history(deposits=2)
    append(store, history, 0)
    agg_id = history[0].aggregate_id
    replay = [history[1], MoneyDepositedFactory(aggregate_id=agg_id, aggregate_version=3)]
    with pytest.raises(OptimisticLockError) as excinfo:
        store.append_events(agg_id, ACCOUNT, replay, 1)
    assert (excinfo.value.expected_version, excinfo.value.actual_version) == (1, 3)
    assert store.get_events(agg_id, ACCOUNT).events == history


def test_an_empty_append_is_a_no_op(store: InMemoryEventStore) -> None:
    result = store.append_events(uuid4(), ACCOUNT, [], ExpectedVersion.NO_STREAM)
    assert (result.success, result.new_version) == (True, 0)
    assert store.get_global_position() == 0


# -- bad input writes nothing -------------------------------------------------------------


def test_an_event_of_another_aggregate_is_refused(store: InMemoryEventStore) -> None:
    mine = account_history(deposits=0)
    stranger = MoneyDepositedFactory(aggregate_version=2)
    with pytest.raises(InvalidEventError, match="belongs to"):
        store.append_events(mine[0].aggregate_id, ACCOUNT, [*mine, stranger], 0)
    assert store.get_global_position() == 0


def test_an_event_of_another_aggregate_type_is_refused(store: InMemoryEventStore) -> None:
    events = account_history(deposits=0)
    with pytest.raises(InvalidEventError):
        store.append_events(events[0].aggregate_id, "Order", events, 0)
    assert store.get_global_position() == 0


def test_a_non_uuid_aggregate_id_is_refused(store: InMemoryEventStore) -> None:
    with pytest.raises(InvalidEventError, match="aggregate_id must be a UUID"):
        store.append_events("account-42", ACCOUNT, account_history(), 0)  # type: ignore[arg-type]
    assert store.get_global_position() == 0


def test_a_uuid_string_aggregate_id_is_accepted(store: InMemoryEventStore) -> None:
    events = account_history(deposits=0)
    store.append_events(str(events[0].aggregate_id), ACCOUNT, events, 0)  # type: ignore[arg-type]
    assert store.get_stream_version(events[0].aggregate_id, ACCOUNT) == 1


def test_non_contiguous_versions_are_refused(store: InMemoryEventStore) -> None:
    opened, _, third = account_history(deposits=2)
    with pytest.raises(InvalidEventError, match="contiguous"):
        store.append_events(opened.aggregate_id, ACCOUNT, [opened, third], 0)
    assert store.get_global_position() == 0


def test_a_first_version_that_does_not_follow_the_stream_is_refused(
    store: InMemoryEventStore,
) -> None:
    later = account_history(deposits=2)[1:]
    with pytest.raises(InvalidEventError, match="expected 1"):
        store.append_events(later[0].aggregate_id, ACCOUNT, later, 0)
    assert store.get_global_position() == 0


@pytest.mark.parametrize("expected", [-3, -100, "0", 1.0, True])
def test_an_invalid_expected_version_is_refused(
    store: InMemoryEventStore, expected: object
) -> None:
    events = account_history(deposits=0)
    with pytest.raises(InvalidEventError, match="expected_version"):
        store.append_events(events[0].aggregate_id, ACCOUNT, events, expected)  # type: ignore[arg-type]
    assert store.get_global_position() == 0


def test_the_same_event_twice_in_one_append_is_refused(store: InMemoryEventStore) -> None:
    opened = AccountOpenedFactory()
    with pytest.raises(InvalidEventError, match="twice"):
        store.append_events(
            opened.aggregate_id, ACCOUNT, [opened, opened.with_aggregate_version(2)], 0
        )
    assert store.get_global_position() == 0


def test_text_the_django_store_refuses_is_refused_here_too(store: InMemoryEventStore) -> None:
    opened = AccountOpenedFactory(owner="a\x00b")

    with pytest.raises(InvalidEventError, match="NUL"):
        store.append_events(opened.aggregate_id, ACCOUNT, [opened], 0)
    assert store.get_global_position() == 0


# -- reading one aggregate ----------------------------------------------------------------


def test_get_events_returns_the_stream_in_version_order(store: InMemoryEventStore) -> None:
    history = account_history(deposits=3)
    append(store, history, 0)
    stream = store.get_events(history[0].aggregate_id, ACCOUNT)
    assert stream.events == history
    assert stream.version == 4
    assert stream.latest_event == history[-1]
    assert not stream.is_empty


def test_get_events_from_a_version_returns_only_newer_events(store: InMemoryEventStore) -> None:
    history = account_history(deposits=3)
    append(store, history, 0)
    stream = store.get_events(history[0].aggregate_id, ACCOUNT, from_version=2)
    assert [e.aggregate_version for e in stream.events] == [3, 4]
    assert stream.version == 4


def test_get_events_of_an_unknown_aggregate_is_empty(store: InMemoryEventStore) -> None:
    stream = store.get_events(uuid4(), ACCOUNT)
    assert stream.is_empty
    assert stream.latest_event is None
    assert stream.version == 0


def test_get_events_filters_by_occurred_at(store: InMemoryEventStore) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    agg_id = uuid4()
    events = [
        AccountOpenedFactory(aggregate_id=agg_id, occurred_at=start),
        MoneyDepositedFactory(
            aggregate_id=agg_id, aggregate_version=2, occurred_at=start + timedelta(days=1)
        ),
        MoneyDepositedFactory(
            aggregate_id=agg_id, aggregate_version=3, occurred_at=start + timedelta(days=2)
        ),
    ]
    append(store, events, 0)
    window = store.get_events(
        agg_id,
        ACCOUNT,
        from_timestamp=start + timedelta(hours=12),
        to_timestamp=start + timedelta(days=1),
    )
    assert window.events == [events[1]]
    assert window.version == 2


def test_get_events_by_type_filters_by_tenant(store: InMemoryEventStore) -> None:
    tenant_a, tenant_b = uuid4(), uuid4()
    a_events = account_history(deposits=1, tenant_id=tenant_a)
    b_events = account_history(deposits=1, tenant_id=tenant_b)
    append(store, a_events, 0)
    append(store, b_events, 0)
    assert store.get_events_by_type(ACCOUNT) == [*a_events, *b_events]
    assert store.get_events_by_type(ACCOUNT, tenant_id=tenant_b) == b_events
    assert store.get_events_by_type("Order") == []


def test_get_events_by_type_filters_by_timestamp(store: InMemoryEventStore) -> None:
    old = account_history(deposits=0, occurred_at=datetime(2020, 1, 1, tzinfo=UTC))
    new = account_history(deposits=0, occurred_at=datetime(2025, 1, 1, tzinfo=UTC))
    append(store, old, 0)
    append(store, new, 0)
    since = datetime(2024, 1, 1, tzinfo=UTC)
    assert store.get_events_by_type(ACCOUNT, from_timestamp=since) == new


def test_naive_timestamps_are_refused_with_a_clear_error(store: InMemoryEventStore) -> None:
    naive = datetime(2025, 1, 1)
    with pytest.raises(InvalidEventError, match="from_timestamp must be a timezone-aware"):
        store.get_events(uuid4(), ACCOUNT, from_timestamp=naive)
    with pytest.raises(InvalidEventError, match="to_timestamp must be a timezone-aware"):
        store.get_events(uuid4(), ACCOUNT, to_timestamp=naive)
    with pytest.raises(InvalidEventError, match="from_timestamp must be a timezone-aware"):
        store.get_events_by_type(ACCOUNT, from_timestamp=naive)
    with pytest.raises(InvalidReadOptionsError, match="to_timestamp must be a timezone-aware"):
        ReadOptions(to_timestamp=naive)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit": -1}, "limit"),
        ({"limit": True}, "limit"),
        ({"from_position": -5}, "from_position"),
        ({"from_position": 2**63}, "from_position"),
        ({"direction": "sideways"}, "direction"),
        ({"tenant_id": "tenant-1"}, "tenant_id"),
    ],
)
def test_invalid_read_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidReadOptionsError, match=message) as caught:
        ReadOptions(**options)
    # Not an event problem, but still a ValueError and an EventStoreError to callers.
    assert not isinstance(caught.value, InvalidEventError)
    assert isinstance(caught.value, ValueError)


def test_read_options_accept_plain_strings_for_direction_and_tenant(
    store: InMemoryEventStore,
) -> None:
    tenant = uuid4()
    append(store, account_history(deposits=1, tenant_id=tenant), 0)
    options = ReadOptions(direction="backward", tenant_id=str(tenant))  # type: ignore[arg-type]
    assert options.direction is ReadDirection.BACKWARD
    assert positions(list(store.read_all(options))) == [2, 1]


def test_event_exists_reports_stored_ids(store: InMemoryEventStore) -> None:
    history = account_history(deposits=0)
    append(store, history, 0)
    assert store.event_exists(history[0].event_id)
    assert not store.event_exists(uuid4())


# -- read_stream / read_all ---------------------------------------------------------------


def positions(stored: list[StoredEvent]) -> list[int]:
    return [s.global_position for s in stored]


@pytest.fixture
def two_accounts(store: InMemoryEventStore) -> tuple[list[DomainEvent], list[DomainEvent]]:
    """Interleaved: account A v1-v2 (positions 1-2), B v1-v2 (3-4), A v3 (5)."""
    a_events = account_history(deposits=2)
    b_events = account_history(deposits=1)
    append(store, a_events[:2], 0)
    append(store, b_events, 0)
    append(store, a_events[2:], 2)
    return a_events, b_events


def test_read_stream_carries_positions(
    store: InMemoryEventStore, two_accounts: tuple[list[DomainEvent], list[DomainEvent]]
) -> None:
    a_events, _ = two_accounts
    stored = list(store.read_stream(stream_id(a_events[0].aggregate_id)))
    assert [s.event for s in stored] == a_events
    assert [s.stream_position for s in stored] == [1, 2, 3]
    assert positions(stored) == [1, 2, 5]
    assert {s.stream_id for s in stored} == {stream_id(a_events[0].aggregate_id)}
    assert all(s.stored_at.tzinfo is not None for s in stored)


def test_read_stream_backward_with_a_limit(
    store: InMemoryEventStore, two_accounts: tuple[list[DomainEvent], list[DomainEvent]]
) -> None:
    a_events, _ = two_accounts
    options = ReadOptions(direction=ReadDirection.BACKWARD, limit=2)
    stored = list(store.read_stream(stream_id(a_events[0].aggregate_id), options))
    assert [s.stream_position for s in stored] == [3, 2]


def test_read_stream_from_a_position_is_exclusive(
    store: InMemoryEventStore, two_accounts: tuple[list[DomainEvent], list[DomainEvent]]
) -> None:
    a_events, _ = two_accounts
    sid = stream_id(a_events[0].aggregate_id)
    forward = list(store.read_stream(sid, ReadOptions(from_position=1)))
    backward = list(
        store.read_stream(sid, ReadOptions(direction=ReadDirection.BACKWARD, from_position=3))
    )
    assert [s.stream_position for s in forward] == [2, 3]
    assert [s.stream_position for s in backward] == [2, 1]


def test_read_stream_rejects_a_malformed_stream_id(store: InMemoryEventStore) -> None:
    with pytest.raises(InvalidEventError, match="Malformed stream id"):
        list(store.read_stream("not-a-stream"))


def test_read_all_forward_and_backward(
    store: InMemoryEventStore, two_accounts: tuple[list[DomainEvent], list[DomainEvent]]
) -> None:
    assert positions(list(store.read_all())) == [1, 2, 3, 4, 5]
    backward = ReadOptions(direction=ReadDirection.BACKWARD)
    assert positions(list(store.read_all(backward))) == [5, 4, 3, 2, 1]


def test_read_all_pages_with_from_position_and_limit(
    store: InMemoryEventStore, two_accounts: tuple[list[DomainEvent], list[DomainEvent]]
) -> None:
    first_page = list(store.read_all(ReadOptions(limit=2)))
    second_page = list(
        store.read_all(ReadOptions(from_position=first_page[-1].global_position, limit=2))
    )
    assert positions(first_page) == [1, 2]
    assert positions(second_page) == [3, 4]
    tail = ReadOptions(direction=ReadDirection.BACKWARD, from_position=4, limit=2)
    assert positions(list(store.read_all(tail))) == [3, 2]


def test_read_all_filters_by_tenant(store: InMemoryEventStore) -> None:
    tenant = uuid4()
    append(store, account_history(deposits=1), 0)
    theirs = account_history(deposits=1, tenant_id=tenant)
    append(store, theirs, 0)
    stored = list(store.read_all(ReadOptions(tenant_id=tenant)))
    assert [s.event for s in stored] == theirs
    assert positions(stored) == [3, 4]


def test_read_all_filters_by_timestamp_window(store: InMemoryEventStore) -> None:
    days = [datetime(2025, 1, day, tzinfo=UTC) for day in (1, 2, 3)]
    for day in days:
        append(store, account_history(deposits=0, occurred_at=day), 0)
    options = ReadOptions(from_timestamp=days[1], to_timestamp=days[2])
    assert [s.event.occurred_at for s in store.read_all(options)] == days[1:]


def test_limit_counts_only_events_that_pass_the_filters(store: InMemoryEventStore) -> None:
    tenant = uuid4()
    for _ in range(3):
        append(store, account_history(deposits=0), 0)
        append(store, account_history(deposits=0, tenant_id=tenant), 0)
    stored = list(store.read_all(ReadOptions(tenant_id=tenant, limit=2)))
    assert positions(stored) == [2, 4]


def test_read_all_never_passes_the_safe_high_water_mark(
    store: InMemoryEventStore, two_accounts: tuple[list[DomainEvent], list[DomainEvent]]
) -> None:
    assert store.safe_high_water_mark() == store.get_global_position() == 5
    assert max(positions(list(store.read_all()))) == 5


# -- async twins --------------------------------------------------------------------------


def test_async_twins_append_and_read(store: InMemoryEventStore) -> None:
    history = account_history(deposits=4)
    agg_id = history[0].aggregate_id

    async def scenario() -> tuple[int, list[DomainEvent], list[int], list[int]]:
        result = await store.aappend_events(agg_id, ACCOUNT, history, 0)
        stream = await store.aget_events(agg_id, ACCOUNT, from_version=1)
        everything = [s.global_position async for s in store.aread_all()]
        latest_two = [
            s.global_position
            async for s in store.aread_all(ReadOptions(direction=ReadDirection.BACKWARD, limit=2))
        ]
        return result.new_version, stream.events, everything, latest_two

    new_version, events, everything, latest_two = asyncio.run(scenario())
    assert new_version == 5
    assert events == history[1:]
    assert everything == [1, 2, 3, 4, 5]
    assert latest_two == [5, 4]


def test_async_reads_page_through_large_results(store: InMemoryEventStore) -> None:
    store.async_page_size = 3
    history = account_history(deposits=7)
    append(store, history, 0)
    sid = stream_id(history[0].aggregate_id)

    async def scenario() -> tuple[list[int], list[int], list[int]]:
        all_positions = [s.global_position async for s in store.aread_all()]
        limited = [s.global_position async for s in store.aread_all(ReadOptions(limit=5))]
        stream_backward = [
            s.stream_position
            async for s in store.aread_stream(sid, ReadOptions(direction=ReadDirection.BACKWARD))
        ]
        return all_positions, limited, stream_backward

    all_positions, limited, stream_backward = asyncio.run(scenario())
    assert all_positions == list(range(1, 9))
    assert limited == [1, 2, 3, 4, 5]
    assert stream_backward == list(range(8, 0, -1))


def test_async_append_raises_the_same_conflict(store: InMemoryEventStore) -> None:
    history = account_history(deposits=0)
    append(store, history, 0)

    async def conflicting_append() -> None:
        agg_id = history[0].aggregate_id
        await store.aappend_events(agg_id, ACCOUNT, account_history(agg_id, deposits=0), 0)

    with pytest.raises(OptimisticLockError):
        asyncio.run(conflicting_append())


# -- value objects ------------------------------------------------------------------------


def test_str_of_a_stored_event_locates_it_without_the_payload(store: InMemoryEventStore) -> None:
    opened = AccountOpenedFactory(owner="Ada Lovelace")
    deposited = MoneyDepositedFactory(
        aggregate_id=opened.aggregate_id, aggregate_version=2, amount=Decimal("987.65")
    )
    append(store, [opened, deposited], ExpectedVersion.NO_STREAM)
    first, second = store.read_all()
    assert str(second) == (
        f"MoneyDeposited({second.stream_id} @2, global #2, event_id={deposited.event_id})"
    )
    assert "Ada Lovelace" not in str(first)


def test_an_event_stream_given_no_events_is_an_empty_list() -> None:
    stream = EventStream(uuid4(), ACCOUNT, events=None)
    assert stream.events == []
    assert stream.is_empty
    assert stream.latest_event is None
