"""``AggregateRepository`` over ``DjangoEventStore``: one transaction per save."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction

from django_eventsource import (
    AggregateNotFoundError,
    AggregateRepository,
    DjangoSnapshotStore,
    DomainEvent,
    OptimisticLockError,
)
from django_eventsource.models import EventRecord, OutboxMessage, Snapshot
from django_eventsource.stores.django import DjangoEventStore
from tests.testapp.domain import Account

# Runs the SQL the app writes itself (again with server-side binding in CI).
pytestmark = pytest.mark.own_sql

CaptureCallbacks = Callable[..., AbstractContextManager[list[Callable[[], Any]]]]


class RecordingPublisher:
    """Records what it was asked to publish, and whether a transaction was open then."""

    def __init__(self) -> None:
        self.published: list[list[DomainEvent]] = []
        self.in_transaction: list[bool] = []

    def publish(self, events: list[DomainEvent]) -> None:
        self.in_transaction.append(transaction.get_connection().in_atomic_block)
        self.published.append(list(events))


def opened_account(repo: AggregateRepository[Account], balance: str = "10") -> Account:
    account = repo.create_new(uuid4())
    account.open("ada", Decimal(balance))
    return account


@pytest.mark.django_db
def test_saved_aggregate_loads_back_with_its_state() -> None:
    repo = AggregateRepository(DjangoEventStore(), Account)
    account = opened_account(repo)
    account.deposit(Decimal("5"))
    repo.save(account)

    loaded = repo.load(account.aggregate_id)

    assert (loaded.version, loaded.state.balance) == (2, Decimal("15"))
    assert repo.exists(account.aggregate_id)
    with pytest.raises(AggregateNotFoundError):
        repo.load(uuid4())


@pytest.mark.django_db
def test_a_stale_copy_cannot_overwrite_a_newer_save() -> None:
    repo = AggregateRepository(DjangoEventStore(), Account)
    account = opened_account(repo)
    repo.save(account)
    first, second = repo.load(account.aggregate_id), repo.load(account.aggregate_id)
    first.deposit(Decimal("1"))
    repo.save(first)

    second.withdraw(Decimal("10"))
    with pytest.raises(OptimisticLockError):
        repo.save(second)

    assert repo.load(account.aggregate_id).state.balance == Decimal("11")


@pytest.mark.django_db
def test_publisher_runs_only_when_the_callers_transaction_commits(
    django_capture_on_commit_callbacks: CaptureCallbacks,
) -> None:
    publisher = RecordingPublisher()
    repo = AggregateRepository(DjangoEventStore(), Account, event_publisher=publisher)
    account = opened_account(repo)

    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        repo.save(account)
        assert publisher.published == []

    assert len(callbacks) == 1
    assert [e.event_type for e in publisher.published[0]] == ["AccountOpened"]


@pytest.mark.django_db(transaction=True)
def test_rolling_back_the_outer_transaction_stores_and_publishes_nothing() -> None:
    publisher = RecordingPublisher()
    store = DjangoEventStore(outbox_enabled=True)
    repo = AggregateRepository(
        store,
        Account,
        event_publisher=publisher,
        snapshot_store=DjangoSnapshotStore(),
        snapshot_every=1,
    )
    account = opened_account(repo)

    with pytest.raises(RuntimeError), transaction.atomic():
        repo.save(account)
        raise RuntimeError("the view failed after saving")

    assert EventRecord.objects.count() == 0
    assert OutboxMessage.objects.count() == 0
    assert Snapshot.objects.count() == 0
    assert publisher.published == []
    assert not repo.exists(account.aggregate_id)


@pytest.mark.django_db(transaction=True)
def test_events_outbox_and_snapshot_commit_together_then_publish() -> None:
    publisher = RecordingPublisher()
    repo = AggregateRepository(
        DjangoEventStore(outbox_enabled=True),
        Account,
        event_publisher=publisher,
        snapshot_store=DjangoSnapshotStore(),
        snapshot_every=2,
    )
    account = opened_account(repo)
    account.deposit(Decimal("1"))

    with transaction.atomic():
        repo.save(account)
        assert publisher.published == []

    assert EventRecord.objects.count() == 2
    assert OutboxMessage.objects.count() == 2
    assert Snapshot.objects.get().version == 2
    assert publisher.in_transaction == [False]
    assert len(publisher.published[0]) == 2


@pytest.mark.django_db(transaction=True)
def test_a_conflicting_save_inside_an_outer_transaction_leaves_it_usable() -> None:
    repo = AggregateRepository(DjangoEventStore(), Account)
    account = opened_account(repo)
    repo.save(account)
    stale = repo.load(account.aggregate_id)
    fresh = repo.load(account.aggregate_id)
    fresh.deposit(Decimal("2"))
    repo.save(fresh)
    other = opened_account(repo, "3")

    with transaction.atomic():
        stale.deposit(Decimal("1"))
        with pytest.raises(OptimisticLockError):
            repo.save(stale)
        repo.save(other)

    assert repo.load(other.aggregate_id).state.balance == Decimal("3")
    assert repo.load(account.aggregate_id).state.balance == Decimal("12")


@pytest.mark.django_db
def test_async_save_and_load_run_the_whole_unit_of_work() -> None:
    repo = AggregateRepository(DjangoEventStore(), Account)
    account = opened_account(repo)

    async def scenario() -> Decimal:
        await repo.asave(account)
        loaded = await repo.aload(account.aggregate_id)
        loaded.deposit(Decimal("1"))
        await repo.asave(loaded)
        return (await repo.aload(account.aggregate_id)).state.balance

    assert async_to_sync(scenario)() == Decimal("11")
