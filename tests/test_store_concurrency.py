"""Concurrent writers and catch-up readers on ``DjangoEventStore`` (real commits)."""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from django.db import OperationalError, connections, transaction
from django.test import override_settings

from django_eventsource import (
    AggregateRepository,
    DomainEvent,
    OptimisticLockError,
    ReadOptions,
)
from django_eventsource.stores import _sqlite
from django_eventsource.stores.django import DjangoEventStore
from tests.testapp.domain import Account, AccountOpened, MoneyDeposited

# Runs the SQL the app writes itself (again with server-side binding in CI).
pytestmark = pytest.mark.own_sql

WAIT = 10.0  # seconds any synchronization may take before the test fails


class Rollback(Exception):
    """Raised inside a transaction to roll it back on purpose."""


def opened(account: UUID) -> AccountOpened:
    return AccountOpened(aggregate_id=account, owner="ada")


def deposit(account: UUID, version: int) -> MoneyDeposited:
    return MoneyDeposited(aggregate_id=account, amount=Decimal(1), aggregate_version=version)


class OpenAppend(threading.Thread):
    """Appends in its own connection and keeps the transaction open until told to finish."""

    def __init__(self, store: DjangoEventStore, event: DomainEvent, *, commit: bool) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.event = event
        self.commit = commit
        self.appended = threading.Event()
        self.finish = threading.Event()
        self.position = 0

    def run(self) -> None:
        try:
            with transaction.atomic():
                result = self.store.append_events(
                    self.event.aggregate_id, self.event.aggregate_type, [self.event], -1
                )
                self.position = result.global_position
                self.appended.set()
                assert self.finish.wait(WAIT)
                if not self.commit:
                    raise Rollback
        except Rollback:
            pass
        finally:
            connections.close_all()

    def end(self) -> None:
        self.finish.set()
        if self.is_alive():
            self.join(WAIT)
        assert not self.is_alive()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_twelve_threads_saving_one_aggregate_get_one_winner_per_version() -> None:
    store = DjangoEventStore()
    repo = AggregateRepository(store, Account)
    account = repo.create_new(uuid4())
    account.open("ada")
    repo.save(account)
    threads, rounds = 12, 3
    loaded = threading.Barrier(threads)
    outcomes: list[tuple[int, str]] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            for round_no in range(rounds):
                mine = repo.load(account.aggregate_id)
                loaded.wait(WAIT)
                mine.deposit(Decimal(1))
                try:
                    repo.save(mine)
                    outcome = "won"
                except OptimisticLockError:
                    outcome = "lost"
                with lock:
                    outcomes.append((round_no, outcome))
                loaded.wait(WAIT)
        finally:
            connections.close_all()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)

    wins = Counter(round_no for round_no, outcome in outcomes if outcome == "won")
    assert len(outcomes) == threads * rounds
    assert wins == {0: 1, 1: 1, 2: 1}
    stream = store.get_events(account.aggregate_id, "Account")
    assert [e.aggregate_version for e in stream.events] == [1, 2, 3, 4]
    assert repo.load(account.aggregate_id).state.balance == Decimal(3)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_no", range(3))
