"""``DjangoEventStore`` on the test database (SQLite or PostgreSQL)."""

from __future__ import annotations

import select
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.test import override_settings

from django_eventsource import (
    DomainEvent,
    EventRegistry,
    EventTypeNotFoundError,
    ExpectedVersion,
    OptimisticLockError,
    ReadDirection,
    ReadOptions,
)
from django_eventsource.exceptions import (
    DuplicateEventIdError,
    InvalidEventError,
    InvalidReadOptionsError,
    SerializationError,
)
from django_eventsource.models import EventRecord, OutboxMessage
from django_eventsource.stores.django import NOTIFY_CHANNEL, DjangoEventStore
from tests.testapp.domain import AccountOpened, MoneyDeposited

pytestmark = [pytest.mark.own_sql, pytest.mark.django_db]

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def history(
    aggregate_id: UUID,
    count: int,
    *,
    start: int = 1,
    tenant_id: UUID | None = None,
    at: datetime = T0,
) -> list[DomainEvent]:
    """``count`` events of one account, versions ``start…``, one minute apart."""
    events: list[DomainEvent] = []
    for version in range(start, start + count):
        occurred = at + timedelta(minutes=version)
        if version == 1:
            events.append(
                AccountOpened(
                    aggregate_id=aggregate_id,
                    owner="ada",
                    aggregate_version=1,
                    tenant_id=tenant_id,
                    occurred_at=occurred,
                )
            )
        else:
            events.append(
                MoneyDeposited(
                    aggregate_id=aggregate_id,
                    amount=Decimal(version),
                    aggregate_version=version,
                    tenant_id=tenant_id,
                    occurred_at=occurred,
                    metadata={"source": "test", "n": version},
                )
            )
    return events


def test_appended_events_load_back_equal_in_version_order(store: DjangoEventStore) -> None:
    account = uuid4()
    events = history(account, 3, tenant_id=uuid4())

    result = store.append_events(account, "Account", events, ExpectedVersion.NO_STREAM)

    stream = store.get_events(account, "Account")
    assert stream.events == events
    assert stream.version == 3
    assert result.success and result.new_version == 3
    assert result.global_position == store.get_global_position()


def test_payload_column_holds_only_the_events_own_fields(store: DjangoEventStore) -> None:
    account = uuid4()
    store.append_events(account, "Account", history(account, 2), 0)

    record = EventRecord.objects.get(aggregate_id=account, aggregate_version=2)
    assert record.payload == {"amount": "2"}
    assert record.metadata == {"source": "test", "n": 2}
    assert record.event_type == "MoneyDeposited"


@pytest.mark.parametrize(
    ("stored", "expected", "ok"),
    [
        (0, ExpectedVersion.NO_STREAM, True),
        (2, ExpectedVersion.NO_STREAM, False),
        (0, ExpectedVersion.ANY, True),
        (2, ExpectedVersion.ANY, True),
        (0, ExpectedVersion.STREAM_EXISTS, False),
        (2, ExpectedVersion.STREAM_EXISTS, True),
        (2, 2, True),
        (2, 1, False),
        (2, 3, False),
    ],
)
def test_expected_version_modes_accept_or_reject_the_append(
    store: DjangoEventStore, stored: int, expected: int, ok: bool
) -> None:
    account = uuid4()
    if stored:
        store.append_events(account, "Account", history(account, stored), 0)
    new = history(account, 1, start=stored + 1)

    if ok:
        assert store.append_events(account, "Account", new, expected).new_version == stored + 1
    else:
        with pytest.raises(OptimisticLockError) as info:
            store.append_events(account, "Account", new, expected)
        assert (info.value.aggregate_id, info.value.expected_version) == (account, expected)
        assert info.value.actual_version == stored
        assert store.get_stream_version(account, "Account") == stored


def test_events_built_on_a_stale_version_with_any_raise_optimistic_lock_error(
    store: DjangoEventStore,
) -> None:
    account = uuid4()
    store.append_events(account, "Account", history(account, 3), 0)

    with pytest.raises(OptimisticLockError) as info:
        store.append_events(account, "Account", history(account, 1, start=2), ExpectedVersion.ANY)
    assert (info.value.expected_version, info.value.actual_version) == (1, 3)


