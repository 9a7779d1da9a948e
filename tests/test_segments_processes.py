"""Segmented projections run by several ``run_projections`` processes at once.

The runners are ``manage.py run_projections`` subprocesses on the test database running
``SegmentedTally`` (four units). Its handlers check each account's order, so an event
lost, repeated or handled out of order shows up as a dead letter or a difference from a
replay of the store.

SQLite lets one transaction write at a time, so there a runner hung inside a batch holds
up the others: the tests that need two runners inside batches at once are PostgreSQL's.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection

from django_eventsource import DjangoEventStore
from django_eventsource.models import Checkpoint, DeadLetter, EventRecord
from tests.processes import runner_env, start_run_projections
from tests.test_segments import append_accounts, assert_exact
from tests.testapp.segmented import SEGMENTED

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def start_runner(*args: str, gate: Path | None = None) -> subprocess.Popen[bytes]:
    env = runner_env(SEGMENTED)
    env.pop("EVENTSOURCE_TEST_GATE", None)
    if gate is not None:
        env["EVENTSOURCE_TEST_GATE"] = str(gate)
    return start_run_projections(env, *args)


def handled() -> int:
    """Events handled by all units together (their checkpoints' counts)."""
    rows = Checkpoint.objects.filter(projection_name__startswith="SegmentedTally#")
    return sum(rows.values_list("events_processed", flat=True))


def wait_until(
    condition: Callable[[], bool], runners: list[subprocess.Popen[bytes]], timeout: float
) -> float:
    """Poll ``condition`` until true; the seconds it took. Fails on timeout or a dead runner."""
    start = time.monotonic()
    while not condition():
        for runner in runners:
            assert runner.poll() is None, runner.stderr.read().decode() if runner.stderr else ""
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met after {timeout} s; handled {handled()}")
        time.sleep(0.01)
    return time.monotonic() - start


def stop(runners: list[subprocess.Popen[bytes]]) -> None:
    for runner in runners:
        if runner.poll() is None:
            runner.send_signal(signal.SIGTERM)
    for runner in runners:
        try:
            _, stderr = runner.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.wait()
            raise
        assert runner.returncode in (0, -signal.SIGKILL), stderr.decode()


@pytest.mark.postgres
def test_two_runners_work_on_different_units_at_once_and_the_read_model_is_exact(
    tmp_path: Path,
) -> None:
    store = DjangoEventStore()
    append_accounts(store, accounts=40, deposits=4)
    total = EventRecord.objects.count()
    gate = tmp_path / "gate"
    runners = [start_runner("--poll-interval", "0.05", gate=gate) for _ in range(2)]
    try:
        # Each runner stops inside its first handler until the gate opens: two runners
        # inside a handler of the projection at once means they hold two different units.
        wait_until(lambda: len(list(tmp_path.glob("gate.*"))) == 2, runners, timeout=60)
        gate.touch()
        wait_until(lambda: handled() >= total, runners, timeout=120)
    finally:
        gate.touch()
        stop(runners)

    assert handled() == total
    assert_exact(store)


def test_the_units_of_a_killed_runner_are_taken_over_by_another(tmp_path: Path) -> None:
    store = DjangoEventStore()
    append_accounts(store, accounts=40, deposits=4)
    total = EventRecord.objects.count()
    gate = tmp_path / "gate"
    # The first runner takes a unit and hangs in its first handler, holding the unit.
    doomed = start_runner("--poll-interval", "0.05", gate=gate)
    survivor: subprocess.Popen[bytes] | None = None
    try:
        wait_until(lambda: any(tmp_path.glob("gate.*")), [doomed], timeout=60)
        survivor = start_runner("--poll-interval", "0.05")
        if connection.vendor == "postgresql":
            # The survivor does the other units, never the one the hung runner holds.
            wait_until(lambda: handled() > 0, [survivor], timeout=60)
            assert handled() < total
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        took = wait_until(lambda: handled() >= total, [survivor], timeout=30)
    finally:
        gate.touch()
        stop([doomed, *([survivor] if survivor else [])])

    print(f"takeover and catch-up of the killed runner's unit: {took:.2f} s")
    assert handled() == total
    assert not DeadLetter.objects.exists()
    assert_exact(store)