def test_tailing_reader_sees_every_committed_event_once_in_order(round_no: int) -> None:
    store = DjangoEventStore()
    rng = random.Random(round_no)
    accounts = [uuid4() for _ in range(6)]
    for account in accounts:
        store.append_events(account, "Account", [opened(account)], 0)
    committed: list[UUID] = []
    committed_lock = threading.Lock()
    writers_done = threading.Event()
    seen: list[tuple[int, UUID, UUID, int]] = []
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        local = random.Random(seed)
        try:
            for _ in range(25):
                account = local.choice(accounts)
                try:
                    with transaction.atomic():
                        version = store.get_stream_version(account, "Account")
                        count = local.randint(1, 2)
                        events = [deposit(account, version + i) for i in range(1, count + 1)]
                        store.append_events(account, "Account", events, version)
                        # Work between the insert and the commit widens the race window.
                        threading.Event().wait(local.uniform(0.001, 0.006))
                        if local.random() < 0.2:
                            raise Rollback
                except (Rollback, OptimisticLockError):
                    continue
                with committed_lock:
                    committed.extend(e.event_id for e in events)
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    def reader() -> None:
        position = 0
        try:
            while True:
                finished = writers_done.is_set()
                for stored in store.read_all(ReadOptions(from_position=position)):
                    seen.append(
                        (
                            stored.global_position,
                            stored.event_id,
                            stored.aggregate_id,
                            stored.stream_position,
                        )
                    )
                    position = stored.global_position
                if finished:
                    return
                writers_done.wait(0.002)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    tail = threading.Thread(target=reader)
    tail.start()
    pool = [threading.Thread(target=writer, args=(rng.random(),)) for _ in range(8)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    writers_done.set()
    tail.join(60)

    assert not errors
    assert not tail.is_alive()
    expected = set(committed) | {
        e.event_id for a in accounts for e in store.get_events(a, "Account").events[:1]
    }
    counts = Counter(event_id for _, event_id, _, _ in seen)
    assert set(counts) == expected
    assert max(counts.values()) == 1
    positions = [p for p, _, _, _ in seen]
    assert positions == sorted(positions)
    versions: dict[UUID, list[int]] = defaultdict(list)
    for _, _, account, version in seen:
        versions[account].append(version)
    for account in accounts:
        assert versions[account] == list(range(1, len(versions[account]) + 1))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_open_transaction_holds_readers_below_its_position_only_while_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = DjangoEventStore()
    slow_account, fast_account = uuid4(), uuid4()
    slow = OpenAppend(store, opened(slow_account), commit=True)
    slow.start()
    assert slow.appended.wait(WAIT)
    fast = store.append_events(fast_account, "Account", [opened(fast_account)], 0)

    try:
        with (
            override_settings(EVENTSOURCE_HELD_BACK_WARNING_SECONDS=0),
            caplog.at_level(logging.WARNING, logger="django_eventsource"),
        ):
            held_mark = store.safe_high_water_mark()
            held_read = [s.aggregate_id for s in store.read_all()]
            blockers = store.get_reader_blockers()
    finally:
        slow.end()

    assert fast.global_position > slow.position
    assert held_mark < slow.position
    assert held_read == []
    assert [b.pid for b in blockers] and blockers[0].state == "idle in transaction"
    assert "held back" in caplog.text
    assert store.safe_high_water_mark() == fast.global_position
    assert [s.aggregate_id for s in store.read_all()] == [slow_account, fast_account]
    assert store.get_reader_blockers() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_aborted_transactions_gap_stops_holding_readers_once_it_is_gone() -> None:
    store = DjangoEventStore()
    aborted = OpenAppend(store, opened(uuid4()), commit=False)
    aborted.start()
    assert aborted.appended.wait(WAIT)
    committed_account = uuid4()
    committed = store.append_events(committed_account, "Account", [opened(committed_account)], 0)
    later = OpenAppend(store, opened(uuid4()), commit=True)
    try:
        mark_while_aborted_open = store.safe_high_water_mark()
        # A later writer stays open while the aborted one goes away.
        later.start()
        assert later.appended.wait(WAIT)
        aborted.end()
        mark_while_later_open = store.safe_high_water_mark()
        read_while_later_open = [s.aggregate_id for s in store.read_all()]
    finally:
        aborted.end()
        later.end()

    assert mark_while_aborted_open < aborted.position

    assert mark_while_later_open == committed.global_position
    assert read_while_later_open == [committed_account]
    assert store.safe_high_water_mark() == later.position


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_reading_up_to_an_open_transaction_walks_the_gap_scan_window_in_steps() -> None:
    store = DjangoEventStore()
    store.gap_scan_window = 2
    store.chunk_size = 2
    account = uuid4()
    events = [opened(account), *(deposit(account, v) for v in range(2, 6))]
    last = store.append_events(account, "Account", events, 0).global_position
    slow = OpenAppend(store, opened(uuid4()), commit=True)
    slow.start()
    try:
        assert slow.appended.wait(WAIT)
        after_slow = uuid4()
        store.append_events(after_slow, "Account", [opened(after_slow)], 0)
        read = [s.global_position for s in store.read_all(ReadOptions(from_position=last - 5))]
    finally:
        slow.end()

    assert read == list(range(last - 4, last + 1))


# -- SQLite: appends that find the database locked ---------------------------------------


@pytest.fixture
def sqlite_lock_holder() -> Iterator[sqlite3.Connection]:
    """A second connection holding SQLite's write lock; the store's waits only 50 ms for it."""
    conn = connections["default"]
    if conn.vendor != "sqlite":
        pytest.skip("SQLite's single writer lock")
    conn.ensure_connection()
    with conn.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout = 50")
    holder = sqlite3.connect(conn.settings_dict["NAME"], isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield holder
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
        conn.close()  # the next test connects with the configured timeout again


@pytest.mark.django_db(transaction=True)
def test_an_append_outlasting_the_busy_timeout_is_retried_until_the_lock_is_free(
    sqlite_lock_holder: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []

    def other_writer_commits_while_we_wait(seconds: float) -> None:
        waits.append(seconds)
        sqlite_lock_holder.execute("COMMIT")

    monkeypatch.setattr(_sqlite, "sleep", other_writer_commits_while_we_wait)
    store = DjangoEventStore()
    account = uuid4()

    result = store.append_events(account, "Account", [opened(account)], 0)

    assert (result.success, result.new_version) == (True, 1)
    assert len(waits) == 1
    assert store.get_stream_version(account, "Account") == 1


@pytest.mark.django_db(transaction=True)
def test_a_locked_append_gives_up_once_its_retry_time_is_spent(
    sqlite_lock_holder: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlite, "sleep", lambda seconds: None)
    store = DjangoEventStore()
    store.sqlite_lock_retry_seconds = 0.2
    account = uuid4()

    with pytest.raises(OperationalError, match="database is locked"):
        store.append_events(account, "Account", [opened(account)], 0)

    sqlite_lock_holder.execute("ROLLBACK")
    assert store.get_stream_version(account, "Account") == 0


@pytest.mark.django_db(transaction=True)
def test_a_locked_append_is_retried_only_when_it_owns_the_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts: list[UUID] = []

    def locked(self: DjangoEventStore, alias: str, agg_id: UUID, *args: object) -> None:
        attempts.append(agg_id)
        raise OperationalError("database is locked")

    monkeypatch.setattr(DjangoEventStore, "_append", locked)
    monkeypatch.setattr(_sqlite, "sleep", lambda seconds: None)
    store = DjangoEventStore()
    store.sqlite_lock_retry_seconds = 0.05
    inside, alone = uuid4(), uuid4()

    with pytest.raises(OperationalError), transaction.atomic():
        store.append_events(inside, "Account", [opened(inside)], 0)
    with pytest.raises(OperationalError):
        store.append_events(alone, "Account", [opened(alone)], 0)

    assert attempts.count(inside) == 1  # the caller's transaction is the caller's to retry
    on_sqlite = connections["default"].vendor == "sqlite"
    assert (attempts.count(alone) > 1) is on_sqlite
