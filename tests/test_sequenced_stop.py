"""SIGTERM in the middle of a batch: the runner exits within about a second, losing nothing.

The runner is a ``manage.py run_projections`` subprocess on the test database, running
``SlowJournal``, which takes a second per event and tells through a file how many events
it handled, so the signal is sent while a long batch is in progress.
"""

from __future__ import annotations

import signal
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import pytest

from django_eventsource import DjangoEventStore, DomainEvent, ExpectedVersion
from django_eventsource.models import Checkpoint
from tests.processes import runner_env, start_run_projections
from tests.testapp.domain import AccountOpened, MoneyDeposited
from tests.testapp.models import HandledEvent
from tests.testapp.sequenced import SLOW

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

#: From SIGTERM to exit: the event being handled (1 s), the commit and the exit. Measured
#: at 1.1-1.5 s; the bound leaves room for a loaded machine, and without a prompt stop the
#: batch would take another 28 s. The exact check is the count: at most the one event
#: in flight is handled after the signal.
STOP_WITHIN_SECONDS = 3.0


def start_runner(marker: Path, sleep: float, *args: str) -> subprocess.Popen[bytes]:
    env = runner_env(SLOW, SEQUENCED_SLEEP=str(sleep), SEQUENCED_MARKER=str(marker))
    return start_run_projections(env, *args)


def wait_for_marker(marker: Path, runner: subprocess.Popen[bytes], at_least: int) -> None:
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text() and int(marker.read_text()) >= at_least):
        assert runner.poll() is None, runner.stderr.read().decode() if runner.stderr else ""
        assert time.monotonic() < deadline, "the runner never reached the batch"
        time.sleep(0.02)


def test_sigterm_mid_batch_stops_within_two_seconds_and_a_restart_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    store = DjangoEventStore()
    account = uuid4()
    events: list[DomainEvent] = [
        AccountOpened(aggregate_id=account, owner="x", aggregate_version=1)
    ]
    events += [
        MoneyDeposited(aggregate_id=account, amount=Decimal(1), aggregate_version=version)
        for version in range(2, 32)
    ]
    store.append_events(account, "Account", events, ExpectedVersion.NO_STREAM)
    deposits = {s.event_id for s in store.read_all() if isinstance(s.event, MoneyDeposited)}
    marker = tmp_path / "handled"

    # One batch of all 31 events: without a prompt stop it would take 30 s.
    runner = start_runner(marker, 1.0, "--once", "--batch-size", "100")
    try:
        wait_for_marker(marker, runner, at_least=2)
        handled_at_signal = int(marker.read_text())
        signalled = time.monotonic()
        runner.send_signal(signal.SIGTERM)
        _, stderr = runner.communicate(timeout=30)
        elapsed = time.monotonic() - signalled
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()

    assert runner.returncode == 0, stderr.decode()
    assert elapsed <= STOP_WITHIN_SECONDS, f"stopped {elapsed:.2f}s after SIGTERM"
    handled_before = int(marker.read_text())
    assert handled_before <= handled_at_signal + 1  # only the event in flight went on
    committed = HandledEvent.objects.filter(projection="SlowJournal").count()
    assert 2 <= committed == handled_before < len(deposits)
    position = Checkpoint.objects.get(projection_name="SlowJournal").position
    assert position < store.get_global_position()

    finisher = start_runner(tmp_path / "finisher", 0.0, "--once")
    _, stderr = finisher.communicate(timeout=60)
    assert finisher.returncode == 0, stderr.decode()

    journal = list(
        HandledEvent.objects.filter(projection="SlowJournal").values_list("event_id", flat=True)
    )
    assert sorted(journal, key=str) == sorted(deposits, key=str)  # each deposit exactly once
    assert Checkpoint.objects.get(projection_name="SlowJournal").position == (
        store.get_global_position()
    )
