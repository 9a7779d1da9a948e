"""AggregateRepository over InMemoryEventStore: load, save, conflicts, publishing,
request metadata, tenancy and snapshots."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest

from django_eventsource import (
    AggregateNotFoundError,
    AggregateRepository,
    AppendResult,
    DomainEvent,
    EventStream,
    InMemoryEventStore,
    InMemorySnapshotStore,
    OptimisticLockError,
    event_context,
)
from django_eventsource.aggregates.snapshots import SnapshotData
from django_eventsource.exceptions import InvalidEventError
from tests.testapp.domain import Account, AccountOpened, MoneyDeposited

AccountRepository = AggregateRepository[Account]


class RecordingPublisher:
    def __init__(self) -> None:
        self.batches: list[list[DomainEvent]] = []

    def publish(self, events: list[DomainEvent]) -> None:
        self.batches.append(list(events))


class BrokenPublisher:
    def publish(self, events: list[DomainEvent]) -> None:
        raise ConnectionError("bus is down")


class ReadTrackingStore(InMemoryEventStore):
    """Remembers the ``from_version`` of every ``get_events`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.reads_from: list[int] = []

    def get_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str | None = None,
        from_version: int = 0,
        from_timestamp: datetime | None = None,
        to_timestamp: datetime | None = None,
    ) -> EventStream:
        self.reads_from.append(from_version)
        return super().get_events(
            aggregate_id, aggregate_type, from_version, from_timestamp, to_timestamp
        )


class AccountV2(Account):
    """The same aggregate after a change to its state's schema."""

    schema_version = 2


@pytest.fixture
def store() -> ReadTrackingStore:
    return ReadTrackingStore()


@pytest.fixture
def repo(store: InMemoryEventStore) -> AccountRepository:
    return AggregateRepository(store, Account)


def open_account(
    repo: AccountRepository, balance: str = "10", deposits: Sequence[str] = ()
) -> UUID:
    account = repo.create_new(uuid4())
    account.open("ada", Decimal(balance))
    for amount in deposits:
        account.deposit(Decimal(amount))
    repo.save(account)
    return account.aggregate_id


# -- construction -------------------------------------------------------------------------


def test_the_aggregate_type_comes_from_the_factory_class(repo: AccountRepository) -> None:
    assert repo.aggregate_type == "Account"


def test_a_factory_without_aggregate_type_needs_one_explicitly(store: InMemoryEventStore) -> None:
    def factory(aggregate_id: UUID) -> Account:
        return Account(aggregate_id)

    with pytest.raises(TypeError, match="aggregate_type is required"):
        AggregateRepository(store, factory)
    assert AggregateRepository(store, factory, aggregate_type="Account").aggregate_type == "Account"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"snapshot_every": 10}, "needs a snapshot_store"),
        ({"snapshot_every": 0, "snapshot_store": InMemorySnapshotStore()}, "positive"),
    ],
)
def test_invalid_snapshot_options_are_refused(
    store: InMemoryEventStore, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        AggregateRepository(store, Account, **options)


# -- load / save --------------------------------------------------------------------------


def test_a_saved_aggregate_loads_with_its_state_and_version(repo: AccountRepository) -> None:
    account_id = open_account(repo, "10", deposits=["5", "2.5"])
    loaded = repo.load(account_id)
    assert loaded.state.balance == Decimal("17.5")
    assert loaded.version == 3
    assert not loaded.has_uncommitted_events


def test_save_marks_the_events_as_committed(repo: AccountRepository) -> None:
    account = repo.create_new(uuid4())
    account.open("ada")
    result = repo.save(account)
    assert result is not None
    assert (result.new_version, account.version) == (1, 1)
    assert not account.has_uncommitted_events


def test_saving_an_unchanged_aggregate_does_nothing(
    repo: AccountRepository, store: InMemoryEventStore
) -> None:
    account = repo.load(open_account(repo))
    assert repo.save(account) is None
    assert store.get_global_position() == 1


def test_saving_more_events_appends_to_the_stream(repo: AccountRepository) -> None:
    account_id = open_account(repo)
    account = repo.load(account_id)
    account.deposit(Decimal("1"))
    account.deposit(Decimal("2"))
    repo.save(account)
    assert repo.get_version(account_id) == 3
    assert repo.load(account_id).state.balance == Decimal("13")


def test_loading_an_unknown_aggregate_raises_not_found(repo: AccountRepository) -> None:
    missing = uuid4()
    with pytest.raises(AggregateNotFoundError) as excinfo:
        repo.load(missing)
    assert excinfo.value.aggregate_id == missing
    assert str(excinfo.value) == f"Account {missing} not found"


def test_load_or_create_returns_a_new_aggregate_when_there_are_no_events(
    repo: AccountRepository,
) -> None:
    fresh = repo.load_or_create(uuid4())
    assert fresh.version == 0
    existing = repo.load_or_create(open_account(repo, "7"))
    assert existing.state.balance == Decimal("7")


def test_exists_and_get_version(repo: AccountRepository) -> None:
    account_id = open_account(repo, deposits=["1"])
    assert repo.exists(account_id)
    assert repo.get_version(account_id) == 2
    assert not repo.exists(uuid4())
    assert repo.get_version(uuid4()) == 0


def test_create_new_stores_nothing_until_saved(repo: AccountRepository) -> None:
    account = repo.create_new(uuid4())
    account.open("ada")
    assert not repo.exists(account.aggregate_id)


def test_a_repository_refuses_aggregates_of_another_type(store: InMemoryEventStore) -> None:
    repo: AccountRepository = AggregateRepository(store, Account, aggregate_type="Savings")
    account = Account(uuid4())
    account.open("ada")
    with pytest.raises(InvalidEventError, match="'Savings'"):
        repo.save(account)
    assert store.get_global_position() == 0


def test_a_stale_aggregate_cannot_overwrite_a_newer_save(repo: AccountRepository) -> None:
    account_id = open_account(repo, "10")
    first, second = repo.load(account_id), repo.load(account_id)
    first.deposit(Decimal("5"))
    second.withdraw(Decimal("10"))
    repo.save(first)
    with pytest.raises(OptimisticLockError) as excinfo:
        repo.save(second)
    assert (excinfo.value.expected_version, excinfo.value.actual_version) == (1, 2)
    assert second.has_uncommitted_events
    assert repo.load(account_id).state.balance == Decimal("15")


class ConflictReportingStore(InMemoryEventStore):
    """A custom store that reports a version conflict in its result instead of raising."""

    def append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: Sequence[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        actual = self.get_stream_version(aggregate_id, aggregate_type)
        if expected_version >= 0 and expected_version != actual:
            return AppendResult.conflicted(actual)
        return super().append_events(aggregate_id, aggregate_type, events, expected_version)


def test_a_store_that_reports_a_conflict_without_raising_still_fails_the_save() -> None:
    store = ConflictReportingStore()
    publisher = RecordingPublisher()
    repo: AccountRepository = AggregateRepository(store, Account, event_publisher=publisher)
    account_id = open_account(repo, "10")
    first, second = repo.load(account_id), repo.load(account_id)
    first.deposit(Decimal("5"))
    second.withdraw(Decimal("10"))
    repo.save(first)
    publisher.batches.clear()
    with pytest.raises(OptimisticLockError) as excinfo:
        repo.save(second)
    assert (excinfo.value.expected_version, excinfo.value.actual_version) == (1, 2)
    assert second.has_uncommitted_events
    assert publisher.batches == []
    assert repo.load(account_id).state.balance == Decimal("15")


# -- publishing ---------------------------------------------------------------------------


def test_the_publisher_receives_the_saved_events(store: InMemoryEventStore) -> None:
    publisher = RecordingPublisher()
    repo: AccountRepository = AggregateRepository(store, Account, event_publisher=publisher)
    account = repo.create_new(uuid4())
    account.open("ada")
    account.deposit(Decimal("3"))
    repo.save(account)
    assert len(publisher.batches) == 1
    assert publisher.batches[0] == store.get_events(account.aggregate_id, "Account").events
    assert [type(e) for e in publisher.batches[0]] == [AccountOpened, MoneyDeposited]


def test_a_failing_publisher_does_not_fail_the_save(
    store: InMemoryEventStore, caplog: pytest.LogCaptureFixture
) -> None:
    repo: AccountRepository = AggregateRepository(store, Account, event_publisher=BrokenPublisher())
    with caplog.at_level(logging.ERROR, logger="django_eventsource"):
        account_id = open_account(repo)
    assert repo.get_version(account_id) == 1
    assert "Publishing 1 committed event(s) failed" in caplog.text


def test_nothing_is_published_when_the_save_conflicts(store: InMemoryEventStore) -> None:
    publisher = RecordingPublisher()
    repo: AccountRepository = AggregateRepository(store, Account, event_publisher=publisher)
    account_id = open_account(repo)
    stale, fresh = repo.load(account_id), repo.load(account_id)
    fresh.deposit(Decimal("1"))
    repo.save(fresh)
    stale.deposit(Decimal("2"))
    with pytest.raises(OptimisticLockError):
        repo.save(stale)
    assert len(publisher.batches) == 2


# -- request metadata ---------------------------------------------------------------------


def test_event_context_stamps_actor_correlation_and_causation(
    repo: AccountRepository, store: InMemoryEventStore
) -> None:
    correlation, causation = uuid4(), uuid4()
    with event_context(actor_id="user-42", correlation_id=correlation, causation_id=causation):
        account_id = open_account(repo, deposits=["1"])
    events = store.get_events(account_id, "Account").events
    assert {e.actor_id for e in events} == {"user-42"}
    assert {e.correlation_id for e in events} == {correlation}
    assert {e.causation_id for e in events} == {causation}


def test_event_context_accepts_ids_as_uuid_strings(
    repo: AccountRepository, store: InMemoryEventStore
) -> None:
    correlation = uuid4()
    with event_context(correlation_id=str(correlation)):
        account_id = open_account(repo)
    (event,) = store.get_events(account_id, "Account").events
    assert event.correlation_id == correlation
    assert event.to_dict()["correlation_id"] == str(correlation)


def test_event_context_refuses_ids_that_are_not_uuids() -> None:
    with pytest.raises(InvalidEventError, match="causation_id must be a UUID"):
        event_context(causation_id="job-17").__enter__()


def test_nested_event_contexts_inherit_unset_values(
    repo: AccountRepository, store: InMemoryEventStore
) -> None:
    correlation = uuid4()
    with (
        event_context(actor_id="outer", correlation_id=correlation),
        event_context(actor_id="inner"),
    ):
        account_id = open_account(repo)
    (event,) = store.get_events(account_id, "Account").events
    assert (event.actor_id, event.correlation_id) == ("inner", correlation)


def test_explicit_event_metadata_wins_over_the_context(
    repo: AccountRepository, store: InMemoryEventStore
) -> None:
    cause = AccountOpened(aggregate_id=uuid4(), owner="someone")
    account = repo.create_new(uuid4())
    account.apply_event(
        AccountOpened(
            aggregate_id=account.aggregate_id, owner="ada", actor_id="system"
        ).with_causation(cause)
    )
    with event_context(actor_id="user-42", correlation_id=uuid4(), causation_id=uuid4()):
        repo.save(account)
    (stored,) = store.get_events(account.aggregate_id, "Account").events
    assert stored.actor_id == "system"
    assert stored.is_caused_by(cause)
    assert stored.is_correlated_with(cause)


def test_without_a_context_events_keep_their_own_metadata(
    repo: AccountRepository, store: InMemoryEventStore
) -> None:
    account = repo.create_new(uuid4())
    account.open("ada")
    (pending,) = account.uncommitted_events
    repo.save(account)
    (stored,) = store.get_events(account.aggregate_id, "Account").events
    assert stored == pending


# -- tenancy ------------------------------------------------------------------------------


def test_a_tenant_bound_repository_stamps_its_tenant(store: InMemoryEventStore) -> None:
    tenant = uuid4()
    repo: AccountRepository = AggregateRepository(store, Account, tenant_id=tenant)
    account_id = open_account(repo, deposits=["1"])
    assert {e.tenant_id for e in store.get_events(account_id, "Account").events} == {tenant}
    assert repo.load(account_id).version == 2


def test_another_tenants_aggregate_is_not_found(store: InMemoryEventStore) -> None:
    ours: AccountRepository = AggregateRepository(store, Account, tenant_id=uuid4())
    theirs: AccountRepository = AggregateRepository(store, Account, tenant_id=uuid4())
    account_id = open_account(theirs)
    with pytest.raises(AggregateNotFoundError):
        ours.load(account_id)
    assert not ours.exists(account_id)
    assert ours.get_version(account_id) == 0
    assert ours.load_or_create(account_id).version == 0


def test_events_of_another_tenant_cannot_be_saved(store: InMemoryEventStore) -> None:
    repo: AccountRepository = AggregateRepository(store, Account, tenant_id=uuid4())
    account = repo.create_new(uuid4())
    account.apply_event(
        AccountOpened(aggregate_id=account.aggregate_id, owner="ada", tenant_id=uuid4())
    )
    with pytest.raises(InvalidEventError, match="tenant"):
        repo.save(account)
    assert store.get_global_position() == 0


def test_an_unbound_repository_sees_every_tenant(store: InMemoryEventStore) -> None:
    tenant_repo: AccountRepository = AggregateRepository(store, Account, tenant_id=uuid4())
    account_id = open_account(tenant_repo)
    assert AggregateRepository(store, Account).load(account_id).version == 1


# -- snapshots ----------------------------------------------------------------------------


def deposit_one_by_one(repo: AccountRepository, account_id: UUID, count: int) -> None:
    for _ in range(count):
        account = repo.load(account_id)
        account.deposit(Decimal("1"))
        repo.save(account)


def test_snapshots_are_written_every_n_versions(store: InMemoryEventStore) -> None:
    snapshots = InMemorySnapshotStore()
    repo: AccountRepository = AggregateRepository(
        store, Account, snapshot_store=snapshots, snapshot_every=3
    )
    account_id = open_account(repo)
    deposit_one_by_one(repo, account_id, 1)
    assert snapshots.get_snapshot(account_id, "Account") is None
    deposit_one_by_one(repo, account_id, 1)
    snapshot = snapshots.get_snapshot(account_id, "Account")
    assert snapshot is not None
    assert (snapshot.version, snapshot.schema_version) == (3, 1)
    assert Decimal(snapshot.state["balance"]) == Decimal("12")
    deposit_one_by_one(repo, account_id, 3)
    snapshot = snapshots.get_snapshot(account_id, "Account")
    assert snapshot is not None
    assert snapshot.version == 6


def test_a_save_crossing_a_multiple_snapshots_its_final_version(
    store: InMemoryEventStore,
) -> None:
    snapshots = InMemorySnapshotStore()
    repo: AccountRepository = AggregateRepository(
        store, Account, snapshot_store=snapshots, snapshot_every=2
    )
    account_id = open_account(repo, deposits=["1", "1"])
    snapshot = snapshots.get_snapshot(account_id, "Account")
    assert snapshot is not None
    assert snapshot.version == 3


def test_load_uses_the_snapshot_and_only_newer_events(store: ReadTrackingStore) -> None:
    snapshots = InMemorySnapshotStore()
    repo: AccountRepository = AggregateRepository(
        store, Account, snapshot_store=snapshots, snapshot_every=4
    )
    account_id = open_account(repo, "10", deposits=["1", "1", "1", "1", "1"])
    assert snapshots.get_snapshot(account_id, "Account").version == 6  # type: ignore[union-attr]
    account = repo.load(account_id)
    account.deposit(Decimal("2"))
    repo.save(account)
    store.reads_from.clear()
    loaded = repo.load(account_id)
    assert store.reads_from == [6]
    assert loaded.version == 7
    assert loaded.state.balance == Decimal("17")


def test_a_snapshot_of_another_schema_version_is_ignored(store: ReadTrackingStore) -> None:
    snapshots = InMemorySnapshotStore()
    old_repo: AccountRepository = AggregateRepository(
        store, Account, snapshot_store=snapshots, snapshot_every=2
    )
    account_id = open_account(old_repo, "10", deposits=["5"])
    new_repo: AggregateRepository[AccountV2] = AggregateRepository(
        store, AccountV2, snapshot_store=snapshots
    )
    store.reads_from.clear()
    loaded = new_repo.load(account_id)
    assert store.reads_from == [0]
    assert loaded.state.balance == Decimal("15")


def test_a_snapshot_that_no_longer_validates_falls_back_to_replay(
    store: ReadTrackingStore,
) -> None:
    snapshots = InMemorySnapshotStore()
    repo: AccountRepository = AggregateRepository(store, Account, snapshot_store=snapshots)
    account_id = open_account(repo, "10", deposits=["5"])
    snapshots.save_snapshot(
        SnapshotData(
            aggregate_id=account_id,
            aggregate_type="Account",
            version=2,
            schema_version=1,
            state={"balance": "not a number"},
        )
    )
    store.reads_from.clear()
    loaded = repo.load(account_id)
    assert store.reads_from == [0]
    assert loaded.state.balance == Decimal("15")
    assert loaded.version == 2


def test_a_tenant_bound_repository_ignores_another_tenants_snapshot(
    store: InMemoryEventStore,
) -> None:
    snapshots = InMemorySnapshotStore()
    theirs: AccountRepository = AggregateRepository(
        store, Account, tenant_id=uuid4(), snapshot_store=snapshots, snapshot_every=1
    )
    account_id = open_account(theirs)
    ours: AccountRepository = AggregateRepository(
        store, Account, tenant_id=uuid4(), snapshot_store=snapshots
    )
    with pytest.raises(AggregateNotFoundError):
        ours.load(account_id)


# -- async twins --------------------------------------------------------------------------


def test_async_twins_load_save_and_query(repo: AccountRepository) -> None:
    account_id = uuid4()

    async def scenario() -> tuple[int, Decimal, bool, bool, int]:
        account = await repo.aload_or_create(account_id)
        account.open("ada", Decimal("4"))
        await repo.asave(account)
        loaded = await repo.aload(account_id)
        loaded.deposit(Decimal("6"))
        await repo.asave(loaded)
        reloaded = await repo.aload(account_id)
        return (
            reloaded.version,
            reloaded.state.balance,
            await repo.aexists(account_id),
            await repo.aexists(uuid4()),
            await repo.aget_version(account_id),
        )

    assert asyncio.run(scenario()) == (2, Decimal("10"), True, False, 2)


def test_async_load_of_an_unknown_aggregate_raises_not_found(repo: AccountRepository) -> None:
    with pytest.raises(AggregateNotFoundError):
        asyncio.run(repo.aload(uuid4()))


def test_async_save_of_a_stale_aggregate_conflicts(repo: AccountRepository) -> None:
    account_id = open_account(repo)
    stale, fresh = repo.load(account_id), repo.load(account_id)
    fresh.deposit(Decimal("1"))
    repo.save(fresh)
    stale.deposit(Decimal("1"))
    with pytest.raises(OptimisticLockError):
        asyncio.run(repo.asave(stale))
