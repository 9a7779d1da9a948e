"""A retry of a sequence while the runner is in the middle of a batch that parks behind it.

The runner's batch holds the projection's checkpoint row; the retry takes it too, so it
waits for the batch to commit (with the event it parked) and then handles the whole
sequence in order. Without that lock the retry would empty the sequence while the batch,
which had read it as blocked, parks a later event behind a head that no longer exists.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings

from django_eventsource.models import DeadLetter
from django_eventsource.projections.maintenance import RetryReport, retry_dead_letters
from django_eventsource.projections.runner import RunSummary, run_projections
from tests.test_sequenced_dead_letters import Streams, read_model
from tests.testapp import sequenced
from tests.testapp.domain import AccountOpened

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

GATED = "tests.test_sequenced_race.GatedLedger"


class GatedLedger(sequenced.OrderedLedger):
    """Blocks on ``gate`` while handling the opening of the account owned by "gate"."""

    entered = threading.Event()
    gate = threading.Event()

    def on_opened(self, event: AccountOpened) -> None:  # type: ignore[override]
        if event.owner == "gate":
            GatedLedger.entered.set()
            assert GatedLedger.gate.wait(30), "the test never opened the gate"
        super().on_opened(event)


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    sequenced.OrderedLedger.failing = set()
    GatedLedger.entered = threading.Event()
    GatedLedger.gate = threading.Event()
    yield
    GatedLedger.gate.set()
    sequenced.OrderedLedger.failing = set()


def in_thread(work: Callable[[], Any], results: list[Any]) -> threading.Thread:
    def target() -> None:
        try:
            results.append(work())
        except BaseException as exc:  # reported by the test
            results.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


@override_settings(EVENTSOURCE_PROJECTIONS=[GATED], EVENTSOURCE_MAX_RETRIES=1)
def test_a_retry_waits_for_the_batch_that_parks_behind_its_head_and_keeps_the_order() -> None:
    streams = Streams()
    task = streams.open()
    sequenced.OrderedLedger.failing = {(task, 1)}
    run_projections(once=True)
    assert DeadLetter.objects.heads().count() == 1
    sequenced.OrderedLedger.failing = set()  # fixed
    gated = streams.open("gate")
    streams.deposit(task)  # parked by the batch below, behind the head

    runs: list[Any] = []
    runner = in_thread(lambda: run_projections(once=True), runs)
    assert GatedLedger.entered.wait(30)
    retries: list[Any] = []
    retry = in_thread(retry_dead_letters, retries)
    # Give a retry that did not wait the chance to finish before the batch goes on.
    retry.join(timeout=1.0)
    GatedLedger.gate.set()
    runner.join(timeout=30)
    retry.join(timeout=30)

    assert isinstance(runs[0], RunSummary), runs
    assert isinstance(retries[0], RetryReport), retries
    assert retries[0].resolved == 2 and retries[0].failed == 0
    assert not DeadLetter.objects.open().exists()
    model = read_model()
    assert model[task][0] == "1,2,"
    assert gated in model
