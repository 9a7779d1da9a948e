"""How the runner reads a batch: the collector pause around a page, the interest filter."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest

from django_eventsource._runtime import collector_paused
from django_eventsource.events.base import DomainEvent
from django_eventsource.projections.base import Projection
from tests.testapp.domain import AccountOpened, MoneyDeposited


@pytest.fixture
def collector_on() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.enable()
    yield
    if not was_enabled:
        gc.disable()


@pytest.mark.usefixtures("collector_on")
def test_the_collector_is_off_inside_a_pause_and_back_on_after_it() -> None:
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # nested: the outer pause still holds
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_the_collector_comes_back_after_an_error_inside_the_pause() -> None:
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("page failed")
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_a_collector_disabled_by_the_application_stays_disabled() -> None:
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_overlapping_pauses_of_two_threads_end_with_the_collector_on() -> None:
    inside = threading.Barrier(2)
    leave = threading.Event()

    def reader() -> None:
        with collector_paused():
            inside.wait(timeout=10)
            leave.wait(timeout=10)

    thread = threading.Thread(target=reader)
    thread.start()
    with collector_paused():
        inside.wait(timeout=10)
    # This thread's pause ended while the other's goes on.
    assert not gc.isenabled()
    leave.set()
    thread.join(timeout=10)
    assert gc.isenabled()


class _Deposits(Projection):
    def subscribed_to(self) -> list[type[DomainEvent]]:
        return [MoneyDeposited]

    def handle(self, event: DomainEvent) -> Any:
        return None

    def reset(self) -> None:
        return None


class _LargeDeposits(_Deposits):
    def is_interested_in(self, event: DomainEvent) -> bool:
        return super().is_interested_in(event) and getattr(event, "amount", 0) > 100


class _Everything(_Deposits):
    def subscribed_to(self) -> list[type[DomainEvent]]:
        return []


def _events() -> list[DomainEvent]:
    account = uuid4()
    return [
        AccountOpened(aggregate_id=account, owner="a", aggregate_version=1),
        MoneyDeposited(aggregate_id=account, amount=5, aggregate_version=2),
        MoneyDeposited(aggregate_id=account, amount=500, aggregate_version=3),
    ]


@pytest.mark.parametrize("projection_class", [_Deposits, _LargeDeposits, _Everything])
def test_the_interest_filter_agrees_with_is_interested_in(
    projection_class: type[Projection],
) -> None:
    projection = projection_class()
    interested = projection.interest_filter()
    events = _events()
    assert [interested(e) for e in events] == [projection.is_interested_in(e) for e in events]


def test_an_overridden_is_interested_in_decides_each_event() -> None:
    interested = _LargeDeposits().interest_filter()
    assert [interested(e) for e in _events()] == [False, False, True]