def test_reappending_the_same_events_is_an_idempotent_success(store: DjangoEventStore) -> None:
    account = uuid4()
    events = history(account, 2)
    first = store.append_events(account, "Account", events, 0)

    again = store.append_events(account, "Account", events, 0)

    assert again == first
    assert EventRecord.objects.filter(aggregate_id=account).count() == 2


def test_an_event_id_stored_in_another_stream_is_rejected(store: DjangoEventStore) -> None:
    first, second = uuid4(), uuid4()
    store.append_events(first, "Account", history(first, 1), 0)
    stolen_id = EventRecord.objects.get(aggregate_id=first).event_id
    clash = AccountOpened(event_id=stolen_id, aggregate_id=second, owner="bob")

    with pytest.raises(DuplicateEventIdError) as info:
        store.append_events(second, "Account", [clash], 0)

    assert info.value.event_id == stolen_id
    assert info.value.stream_id == f"{first}:Account"
    assert store.get_stream_version(second, "Account") == 0


def test_an_empty_append_is_a_no_op(store: DjangoEventStore) -> None:
    account = uuid4()
    store.append_events(account, "Account", history(account, 2), 0)

    result = store.append_events(account, "Account", [], ExpectedVersion.ANY)

    assert (result.success, result.new_version) == (True, 2)
    assert EventRecord.objects.count() == 2


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s, a: s.append_events(a, "Account", history(uuid4(), 1), 0), InvalidEventError),
        (lambda s, a: s.append_events("not-a-uuid", "Account", [], 0), InvalidEventError),
        (lambda s, a: s.append_events(a, "Account", history(a, 2), 5), OptimisticLockError),
        (lambda s, a: s.append_events(a, "Account", history(a, 2, start=2), 0), InvalidEventError),
        (lambda s, a: s.append_events(a, "", history(a, 1), 0), InvalidEventError),
    ],
    ids=["other-aggregate", "non-uuid-id", "wrong-version", "version-gap", "no-type"],
)
def test_bad_input_raises_a_typed_error_and_writes_nothing(
    store: DjangoEventStore, call: Callable[[DjangoEventStore, UUID], Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        call(store, uuid4())
    assert EventRecord.objects.count() == 0
    assert OutboxMessage.objects.count() == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"owner": "a\x00b"},
        {"owner": "lone \ud800 high surrogate"},
        {"owner": "lone \udc00 low surrogate"},
        {"owner": "\\ then a lone \ud800"},
        {"owner": "x", "metadata": {"key\x00": 1}},
        {"owner": "x", "metadata": {"ratio": float("nan")}},
        {"owner": "x", "metadata": {"id": uuid4()}},
        {"owner": "x", "actor_id": "user\x00"},
        {"owner": "x", "actor_id": "user\udfff"},
        {"owner": "x", "event_version": 2**31},
    ],
    ids=[
        "nul",
        "high-surrogate",
        "low-surrogate",
        "surrogate-after-backslash",
        "metadata-nul",
        "metadata-nan",
        "metadata-not-json",
        "actor-nul",
        "actor-surrogate",
        "event-version-past-int32",
    ],
)
def test_values_some_database_cannot_store_raise_invalid_event_error_naming_the_event(
    fields: dict[str, Any],
) -> None:
    store = DjangoEventStore(outbox_enabled=True)
    account = uuid4()
    event = AccountOpened(aggregate_id=account, **fields)

    with pytest.raises(InvalidEventError, match=f"Event {event.event_id} .* cannot be stored"):
        store.append_events(account, "Account", [event], 0)

    assert EventRecord.objects.count() == 0
    assert OutboxMessage.objects.count() == 0


def test_an_aggregate_type_with_a_nul_character_is_refused_before_any_query() -> None:
    account = uuid4()
    event = AccountOpened(aggregate_id=account, aggregate_type="Acc\x00ount", owner="x")

    with pytest.raises(InvalidEventError, match="aggregate_type contains a NUL"):
        DjangoEventStore().append_events(account, "Acc\x00ount", [event], 0)

    assert EventRecord.objects.count() == 0


