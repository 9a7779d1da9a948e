"""run_projections as real processes: killed with SIGKILL, or two at once.

The runners are ``manage.py run_projections`` subprocesses on the test database (its
name passed through ``EVENTSOURCE_TEST_DB_NAME``), running ``TallyProjection``, which
keeps a balance and an event count per account: a lost event or one counted twice shows
up as a difference from a replay of the store.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from django.db import connection

from django_eventsource import DjangoEventStore, DomainEvent, ExpectedVersion
from django_eventsource.models import Checkpoint
from tests.processes import runner_env, start_run_projections
from tests.testapp.domain import AccountOpened, MoneyDeposited
from tests.testapp.models import AccountSummary
from tests.testapp.projections import TALLY

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

NAME = "TallyProjection"


def start_runner(*args: str) -> subprocess.Popen[bytes]:
    return start_run_projections(runner_env(TALLY), *args)


def position() -> int:
    rows = Checkpoint.objects.filter(projection_name=NAME)
    return rows.values_list("position", flat=True).first() or 0


def wait_for_position(target: int, runner: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while position() < target:
        assert runner.poll() is None, runner.stderr.read().decode() if runner.stderr else ""
        if time.monotonic() > deadline:
            store = DjangoEventStore()
            pytest.fail(
                f"runner stuck at {position()} waiting for {target}; safe mark "
                f"{store.safe_high_water_mark()}, blockers {store.get_reader_blockers()}"
            )
        time.sleep(0.01)


def append_accounts(store: DjangoEventStore, accounts: int, deposits: int) -> dict[UUID, Decimal]:
    """Append ``accounts`` streams of one opening and ``deposits`` deposits; expected balances."""
    expected = {}
    for _ in range(accounts):
        account_id = uuid4()
        amounts = [Decimal(random.randint(1, 500)) for _ in range(deposits)]
        events: list[DomainEvent] = [
            AccountOpened(aggregate_id=account_id, owner="x", aggregate_version=1)
        ]
        events += [
            MoneyDeposited(aggregate_id=account_id, amount=amount, aggregate_version=version)
            for version, amount in enumerate(amounts, start=2)
        ]
        store.append_events(account_id, "Account", events, ExpectedVersion.NO_STREAM)
        expected[account_id] = sum(amounts, Decimal(0))
    return expected


def replay(store: DjangoEventStore) -> dict[UUID, tuple[Decimal, int]]:
    """Balance and event count per account, folded straight from the store."""
    state: dict[UUID, tuple[Decimal, int]] = {}
    for stored in store.read_all():
        event = stored.event
        balance, seen = state.get(event.aggregate_id, (Decimal(0), 0))
        if isinstance(event, MoneyDeposited):
            balance += event.amount
        state[event.aggregate_id] = (balance, seen + 1)
    return state


def assert_read_model_matches_replay(store: DjangoEventStore) -> None:
    read_model = {
        row.account_id: (row.balance, row.events_seen) for row in AccountSummary.objects.all()
    }
    assert read_model == replay(store)


def test_killing_the_runner_at_random_moments_loses_and_duplicates_nothing() -> None:
    store = DjangoEventStore()
    append_accounts(store, accounts=200, deposits=99)
    total = store.get_global_position()
    assert total >= 20_000
    kill_points = sorted(random.sample(range(500, total - 500), 5))

    for target in kill_points:
        runner = start_runner("--poll-interval", "0.05")
        try:
            wait_for_position(target, runner)
        finally:
            runner.send_signal(signal.SIGKILL)
            runner.wait()
        assert runner.returncode == -signal.SIGKILL

    finisher = start_runner("--once", "--batch-size", "1000")
    _, stderr = finisher.communicate(timeout=60)
    assert finisher.returncode == 0, stderr.decode()

    assert position() == total
    assert_read_model_matches_replay(store)


def test_two_runners_at_once_handle_every_event_exactly_once() -> None:
    store = DjangoEventStore()
    append_accounts(store, accounts=20, deposits=49)
    runners = [start_runner("--batch-size", "50", "--poll-interval", "0.02") for _ in range(2)]
    try:
        # More events while both run: whichever holds the projection must pick them up.
        append_accounts(store, accounts=20, deposits=49)
        wait_for_position(store.get_global_position(), runners[0])
        for runner in runners:
            runner.send_signal(signal.SIGTERM)
        for runner in runners:
            _, stderr = runner.communicate(timeout=30)
            assert runner.returncode == 0, stderr.decode()
    finally:
        for runner in runners:
            if runner.poll() is None:
                runner.kill()
                runner.wait()

    assert_read_model_matches_replay(store)


@pytest.mark.postgres
def test_the_runner_survives_its_database_connections_being_cut() -> None:
    store = DjangoEventStore()
    append_accounts(store, accounts=5, deposits=9)
    runner = start_runner("--poll-interval", "0.05")
    try:
        wait_for_position(store.get_global_position(), runner)
        with connection.cursor() as cursor:
            # What a database restart looks like from the runner: every session dropped.
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        append_accounts(store, accounts=5, deposits=9)
        wait_for_position(store.get_global_position(), runner)
        runner.send_signal(signal.SIGTERM)
        _, stderr = runner.communicate(timeout=30)
        assert runner.returncode == 0, stderr.decode()
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()

    assert_read_model_matches_replay(store)
