"""Snapshots: loads read only the events after the latest usable snapshot, and a snapshot
commits with the events of the save that took it."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from django.db import close_old_connections, transaction

from django_eventsource import (
    AggregateRepository,
    DjangoEventStore,
    DjangoSnapshotStore,
    EventStore,
    EventStream,
    InMemoryEventStore,
    InMemorySnapshotStore,
    OptimisticLockError,
)
from django_eventsource.aggregates.snapshots import SnapshotData, SnapshotStore
from django_eventsource.models import Snapshot
from tests.testapp.domain import Account

# Runs the SQL the app writes itself (again with server-side binding in CI).
pytestmark = pytest.mark.own_sql


class CountingMemoryStore(InMemoryEventStore):
    """Counts the events handed out by ``get_events`` (what ``load`` reads)."""

    events_read = 0

    def get_events(self, *args: Any, **kwargs: Any) -> EventStream:
        stream = super().get_events(*args, **kwargs)
        self.events_read += len(stream.events)
        return stream


class CountingDjangoStore(DjangoEventStore):
    """Counts the rows returned by the ``get_events`` query (one row per event)."""

    events_read = 0

    def get_events(self, *args: Any, **kwargs: Any) -> EventStream:
        stream = super().get_events(*args, **kwargs)
        self.events_read += len(stream.events)
        return stream


CountingStore = CountingMemoryStore | CountingDjangoStore


class AccountWithNewStateSchema(Account):
    """The same aggregate after a change to its state that bumped ``schema_version``."""

    schema_version = 2


@pytest.fixture(params=["memory", pytest.param("django", marks=pytest.mark.django_db)])
def stores(request: pytest.FixtureRequest) -> tuple[CountingStore, SnapshotStore]:
    if request.param == "memory":
        return CountingMemoryStore(), InMemorySnapshotStore()
    return CountingDjangoStore(), DjangoSnapshotStore()


def _repository(
    event_store: EventStore,
    snapshot_store: SnapshotStore | None,
    snapshot_every: int | None = 100,
    factory: type[Account] = Account,
) -> AggregateRepository[Account]:
    return AggregateRepository(
        event_store,
        factory,
        snapshot_store=snapshot_store,
        snapshot_every=snapshot_every if snapshot_store is not None else None,
    )


def _save_deposits(
    repo: AggregateRepository[Account], account: Account, count: int, batch: int
) -> None:
    """Append ``count`` one-unit deposits, ``batch`` events per save."""
    while count:
        size = min(batch, count)
        for _ in range(size):
            account.deposit(Decimal("1"))
        repo.save(account)
        count -= size


def _opened(repo: AggregateRepository[Account]) -> Account:
    account = repo.create_new(uuid4())
    account.open("ada")
    repo.save(account)
    return account


def test_loading_ten_thousand_events_reads_only_the_events_after_the_last_snapshot(
    stores: tuple[CountingStore, SnapshotStore],
) -> None:
    event_store, snapshot_store = stores
    repo = _repository(event_store, snapshot_store)
    account = _opened(repo)
    # 10,000 events in saves of 1,000 that each cross a multiple of 100 (snapshot at 10,000),
    # then the worst case: 99 more events in a save that crosses none.
    _save_deposits(repo, account, 9_999, batch=1_000)
    _save_deposits(repo, account, 99, batch=99)
    assert account.version == 10_099

    event_store.events_read = 0
    loaded = repo.load(account.aggregate_id)

    assert event_store.events_read == 99
    assert loaded.version == 10_099
    assert loaded.state.balance == Decimal("10098")
    snapshot = snapshot_store.get_snapshot(account.aggregate_id, "Account")
    assert snapshot is not None and snapshot.version == 10_000


def test_loading_without_a_snapshot_store_replays_every_event_to_the_same_state(
    stores: tuple[CountingStore, SnapshotStore],
) -> None:
    event_store, snapshot_store = stores
    account = _opened(_repository(event_store, snapshot_store))
    _save_deposits(_repository(event_store, snapshot_store), account, 250, batch=50)

    plain = _repository(event_store, None)
    event_store.events_read = 0
    loaded = plain.load(account.aggregate_id)

    assert event_store.events_read == 251
    assert loaded.state == _repository(event_store, snapshot_store).load(account.aggregate_id).state


def test_a_snapshot_is_taken_only_when_a_save_crosses_a_multiple_of_snapshot_every(
    stores: tuple[CountingStore, SnapshotStore],
) -> None:
    event_store, snapshot_store = stores
    repo = _repository(event_store, snapshot_store, snapshot_every=10)
    account = _opened(repo)
    _save_deposits(repo, account, 8, batch=4)  # versions 1 -> 9
    assert snapshot_store.get_snapshot(account.aggregate_id, "Account") is None

    _save_deposits(repo, account, 3, batch=3)  # 9 -> 12 crosses 10

    snapshot = snapshot_store.get_snapshot(account.aggregate_id, "Account")
    assert snapshot is not None
    assert (snapshot.version, snapshot.schema_version) == (12, 1)
    assert snapshot.state["balance"] == "11"


def test_a_snapshot_taken_under_another_schema_version_is_ignored(
    stores: tuple[CountingStore, SnapshotStore],
) -> None:
    event_store, snapshot_store = stores
    account = _opened(_repository(event_store, snapshot_store))
    _save_deposits(_repository(event_store, snapshot_store), account, 150, batch=150)

    evolved = _repository(event_store, snapshot_store, factory=AccountWithNewStateSchema)
    event_store.events_read = 0
    loaded = evolved.load(account.aggregate_id)

    assert event_store.events_read == 151
    assert loaded.version == 151
    assert loaded.state.balance == Decimal("150")


def test_a_snapshot_whose_state_no_longer_validates_is_ignored(
    stores: tuple[CountingStore, SnapshotStore],
) -> None:
    event_store, snapshot_store = stores
    repo = _repository(event_store, snapshot_store)
    account = _opened(repo)
    _save_deposits(repo, account, 120, batch=120)
    snapshot_store.delete_snapshots(account.aggregate_id, "Account")
    snapshot_store.save_snapshot(
        SnapshotData(
            aggregate_id=account.aggregate_id,
            aggregate_type="Account",
            version=121,
            schema_version=1,
            state={"account_id": str(account.aggregate_id), "balance": "a lot"},
        )
    )

    event_store.events_read = 0
    loaded = repo.load(account.aggregate_id)

    assert event_store.events_read == 121
    assert loaded.state.balance == Decimal("120")
    assert loaded.version == 121


def test_a_stored_snapshot_is_never_replaced_by_an_older_one(
    stores: tuple[CountingStore, SnapshotStore],
) -> None:
    _, snapshot_store = stores
    aggregate_id = uuid4()

    def snapshot(version: int) -> SnapshotData:
        return SnapshotData(aggregate_id, "Account", version, 1, {"v": version})

    snapshot_store.save_snapshot(snapshot(200))
    snapshot_store.save_snapshot(snapshot(100))
    snapshot_store.save_snapshot(snapshot(300))
    snapshot_store.save_snapshot(snapshot(250))

    stored = snapshot_store.get_snapshot(aggregate_id, "Account")
    assert stored is not None and stored.state == {"v": 300}


def test_async_load_uses_the_snapshot_too(
    stores: tuple[CountingStore, SnapshotStore],
) -> None:
    from asgiref.sync import async_to_sync

    event_store, snapshot_store = stores
    repo = _repository(event_store, snapshot_store)
    account = _opened(repo)
    _save_deposits(repo, account, 130, batch=130)

    event_store.events_read = 0
    loaded = async_to_sync(repo.aload)(account.aggregate_id)

    assert event_store.events_read == 0
    assert loaded.state.balance == Decimal("130")


class AccountWithUnserializableState(Account):
    def snapshot_state(self) -> dict[str, Any]:
        raise TypeError("Decimal is not JSON serializable")


def test_a_state_that_cannot_be_snapshotted_does_not_fail_the_save(
    stores: tuple[CountingStore, SnapshotStore],
) -> None:
    event_store, snapshot_store = stores
    repo = _repository(event_store, snapshot_store, 1, factory=AccountWithUnserializableState)
    account = repo.create_new(uuid4())
    account.open("ada")

    repo.save(account)

    assert snapshot_store.get_snapshot(account.aggregate_id, "Account") is None
    assert repo.load(account.aggregate_id).state.owner == "ada"


@pytest.mark.django_db
def test_rolling_back_the_callers_transaction_leaves_no_snapshot() -> None:
    repo = _repository(DjangoEventStore(), DjangoSnapshotStore(), snapshot_every=5)
    account = repo.create_new(uuid4())
    account.open("ada")
    for _ in range(5):
        account.deposit(Decimal("1"))

    with pytest.raises(RuntimeError), transaction.atomic():
        repo.save(account)
        assert Snapshot.objects.filter(aggregate_id=account.aggregate_id).exists()
        raise RuntimeError("the view failed after saving")

    assert not Snapshot.objects.filter(aggregate_id=account.aggregate_id).exists()
    assert not repo.exists(account.aggregate_id)


@pytest.mark.django_db
def test_a_failing_snapshot_write_does_not_fail_the_save(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.db import DatabaseError

    def broken(self: DjangoSnapshotStore, db: str, snapshot: SnapshotData) -> None:
        Snapshot.objects.using(db).create(
            aggregate_type=snapshot.aggregate_type,
            aggregate_id=snapshot.aggregate_id,
            version=snapshot.version,
            state={},
            created_at=snapshot.created_at,
        )
        raise DatabaseError("could not serialize access")

    monkeypatch.setattr(DjangoSnapshotStore, "_write", broken)
    repo = _repository(DjangoEventStore(), DjangoSnapshotStore(), snapshot_every=1)
    account = repo.create_new(uuid4())
    account.open("ada")

    with transaction.atomic():
        repo.save(account)

    assert repo.load(account.aggregate_id).state.owner == "ada"
    assert not Snapshot.objects.filter(aggregate_id=account.aggregate_id).exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_saves_that_all_snapshot_keep_events_and_snapshot_consistent() -> None:
    aggregate_id = uuid4()
    seed = _repository(DjangoEventStore(), DjangoSnapshotStore(), snapshot_every=1)
    account = seed.create_new(aggregate_id)
    account.open("ada")
    seed.save(account)

    workers, deposits_each = 4, 8
    barrier = threading.Barrier(workers)
    saved: list[int] = []
    errors: list[BaseException] = []

    def deposit_repeatedly() -> None:
        repo = _repository(DjangoEventStore(), DjangoSnapshotStore(), snapshot_every=1)
        try:
            barrier.wait(timeout=10)
            done = 0
            while done < deposits_each:
                current = repo.load(aggregate_id)
                current.deposit(Decimal("1"))
                try:
                    repo.save(current)
                except OptimisticLockError:
                    continue
                saved.append(current.version)
                done += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=deposit_repeatedly) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors
    assert sorted(saved) == list(range(2, 2 + workers * deposits_each))
    snapshot = DjangoSnapshotStore().get_snapshot(aggregate_id, "Account")
    assert snapshot is not None and snapshot.version == 1 + workers * deposits_each
    replayed = _repository(DjangoEventStore(), None).load(aggregate_id)
    assert seed.load(aggregate_id).state == replayed.state
    assert replayed.state.balance == Decimal(workers * deposits_each)


def test_snapshot_every_needs_a_snapshot_store() -> None:
    with pytest.raises(ValueError, match="snapshot_store"):
        AggregateRepository(InMemoryEventStore(), Account, snapshot_every=10)