def test_text_every_database_stores_alike_is_kept_exactly(store: DjangoEventStore) -> None:
    # Escapes that only look like NUL or a surrogate, and characters stored as pairs.
    owner = "literal \\u0000 and \\ud800, é, 😀, \\\n"
    account = uuid4()
    store.append_events(account, "Account", [AccountOpened(aggregate_id=account, owner=owner)], 0)

    (event,) = store.get_events(account, "Account").events

    assert isinstance(event, AccountOpened) and event.owner == owner


@pytest.mark.parametrize(
    "read",
    [
        lambda s: list(s.read_all(ReadOptions(from_position=2**63))),
        lambda s: list(
            s.read_all(ReadOptions(direction=ReadDirection.BACKWARD, from_position=2**63))
        ),
        lambda s: list(s.read_stream(f"{uuid4()}:Account", ReadOptions(from_position=2**63))),
        lambda s: s.get_events(uuid4(), "Account", from_version=2**63),
        lambda s: s.first_raw_event_after(2**63),
    ],
    ids=["read-all", "read-all-backward", "read-stream", "get-events", "first-raw-event"],
)
def test_positions_past_64_bits_raise_invalid_read_options_error(
    store: DjangoEventStore, read: Callable[[DjangoEventStore], Any]
) -> None:
    with pytest.raises(InvalidReadOptionsError, match="9223372036854775807"):
        read(store)


def test_the_largest_64_bit_position_reads_nothing(store: DjangoEventStore) -> None:
    account = uuid4()
    store.append_events(account, "Account", history(account, 2), 0)
    last = 2**63 - 1

    assert list(store.read_all(ReadOptions(from_position=last))) == []
    assert list(store.read_stream(f"{account}:Account", ReadOptions(from_position=last))) == []
    assert store.get_events(account, "Account", from_version=last).events == []
    assert len(list(store.read_all(ReadOptions(direction="backward", from_position=last)))) == 2


def test_reading_an_unregistered_event_type_names_it_and_the_registered_ones() -> None:
    account = uuid4()
    DjangoEventStore().append_events(account, "Account", history(account, 2), 0)
    only_opened = EventRegistry()
    only_opened.register(AccountOpened)

    with pytest.raises(EventTypeNotFoundError) as info:
        DjangoEventStore(registry=only_opened).get_events(account, "Account")

    assert "MoneyDeposited" in str(info.value)
    assert "AccountOpened" in str(info.value)


def test_a_stored_payload_that_no_longer_validates_raises_serialization_error() -> None:
    class StrictDeposit(DomainEvent):
        aggregate_type: str = "Account"
        amount: Decimal
        currency: str

    account = uuid4()
    DjangoEventStore().append_events(account, "Account", history(account, 2), 0)
    registry = EventRegistry()
    registry.register(AccountOpened)
    registry.register(StrictDeposit, event_type="MoneyDeposited")

    with pytest.raises(SerializationError, match="currency") as caught:
        list(DjangoEventStore(registry=registry).read_all())
    assert caught.value.event_type == "MoneyDeposited"


def test_get_events_filters_by_version_and_time_window(store: DjangoEventStore) -> None:
    account = uuid4()
    store.append_events(account, "Account", history(account, 5), 0)

    after_two = store.get_events(account, "Account", from_version=2)
    window = store.get_events(
        account, from_timestamp=T0 + timedelta(minutes=2), to_timestamp=T0 + timedelta(minutes=3)
    )
    empty = store.get_events(uuid4(), "Account", from_version=4)

    assert [e.aggregate_version for e in after_two.events] == [3, 4, 5]
    assert after_two.version == 5
    assert [e.aggregate_version for e in window.events] == [2, 3]
    assert window.aggregate_type == "Account"
    assert (empty.is_empty, empty.version) == (True, 4)


def test_lookups_report_existence_versions_and_positions(store: DjangoEventStore) -> None:
    account = uuid4()
    events = history(account, 3)
    assert (store.get_global_position(), store.safe_high_water_mark()) == (0, 0)
    store.append_events(account, "Account", events, 0)

    assert store.event_exists(events[0].event_id)
    assert not store.event_exists(uuid4())
    assert store.get_stream_version(account, "Account") == 3
    assert store.get_stream_version(account, "Order") == 0
    assert store.safe_high_water_mark() == store.get_global_position()


