"""Multi-tenancy: a repository bound to a tenant writes and sees only that tenant's
aggregates, and tenant-filtered reads return only that tenant's events."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from asgiref.sync import async_to_sync

from django_eventsource import (
    AggregateNotFoundError,
    AggregateRepository,
    DjangoEventStore,
    DjangoSnapshotStore,
    EventStore,
    InMemoryEventStore,
    InMemorySnapshotStore,
    ReadDirection,
    ReadOptions,
)
from django_eventsource.aggregates.snapshots import SnapshotStore
from django_eventsource.exceptions import InvalidEventError, OptimisticLockError
from tests.testapp.domain import Account, MoneyDeposited

TENANT_A = UUID("aaaaaaaa-0000-4000-8000-000000000001")
TENANT_B = UUID("bbbbbbbb-0000-4000-8000-000000000002")


@pytest.fixture(params=["memory", pytest.param("django", marks=pytest.mark.django_db)])
def stores(request: pytest.FixtureRequest) -> tuple[EventStore, SnapshotStore]:
    if request.param == "memory":
        return InMemoryEventStore(), InMemorySnapshotStore()
    return DjangoEventStore(), DjangoSnapshotStore()


@pytest.fixture
def store(stores: tuple[EventStore, SnapshotStore]) -> EventStore:
    return stores[0]


def _repo(
    store: EventStore, tenant_id: UUID | None, snapshot_store: SnapshotStore | None = None
) -> AggregateRepository[Account]:
    return AggregateRepository(
        store,
        Account,
        tenant_id=tenant_id,
        snapshot_store=snapshot_store,
        snapshot_every=2 if snapshot_store is not None else None,
    )


def _open_account(repo: AggregateRepository[Account], owner: str, deposits: int = 1) -> UUID:
    account = repo.create_new(uuid4())
    account.open(owner)
    for _ in range(deposits):
        account.deposit(Decimal("10"))
    repo.save(account)
    return account.aggregate_id


def test_a_bound_repository_stamps_new_events_with_its_tenant(store: EventStore) -> None:
    account_id = _open_account(_repo(store, TENANT_A), "ada", deposits=2)

    events = store.get_events(account_id, "Account").events

    assert [e.tenant_id for e in events] == [TENANT_A, TENANT_A, TENANT_A]


def test_a_tenant_cannot_load_or_see_another_tenants_aggregate(store: EventStore) -> None:
    b_account = _open_account(_repo(store, TENANT_B), "bob")
    repo_a = _repo(store, TENANT_A)

    with pytest.raises(AggregateNotFoundError):
        repo_a.load(b_account)
    assert repo_a.exists(b_account) is False
    assert repo_a.get_version(b_account) == 0
    assert async_to_sync(repo_a.aexists)(b_account) is False
    assert _repo(store, TENANT_B).load(b_account).state.owner == "bob"


def test_a_tenant_sees_its_own_aggregate(store: EventStore) -> None:
    repo_a = _repo(store, TENANT_A)
    a_account = _open_account(repo_a, "ada", deposits=3)

    assert repo_a.exists(a_account) is True
    assert repo_a.get_version(a_account) == 4
    assert repo_a.load(a_account).state.balance == Decimal("30")


def _save_failure(repo: AggregateRepository[Account], account: Account) -> OptimisticLockError:
    with pytest.raises(OptimisticLockError) as excinfo:
        repo.save(account)
    return excinfo.value


def _deposit_at_version_1(repo: AggregateRepository[Account], account_id: UUID) -> Account:
    """An account this repository believes is open (version 1), with a new deposit."""
    account = repo.create_new(account_id)
    account.open("eve")
    account.mark_events_as_committed()
    account.deposit(Decimal("1"))
    return account


def test_creating_an_aggregate_under_another_tenants_id_tells_nothing_about_it(
    store: EventStore,
) -> None:
    b_account = _open_account(_repo(store, TENANT_B), "bob", deposits=2)
    repo_a = _repo(store, TENANT_A)
    account = repo_a.load_or_create(b_account)  # not found for A: a new aggregate
    account.open("ada")

    error = _save_failure(repo_a, account)

    assert (error.expected_version, error.actual_version) == (0, 0)
    assert str(error) == str(OptimisticLockError(b_account, 0, 0))
    assert error.__context__ is None and error.__cause__ is None
    assert _repo(store, TENANT_B).get_version(b_account) == 3


def test_saving_to_another_tenants_aggregate_fails_as_for_an_id_nobody_uses(
    store: EventStore,
) -> None:
    b_account = _open_account(_repo(store, TENANT_B), "bob", deposits=2)
    unknown = uuid4()
    repo_a = _repo(store, TENANT_A)

    for_unknown = _save_failure(repo_a, _deposit_at_version_1(repo_a, unknown))
    for_b = _save_failure(repo_a, _deposit_at_version_1(repo_a, b_account))

    assert type(for_b) is type(for_unknown)
    assert str(for_b) == str(for_unknown).replace(str(unknown), str(b_account))
    assert (for_b.expected_version, for_b.actual_version) == (1, 0)
    assert _repo(store, TENANT_B).get_version(b_account) == 3


def test_a_conflict_inside_the_tenants_own_aggregate_still_reports_its_version(
    store: EventStore,
) -> None:
    repo_a = _repo(store, TENANT_A)
    a_account = _open_account(repo_a, "ada", deposits=2)
    first, second = repo_a.load(a_account), repo_a.load(a_account)
    first.deposit(Decimal("1"))
    repo_a.save(first)
    second.deposit(Decimal("2"))

    error = _save_failure(repo_a, second)

    assert (error.expected_version, error.actual_version) == (3, 4)


def test_another_tenants_snapshot_is_not_found_either(
    stores: tuple[EventStore, SnapshotStore],
) -> None:
    store, snapshot_store = stores
    b_account = _open_account(_repo(store, TENANT_B, snapshot_store), "bob", deposits=3)
    snapshot = snapshot_store.get_snapshot(b_account, "Account")
    assert snapshot is not None and snapshot.tenant_id == TENANT_B

    with pytest.raises(AggregateNotFoundError):
        _repo(store, TENANT_A, snapshot_store).load(b_account)


def test_an_aggregate_holding_another_tenants_event_is_not_loaded(store: EventStore) -> None:
    repo_a = _repo(store, TENANT_A)
    a_account = _open_account(repo_a, "ada")
    intruder = MoneyDeposited(
        aggregate_id=a_account,
        aggregate_type="Account",
        aggregate_version=3,
        amount=Decimal("1"),
        tenant_id=TENANT_B,
    )
    store.append_events(a_account, "Account", [intruder], 2)

    with pytest.raises(AggregateNotFoundError):
        repo_a.load(a_account)


def test_a_bound_repository_refuses_an_event_of_another_tenant(store: EventStore) -> None:
    repo_a = _repo(store, TENANT_A)
    account = repo_a.create_new(uuid4())
    account.apply_event(
        MoneyDeposited(
            aggregate_id=account.aggregate_id,
            aggregate_type="Account",
            amount=Decimal("5"),
            tenant_id=TENANT_B,
        )
    )

    with pytest.raises(InvalidEventError, match="tenant"):
        repo_a.save(account)

    assert store.get_stream_version(account.aggregate_id, "Account") == 0


def test_an_unbound_repository_keeps_the_tenant_set_on_the_events(store: EventStore) -> None:
    repo = _repo(store, None)
    account = repo.create_new(uuid4())
    account.raise_event(MoneyDeposited, amount=Decimal("5"), tenant_id=TENANT_B)
    repo.save(account)

    [event] = store.get_events(account.aggregate_id, "Account").events

    assert event.tenant_id == TENANT_B
    assert repo.load(account.aggregate_id).version == 1


def test_tenant_filtered_reads_return_only_that_tenants_events(store: EventStore) -> None:
    a_accounts = {_open_account(_repo(store, TENANT_A), "ada") for _ in range(2)}
    b_account = _open_account(_repo(store, TENANT_B), "bob")
    untenanted = _open_account(_repo(store, None), "eve")

    forward = list(store.read_all(ReadOptions(tenant_id=TENANT_A)))
    backward = list(
        store.read_all(ReadOptions(tenant_id=TENANT_A, direction=ReadDirection.BACKWARD))
    )
    by_type = store.get_events_by_type("Account", tenant_id=TENANT_A)
    limited = list(store.read_all(ReadOptions(tenant_id=TENANT_B, limit=10)))

    assert {s.aggregate_id for s in forward} == a_accounts
    assert len(forward) == 4
    assert [s.global_position for s in backward] == [s.global_position for s in forward][::-1]
    assert {e.aggregate_id for e in by_type} == a_accounts
    assert {e.tenant_id for e in by_type} == {TENANT_A}
    assert {s.aggregate_id for s in limited} == {b_account}
    everything = {s.aggregate_id for s in store.read_all()}
    assert everything == a_accounts | {b_account, untenanted}


def test_a_tenant_filtered_stream_read_skips_another_tenants_events(store: EventStore) -> None:
    a_account = _open_account(_repo(store, TENANT_A), "ada")
    store.append_events(
        a_account,
        "Account",
        [
            MoneyDeposited(
                aggregate_id=a_account,
                aggregate_type="Account",
                aggregate_version=3,
                amount=Decimal("1"),
                tenant_id=TENANT_B,
            )
        ],
        2,
    )

    versions = [
        s.stream_position
        for s in store.read_stream(f"{a_account}:Account", ReadOptions(tenant_id=TENANT_A))
    ]

    assert versions == [1, 2]


def test_tenant_ids_must_be_uuids() -> None:
    with pytest.raises(InvalidEventError, match="tenant_id"):
        AggregateRepository(InMemoryEventStore(), Account, tenant_id="acme")  # type: ignore[arg-type]
