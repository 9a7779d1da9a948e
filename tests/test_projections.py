"""Projection base classes, the registry and the coordinator (framework-free, in memory)."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest

from django_eventsource import (
    CheckpointTrackingProjection,
    DeclarativeProjection,
    DomainEvent,
    InMemoryCheckpointRepository,
    InMemoryDLQRepository,
    InMemoryEventStore,
    Projection,
    ProjectionCoordinator,
    ProjectionRegistry,
    handles,
)
from django_eventsource.projections.base import RetryPolicy, apply_with_retries
from tests.testapp.domain import AccountClosed, AccountOpened, MoneyDeposited
from tests.testapp.projections import open_account


class Balances(DeclarativeProjection):
    def __init__(self) -> None:
        self.balances: dict[Any, Decimal] = {}
        self.fail_on: set[Decimal] = set()

    @handles(AccountOpened)
    def on_opened(self, event: AccountOpened) -> None:
        self.balances[event.aggregate_id] = event.opening_balance

    @handles(MoneyDeposited)
    async def on_deposited(self, event: MoneyDeposited) -> None:
        if event.amount in self.fail_on:
            raise ValueError(f"refusing {event.amount}")
        self.balances[event.aggregate_id] += event.amount

    def reset(self) -> None:
        self.balances.clear()


class Everything(Projection):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def handle(self, event: DomainEvent) -> None:
        self.seen.append(event.event_type)

    def reset(self) -> None:
        self.seen.clear()


class TrackedBalances(CheckpointTrackingProjection, Balances):
    def __init__(self, **kwargs: Any) -> None:
        Balances.__init__(self)
        CheckpointTrackingProjection.__init__(self, **kwargs)


def opened(amount: str = "0") -> AccountOpened:
    from uuid import uuid4

    return AccountOpened(aggregate_id=uuid4(), owner="ann", opening_balance=Decimal(amount))


def test_a_projection_is_named_after_its_class() -> None:
    assert Balances().name == "Balances"


def test_declarative_projections_subscribe_to_the_events_they_handle() -> None:
    projection = Balances()

    assert set(projection.subscribed_to()) == {AccountOpened, MoneyDeposited}
    assert projection.is_interested_in(opened())
    assert not projection.is_interested_in(AccountClosed(aggregate_id=opened().aggregate_id))


def test_a_projection_without_subscriptions_receives_every_event() -> None:
    assert Everything().is_interested_in(AccountClosed(aggregate_id=opened().aggregate_id))


def test_async_handlers_are_awaited_by_handle() -> None:
    projection = Balances()
    event = opened("5")
    projection.handle(event)

    projection.handle(
        MoneyDeposited(aggregate_id=event.aggregate_id, amount=Decimal(3), aggregate_version=2)
    )

    assert projection.balances[event.aggregate_id] == Decimal(8)


def test_retry_delays_grow_exponentially_up_to_the_cap_with_full_jitter() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=3.0)

    ceilings = [max(policy.delay(attempt) for _ in range(200)) for attempt in (1, 2, 3, 6)]

    assert 0.4 < ceilings[0] <= 0.5
    assert 0.8 < ceilings[1] <= 1.0
    assert 1.6 < ceilings[2] <= 2.0
    assert 2.4 < ceilings[3] <= 3.0
    assert min(policy.delay(1) for _ in range(200)) < 0.1


def test_a_retry_after_thousands_of_failures_still_waits_at_most_the_cap() -> None:
    # A worker that keeps retrying through an hours-long outage reaches attempt numbers
    # whose doubling no longer fits in a float.
    policy = RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=3.0)

    assert 0.0 <= policy.delay(5_000) <= 3.0


def test_the_retry_policy_follows_the_settings(settings: Any) -> None:
    settings.EVENTSOURCE_MAX_RETRIES = 7
    settings.EVENTSOURCE_RETRY_BACKOFF = 0.25
    settings.EVENTSOURCE_RETRY_BACKOFF_MAX = 4.0

    assert RetryPolicy.from_settings() == RetryPolicy(7, 0.25, 4.0)


def test_a_failing_handler_is_retried_with_backoff_then_reported() -> None:
    projection = Balances()
    event = opened()
    projection.handle(event)
    projection.fail_on.add(Decimal(1))
    naps: list[float] = []

    failure = apply_with_retries(
        projection,
        MoneyDeposited(aggregate_id=event.aggregate_id, amount=Decimal(1), aggregate_version=2),
        RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=8.0),
        sleep=naps.append,
    )

    assert failure is not None
    assert failure.attempts == 4
    assert isinstance(failure.error, ValueError)
    assert len(naps) == 3
    assert all(0 <= nap <= cap for nap, cap in zip(naps, (1.0, 2.0, 4.0), strict=True))


def test_a_checkpoint_tracking_projection_dead_letters_and_moves_on() -> None:
    dlq = InMemoryDLQRepository()
    checkpoints = InMemoryCheckpointRepository()
    projection = TrackedBalances(
        checkpoint_repo=checkpoints, dlq_repo=dlq, retry_policy=RetryPolicy(2, 0.0, 0.0)
    )
    projection.fail_on.add(Decimal(9))
    event = opened()

    assert projection.handle(event, global_position=1)
    bad = MoneyDeposited(aggregate_id=event.aggregate_id, amount=Decimal(9), aggregate_version=2)
    assert not projection.handle(bad, global_position=2)
    good = MoneyDeposited(aggregate_id=event.aggregate_id, amount=Decimal(4), aggregate_version=3)
    assert projection.handle(good, global_position=3)

    assert projection.balances[event.aggregate_id] == Decimal(4)
    (letter,) = dlq.get_failed_events("TrackedBalances")
    assert (letter.event_id, letter.retry_count, letter.global_position) == (bad.event_id, 2, 2)
    assert checkpoints.get_position("TrackedBalances") == 3


def test_a_checkpoint_tracking_projection_skips_events_it_already_processed() -> None:
    projection = TrackedBalances()
    event = opened("5")
    projection.handle(event, global_position=1)
    deposit = MoneyDeposited(
        aggregate_id=event.aggregate_id, amount=Decimal(1), aggregate_version=2
    )
    projection.handle(deposit, global_position=2)

    projection.handle(deposit, global_position=2)

    assert projection.balances[event.aggregate_id] == Decimal(6)


def test_the_registry_dispatches_only_to_interested_projections() -> None:
    balances, everything = Balances(), Everything()
    registry = ProjectionRegistry([balances, everything])
    closed = AccountClosed(aggregate_id=opened().aggregate_id)

    registry.dispatch(closed)

    assert everything.seen == ["AccountClosed"]
    assert balances.balances == {}
    assert registry.get("Balances") is balances


def test_a_failing_projection_is_logged_and_does_not_stop_dispatch_to_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    balances, everything = Balances(), Everything()
    registry = ProjectionRegistry([balances, everything])
    # No account was opened, so Balances fails on the deposit.
    deposit = MoneyDeposited(
        aggregate_id=opened().aggregate_id, amount=Decimal(1), aggregate_version=2
    )

    with caplog.at_level(logging.ERROR, logger="django_eventsource"):
        registry.dispatch(deposit)

    assert everything.seen == ["MoneyDeposited"]
    (record,) = caplog.records
    assert "Balances" in record.getMessage()
    assert str(deposit.event_id) in record.getMessage()
    assert (record.projection, record.event_id) == ("Balances", str(deposit.event_id))  # type: ignore[attr-defined]
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def test_registering_two_projections_with_one_name_is_an_error() -> None:
    registry = ProjectionRegistry([Balances()])

    with pytest.raises(ValueError, match="already registered"):
        registry.register_projection(Balances())


def test_asking_the_registry_for_an_unknown_projection_names_the_registered_ones() -> None:
    with pytest.raises(KeyError, match="registered: Balances, Everything"):
        ProjectionRegistry([Everything(), Balances()]).get("Orders")


def test_the_coordinator_catches_up_rebuilds_and_reports_health() -> None:
    store = InMemoryEventStore()
    account = open_account(store, deposits=(2, 3))
    balances = Balances()
    coordinator = ProjectionCoordinator(ProjectionRegistry([balances]), store, batch_size=2)

    assert coordinator.catch_up() == {"Balances": 3}
    assert balances.balances[account] == Decimal(5)
    assert coordinator.catch_up() == {"Balances": 0}

    balances.balances[account] = Decimal(1000)
    assert coordinator.rebuild("Balances") == 3
    assert balances.balances[account] == Decimal(5)
    health = coordinator.health()["Balances"]
    assert (health.position, health.lag_events, health.dead_letters) == (3, 0, 0)


def test_the_coordinator_dead_letters_failing_events_and_reports_them() -> None:
    store = InMemoryEventStore()
    open_account(store, deposits=(2, 3))
    balances = Balances()
    balances.fail_on.add(Decimal(2))
    balances.retry_policy = RetryPolicy(1, 0.0, 0.0)  # type: ignore[misc]
    coordinator = ProjectionCoordinator(ProjectionRegistry([balances]), store)

    coordinator.catch_up()

    health = coordinator.health()["Balances"]
    assert not health.healthy
    assert health.dead_letters == 1
    assert [e.event_data["amount"] for e in coordinator.dlq_repo.get_failed_events()] == ["2"]


def test_the_coordinator_reports_the_lag_of_the_checkpoint_repository() -> None:
    store = InMemoryEventStore()
    open_account(store)
    coordinator = ProjectionCoordinator(ProjectionRegistry([Balances()]), store)
    coordinator.catch_up()
    open_account(store, deposits=(4,))

    health = coordinator.health()["Balances"]
    lag = coordinator.checkpoint_repo.get_lag_metrics("Balances")

    assert lag is not None
    assert (health.position, health.lag_events) == (1, lag.lag_events) == (1, 2)
    assert 0 <= health.lag_seconds <= lag.lag_seconds
    assert health.last_processed_at == lag.last_processed_at is not None


def test_the_coordinator_reports_a_projection_that_never_ran_as_behind_by_every_event() -> None:
    store = InMemoryEventStore()
    open_account(store, deposits=(1, 2))

    health = ProjectionCoordinator(ProjectionRegistry([Balances()]), store).health()["Balances"]

    assert (health.position, health.lag_events, health.last_processed_at) == (0, 3, None)