def test_get_events_by_type_filters_tenant_and_time_in_global_order(
    store: DjangoEventStore,
) -> None:
    tenant = uuid4()
    mine, theirs = uuid4(), uuid4()
    store.append_events(mine, "Account", history(mine, 2, tenant_id=tenant), 0)
    store.append_events(theirs, "Account", history(theirs, 2, tenant_id=uuid4()), 0)
    store.append_events(mine, "Account", history(mine, 1, start=3, tenant_id=tenant), 2)

    everything = store.get_events_by_type("Account")
    tenant_only = store.get_events_by_type("Account", tenant_id=tenant)
    recent = store.get_events_by_type(
        "Account", tenant_id=tenant, from_timestamp=T0 + timedelta(minutes=2)
    )

    assert len(everything) == 5
    assert [(e.aggregate_id, e.aggregate_version) for e in tenant_only] == [
        (mine, 1),
        (mine, 2),
        (mine, 3),
    ]
    assert [e.aggregate_version for e in recent] == [2, 3]
    assert store.get_events_by_type("Order") == []


def test_read_stream_supports_both_directions_exclusive_positions_and_limits(
    store: DjangoEventStore,
) -> None:
    account = uuid4()
    store.append_events(account, "Account", history(account, 5), 0)
    stream_id = f"{account}:Account"

    def versions(**kwargs: Any) -> list[int]:
        return [s.stream_position for s in store.read_stream(stream_id, ReadOptions(**kwargs))]

    assert versions() == [1, 2, 3, 4, 5]
    assert versions(from_position=2, limit=2) == [3, 4]
    assert versions(direction=ReadDirection.BACKWARD) == [5, 4, 3, 2, 1]
    assert versions(direction=ReadDirection.BACKWARD, from_position=4, limit=2) == [3, 2]
    assert versions(to_timestamp=T0 + timedelta(minutes=2)) == [1, 2]
    with pytest.raises(InvalidEventError):
        list(store.read_stream("no-colon"))


def test_read_all_pages_through_chunks_in_both_directions() -> None:
    store = DjangoEventStore()
    store.chunk_size = 3
    accounts = [uuid4() for _ in range(3)]
    for account in accounts:
        store.append_events(account, "Account", history(account, 4), 0)
    positions = list(EventRecord.objects.values_list("position", flat=True))

    forward = [s.global_position for s in store.read_all()]
    backward = [
        s.global_position for s in store.read_all(ReadOptions(direction=ReadDirection.BACKWARD))
    ]
    middle = [s.global_position for s in store.read_all(ReadOptions(from_position=positions[3]))]
    limited = [
        s.global_position
        for s in store.read_all(
            ReadOptions(direction=ReadDirection.BACKWARD, from_position=positions[-2], limit=4)
        )
    ]

    assert forward == positions
    assert backward == positions[::-1]
    assert middle == positions[4:]
    assert limited == positions[-3:-7:-1]


def test_read_all_applies_tenant_and_time_filters_with_a_limit(store: DjangoEventStore) -> None:
    tenant = uuid4()
    mine, theirs = uuid4(), uuid4()
    store.append_events(theirs, "Account", history(theirs, 3, tenant_id=uuid4()), 0)
    store.append_events(mine, "Account", history(mine, 4, tenant_id=tenant), 0)

    found = list(
        store.read_all(
            ReadOptions(tenant_id=tenant, from_timestamp=T0 + timedelta(minutes=2), limit=2)
        )
    )

    assert [(s.aggregate_id, s.stream_position) for s in found] == [(mine, 2), (mine, 3)]
    assert found[0].stream_id == f"{mine}:Account"
    assert found[0].stored_at.tzinfo is not None


def test_outbox_rows_are_written_with_the_events_when_enabled() -> None:
    account = uuid4()
    events = history(account, 2, tenant_id=uuid4())

    DjangoEventStore(outbox_enabled=True).append_events(account, "Account", events, 0)

    rows = list(OutboxMessage.objects.order_by("aggregate_version"))
    assert [r.event_id for r in rows] == [e.event_id for e in events]
    assert rows[1].event_data == events[1].to_dict()
    assert (rows[1].status, rows[1].tenant_id, rows[1].aggregate_version) == (
        "pending",
        events[1].tenant_id,
        2,
    )


