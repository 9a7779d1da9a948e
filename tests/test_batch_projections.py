"""Batch projections under the runner: whole pages, narrowing down to a poison event."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from django.db import connection
from django.test import override_settings

from django_eventsource import (
    BatchProjection,
    DjangoEventStore,
    DomainEvent,
    ExpectedVersion,
    StoredEvent,
)
from django_eventsource.models import Checkpoint, DeadLetter
from django_eventsource.projections.base import RetryPolicy
from django_eventsource.projections.batch import BatchHooks
from django_eventsource.projections.maintenance import reset_projection, retry_dead_letters
from django_eventsource.projections.narrowing import apply_batch_projection
from django_eventsource.projections.runner import run_projections
from tests.testapp import projections as test_projections
from tests.testapp.domain import AccountOpened, MoneyDeposited
from tests.testapp.models import AccountActivity, AccountSummary, HandledEvent
from tests.testapp.projections import (
    ACTIVITY,
    BATCH_ACTIVITY,
    BATCH_LEDGER,
    BATCH_TALLY,
    FOLD_ACTIVITY,
    TALLY,
    open_account,
)

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def batches(poison: set[Decimal]) -> None:
    """No poison amounts and no batches recorded yet."""
    test_projections.BatchLedgerProjection.batches = []


def append_accounts(store: DjangoEventStore, accounts: int, deposits: int) -> None:
    rng = random.Random(7)
    for _ in range(accounts):
        account_id = uuid4()
        events: list[DomainEvent] = [
            AccountOpened(
                aggregate_id=account_id, owner=f"o{rng.randint(1, 9)}", aggregate_version=1
            )
        ]
        events += [
            MoneyDeposited(
                aggregate_id=account_id,
                amount=Decimal(rng.randint(1, 500)),
                aggregate_version=version,
            )
            for version in range(2, deposits + 2)
        ]
        store.append_events(account_id, "Account", events, ExpectedVersion.NO_STREAM)


def read_model() -> dict[UUID, tuple[str, Decimal, int]]:
    return {
        row.account_id: (row.owner, row.balance, row.events_seen)
        for row in AccountSummary.objects.all()
    }


def handled_counts() -> Counter[UUID]:
    return Counter(HandledEvent.objects.values_list("event_id", flat=True))


def deposits(store: DjangoEventStore) -> list[StoredEvent]:
    return [s for s in store.read_all() if isinstance(s.event, MoneyDeposited)]


@pytest.mark.slow
def test_a_batch_projection_over_20000_events_ends_equal_to_the_per_event_one(
    store: DjangoEventStore,
) -> None:
    append_accounts(store, accounts=200, deposits=99)

    with override_settings(EVENTSOURCE_PROJECTIONS=[TALLY]):
        run_projections(once=True, batch_size=2000)
    per_event = read_model()
    AccountSummary.objects.all().delete()
    with override_settings(EVENTSOURCE_PROJECTIONS=[BATCH_TALLY]):
        summary = reset_projection("BatchTallyProjection", rebuild=True, batch_size=1500)

    assert summary.total_processed == 20_000
    assert len(per_event) == 200
    assert read_model() == per_event
    checkpoint = Checkpoint.objects.get(projection_name="BatchTallyProjection")
    assert checkpoint.position == store.get_global_position()


def activity() -> dict[UUID, tuple[int, Decimal, Any]]:
    return {r.account_id: (r.events, r.total, r.last_seen) for r in AccountActivity.objects.all()}


def test_the_fold_form_and_a_hand_written_batch_build_the_per_event_read_model(
    store: DjangoEventStore,
) -> None:
    append_accounts(store, accounts=30, deposits=20)
    results = []
    for path in (ACTIVITY, BATCH_ACTIVITY, FOLD_ACTIVITY):
        name = path.rsplit(".", 1)[1]
        with override_settings(EVENTSOURCE_PROJECTIONS=[path]):
            reset_projection(name, rebuild=True, batch_size=64)
        results.append(activity())

    assert len(results[0]) == 30
    assert results[1] == results[0]
    assert results[2] == results[0]


@override_settings(
    EVENTSOURCE_PROJECTIONS=[FOLD_ACTIVITY], EVENTSOURCE_MAX_RETRIES=1, EVENTSOURCE_RETRY_BACKOFF=0
)
def test_a_fold_projection_dead_letters_a_poison_event_and_parks_the_rest_of_its_sequence(
    store: DjangoEventStore, poison: set[Decimal]
) -> None:
    account = open_account(store, deposits=("1", "2", "3", "4"))
    other = open_account(store, deposits=("5",))
    poison.add(Decimal(3))

    run_projections(once=True)

    row = AccountActivity.objects.get(account_id=account)
    assert (row.events, row.total) == (3, Decimal(3))
    assert AccountActivity.objects.get(account_id=other).total == Decimal(5)
    assert DeadLetter.objects.get(parked=False).event_data["amount"] == "3"
    assert DeadLetter.objects.get(parked=True).event_data["amount"] == "4"


@override_settings(
    EVENTSOURCE_PROJECTIONS=[BATCH_LEDGER], EVENTSOURCE_MAX_RETRIES=2, EVENTSOURCE_RETRY_BACKOFF=0
)
def test_a_poison_event_mid_batch_is_dead_lettered_alone_and_the_rest_apply_exactly_once(
    store: DjangoEventStore, poison: set[Decimal]
) -> None:
    # One account per deposit, except the poison's, which has a later deposit too.
    for n in range(100, 200):
        open_account(store, deposits=("137", "901") if n == 137 else (str(n),))
    poison.add(Decimal(137))

    summary = run_projections(once=True, batch_size=500)

    letter = DeadLetter.objects.get(parked=False)
    assert letter.event_data["amount"] == "137"
    assert letter.retry_count == 2
    assert "ValueError: cannot book 137" in letter.error_message
    # The poison's later event waits behind it, as for every projection.
    assert DeadLetter.objects.get(parked=True).event_data["amount"] == "901"
    counts = handled_counts()
    applied = {s.event_id for s in deposits(store) if s.event.amount not in (137, 901)}  # type: ignore[attr-defined]
    assert len(applied) == 99
    assert set(counts) == applied
    assert set(counts.values()) == {1}
    assert summary.dead_lettered == 1
    checkpoint = Checkpoint.objects.get(projection_name="BatchLedgerProjection")
    assert checkpoint.position == store.get_global_position()
    # The whole page was tried (and retried) before it was narrowed down.
    assert test_projections.BatchLedgerProjection.batches[:2] == [101, 101]


@override_settings(
    EVENTSOURCE_PROJECTIONS=[BATCH_LEDGER], EVENTSOURCE_MAX_RETRIES=1, EVENTSOURCE_RETRY_BACKOFF=0
)
def test_two_poison_events_in_one_batch_are_each_dead_lettered_alone(
    store: DjangoEventStore, poison: set[Decimal]
) -> None:
    open_account(store, deposits=tuple(str(n) for n in range(1, 21)))
    open_account(store, deposits=tuple(str(n) for n in range(21, 41)))
    poison.update({Decimal(3), Decimal(38)})

    run_projections(once=True)

    heads = DeadLetter.objects.filter(parked=False)
    assert sorted(letter.event_data["amount"] for letter in heads) == ["3", "38"]
    assert DeadLetter.objects.filter(parked=True).count() == 17 + 2  # 4-20 and 39-40
    counts = handled_counts()
    assert len(counts) == 2 + 17  # 1-2 and 21-37
    assert set(counts.values()) == {1}


@override_settings(EVENTSOURCE_PROJECTIONS=[BATCH_LEDGER], EVENTSOURCE_RETRY_BACKOFF=0)
def test_a_batch_failing_once_is_retried_whole_and_nothing_is_dead_lettered(
    store: DjangoEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_account(store, deposits=("1", "2", "3", "4"))
    original = test_projections.BatchLedgerProjection.handle_batch
    failures = [RuntimeError("database hiccup")]

    def flaky(self: BatchProjection, events: list[DomainEvent]) -> None:
        original(self, events)  # type: ignore[arg-type]
        if failures:
            raise failures.pop()

    monkeypatch.setattr(test_projections.BatchLedgerProjection, "handle_batch", flaky)

    run_projections(once=True)

    assert test_projections.BatchLedgerProjection.batches == [4, 4]
    assert not DeadLetter.objects.exists()
    assert set(handled_counts().values()) == {1}
    assert len(handled_counts()) == 4


@override_settings(
    EVENTSOURCE_PROJECTIONS=[BATCH_LEDGER], EVENTSOURCE_MAX_RETRIES=1, EVENTSOURCE_RETRY_BACKOFF=0
)
def test_a_fixed_dead_letter_of_a_batch_projection_is_applied_by_retry_dead_letters(
    store: DjangoEventStore, poison: set[Decimal]
) -> None:
    open_account(store, deposits=("5", "6", "7"))
    poison.add(Decimal(6))
    run_projections(once=True)
    poison.clear()

    report = retry_dead_letters(projection="BatchLedgerProjection")

    assert report.resolved == 2  # the head and the event parked behind it
    assert len(handled_counts()) == 3
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {DeadLetter.Status.RESOLVED}


@override_settings(EVENTSOURCE_PROJECTIONS=[BATCH_LEDGER], EVENTSOURCE_REBUILD_BATCH_SIZE=7)
def test_a_rebuild_applies_pages_of_the_rebuild_batch_size(store: DjangoEventStore) -> None:
    open_account(store, deposits=tuple(str(n) for n in range(1, 20)))
    reached: list[tuple[int, int]] = []

    summary = reset_projection(
        "BatchLedgerProjection",
        rebuild=True,
        on_progress=lambda replayed, total: reached.append((replayed, total)),
    )

    # Pages of 7 positions; the opening event is not subscribed to.
    assert test_projections.BatchLedgerProjection.batches == [6, 7, 6]
    assert reached == [(7, 20), (14, 20), (20, 20)]
    assert summary.total_processed == 20
    assert len(handled_counts()) == 19


def test_narrowing_asks_admit_before_each_attempt_and_goes_left_half_first(
    store: DjangoEventStore, poison: set[Decimal]
) -> None:
    """The hooks: a key dead-lettered in the left half keeps its later events out of the right."""
    first, second = open_account(store), open_account(store)
    for version, (a, b) in enumerate([("1", "5"), ("66", "6"), ("3", "7"), ("4", "8")], start=2):
        for account, amount in ((first, a), (second, b)):
            event = MoneyDeposited(
                aggregate_id=account, amount=Decimal(amount), aggregate_version=version
            )
            store.append_events(account, "Account", [event], version - 1)
    events = deposits(store)
    poison.add(Decimal(66))
    blocked: set[UUID] = set()
    dead: list[StoredEvent] = []
    admitted_sizes: list[int] = []

    def admit(batch: list[StoredEvent]) -> list[StoredEvent]:
        admitted = [s for s in batch if s.aggregate_id not in blocked]
        admitted_sizes.append(len(admitted))
        return admitted

    def dead_lettered(stored: StoredEvent) -> None:
        dead.append(stored)
        blocked.add(stored.aggregate_id)

    recorded: list[StoredEvent] = []
    outcome = apply_batch_projection(
        test_projections.BatchLedgerProjection(),
        events,
        connection.alias,
        lambda stored, failure: recorded.append(stored),
        BatchHooks(admit=admit, dead_lettered=dead_lettered),
        RetryPolicy(max_attempts=1, base_delay=0),
    )

    amount_of = {s.event_id: s.event.amount for s in events}  # type: ignore[attr-defined]
    assert [amount_of[s.event_id] for s in dead] == [Decimal(66)]
    assert recorded == dead
    counts = handled_counts()
    assert sorted(amount_of[event_id] for event_id in counts) == [
        Decimal(n) for n in (1, 5, 6, 7, 8)
    ]
    assert set(counts.values()) == {1}
    assert (outcome.applied, outcome.dead_lettered) == (5, 1)
    # The page, its left half, the two left quarters, the poison and its neighbour
    # alone; then the right half without the events of the dead-lettered account.
    assert admitted_sizes == [8, 4, 2, 2, 1, 1, 2]


def start_runner(*args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "EVENTSOURCE_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "EVENTSOURCE_TEST_PROJECTIONS": BATCH_TALLY,
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_projections", "--verbosity", "0", *args],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def batch_tally_position() -> int:
    rows = Checkpoint.objects.filter(projection_name="BatchTallyProjection")
    return rows.values_list("position", flat=True).first() or 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_killing_a_batch_projection_runner_at_random_moments_loses_and_doubles_nothing(
    store: DjangoEventStore,
) -> None:
    append_accounts(store, accounts=200, deposits=99)
    total = store.get_global_position()
    first = total - 20_000 + 1
    kill_points = sorted(random.sample(range(first + 500, total - 500), 5))

    for target in kill_points:
        runner = start_runner("--poll-interval", "0.05", "--batch-size", "200")
        try:
            deadline = time.monotonic() + 120
            while batch_tally_position() < target:
                assert runner.poll() is None, runner.stderr.read().decode() if runner.stderr else ""
                assert time.monotonic() < deadline, f"runner stuck at {batch_tally_position()}"
                time.sleep(0.005)
        finally:
            runner.send_signal(signal.SIGKILL)
            runner.wait()
        assert runner.returncode == -signal.SIGKILL

    finisher = start_runner("--once", "--batch-size", "1000")
    _, stderr = finisher.communicate(timeout=120)
    assert finisher.returncode == 0, stderr.decode()

    assert batch_tally_position() == total
    expected: dict[UUID, tuple[Decimal, int]] = {}
    for stored in store.read_all():
        balance, seen = expected.get(stored.aggregate_id, (Decimal(0), 0))
        if isinstance(stored.event, MoneyDeposited):
            balance += stored.event.amount
        expected[stored.aggregate_id] = (balance, seen + 1)
    assert {key: value[1:] for key, value in read_model().items()} == expected


def test_a_stop_while_a_poison_event_waits_for_its_retry_cuts_the_page_before_it(
    store: DjangoEventStore, poison: set[Decimal]
) -> None:
    for amount in ("1", "2", "66", "4", "5"):
        open_account(store, deposits=(amount,))
    events = deposits(store)
    poison.add(Decimal(66))
    stop = threading.Event()

    def admit(batch: list[StoredEvent]) -> list[StoredEvent]:
        if len(batch) == 1 and batch[0].event.amount == 66:  # type: ignore[attr-defined]
            stop.set()  # requested while the poison is tried alone
        return batch

    recorded: list[StoredEvent] = []
    outcome = apply_batch_projection(
        test_projections.BatchLedgerProjection(),
        events,
        connection.alias,
        lambda stored, failure: recorded.append(stored),
        BatchHooks(admit=admit),
        RetryPolicy(max_attempts=3, base_delay=0.01),
        stop_event=stop,
    )

    assert outcome.stopped_at == events[2].global_position
    assert recorded == []
    assert set(handled_counts()) == {events[0].event_id, events[1].event_id}