def test_outbox_follows_the_setting_unless_the_store_overrides_it() -> None:
    first, second, third = uuid4(), uuid4(), uuid4()
    with override_settings(EVENTSOURCE_OUTBOX_ENABLED=True):
        DjangoEventStore().append_events(first, "Account", history(first, 1), 0)
        DjangoEventStore(outbox_enabled=False).append_events(
            second, "Account", history(second, 1), 0
        )
    DjangoEventStore().append_events(third, "Account", history(third, 1), 0)

    assert list(OutboxMessage.objects.values_list("aggregate_id", flat=True)) == [first]


def test_outbox_rows_roll_back_with_the_callers_transaction() -> None:
    account = uuid4()
    store = DjangoEventStore(outbox_enabled=True)

    with pytest.raises(RuntimeError), transaction.atomic():
        store.append_events(account, "Account", history(account, 2), 0)
        raise RuntimeError("the surrounding work failed")

    assert EventRecord.objects.count() == 0
    assert OutboxMessage.objects.count() == 0


class StaleReadStore(DjangoEventStore):
    """Sees the stream one version behind on its first read, as a writer racing another."""

    def __init__(self) -> None:
        super().__init__()
        self.stale = True

    def _read_stream_state(self, *args: Any, **kwargs: Any) -> Any:
        current, existing, positions = super()._read_stream_state(*args, **kwargs)
        if self.stale:
            self.stale = False
            return current - 1, existing, positions
        return current, existing, positions


def test_losing_the_insert_race_raises_optimistic_lock_error_and_keeps_the_transaction() -> None:
    account = uuid4()
    DjangoEventStore().append_events(account, "Account", history(account, 2), 0)
    racing = StaleReadStore()
    other = uuid4()

    with transaction.atomic():
        with pytest.raises(OptimisticLockError) as info:
            racing.append_events(account, "Account", history(account, 1, start=2), 1)
        # The caller's transaction is still usable after the failed append.
        racing.append_events(other, "Account", history(other, 1), 0)

    assert (info.value.expected_version, info.value.actual_version) == (1, 2)
    assert racing.get_stream_version(account, "Account") == 2
    assert racing.get_stream_version(other, "Account") == 1


def test_async_twins_run_the_same_operations(store: DjangoEventStore) -> None:
    account = uuid4()
    events = history(account, 3)

    async def scenario() -> tuple[int, list[int], int]:
        await store.aappend_events(account, "Account", events, 0)
        stream = await store.aget_events(account, "Account")
        positions = [s.stream_position async for s in store.aread_all(ReadOptions(limit=2))]
        return stream.version, positions, await store.aget_stream_version(account, "Account")

    assert async_to_sync(scenario)() == (3, [1, 2], 3)


class EventsToDefault:
    """A router that records which models it was asked about."""

    seen: list[str] = []

    def db_for_write(self, model: type, **hints: Any) -> str:
        self.seen.append(f"write:{model.__name__}")
        return "default"

    def db_for_read(self, model: type, **hints: Any) -> str:
        self.seen.append(f"read:{model.__name__}")
        return "default"


def test_the_store_asks_the_routers_for_its_database() -> None:
    EventsToDefault.seen = []
    with override_settings(DATABASE_ROUTERS=[f"{__name__}.EventsToDefault"]):
        store = DjangoEventStore()
        account = uuid4()
        store.append_events(account, "Account", history(account, 1), 0)
        store.get_events(account, "Account")

    assert "write:EventRecord" in EventsToDefault.seen
    # Reads go where appends go, never to a router's read replica (tests/test_replica_reads.py).
    assert "read:EventRecord" not in EventsToDefault.seen
    assert DjangoEventStore(using="other").db_for_write() == "other"
    assert DjangoEventStore(using="other").db_for_read() == "other"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_postgres_notifies_listeners_with_the_last_position_at_commit() -> None:
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"],
        user=settings["USER"],
        dbname=settings["NAME"],
        autocommit=True,
    ) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        account = uuid4()
        with transaction.atomic():
            result = DjangoEventStore().append_events(account, "Account", history(account, 3), 0)
            assert not select.select([listener.fileno()], [], [], 0)[0]

        received = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]

    assert received == [str(result.global_position)]
