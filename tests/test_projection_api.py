"""The projection API of the eventsource guide: checkpoints and lag on a projection, its
default reset, and the registry's and coordinator's helpers (with their async twins)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from django.test import override_settings

from django_eventsource import (
    CheckpointTrackingProjection,
    DeclarativeProjection,
    DjangoCheckpointRepository,
    DjangoEventStore,
    DomainEvent,
    InMemoryCheckpointRepository,
    InMemoryEventStore,
    Projection,
    ProjectionCoordinator,
    ProjectionRegistry,
    handles,
)
from django_eventsource.projections.coordinator import ProjectionInfo
from django_eventsource.projections.maintenance import reset_projection
from django_eventsource.projections.runner import run_projections
from tests.testapp.domain import AccountOpened, MoneyDeposited
from tests.testapp.projections import open_account


class Owners(CheckpointTrackingProjection):
    """Relies on the default reset(): only the checkpoint is cleared."""

    seen: list[str] = []

    @handles(AccountOpened)
    def on_opened(self, event: AccountOpened) -> None:
        type(self).seen.append(event.owner)


class Deposits(CheckpointTrackingProjection):
    """Has a read model: its reset() empties it and calls the base for the checkpoint."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.total = Decimal(0)

    @handles(MoneyDeposited)
    def on_deposited(self, event: MoneyDeposited) -> None:
        self.total += event.amount

    def reset(self) -> None:
        self.total = Decimal(0)
        super().reset()


class Openings(DeclarativeProjection):
    def __init__(self) -> None:
        self.owners: list[str] = []

    @handles(AccountOpened)
    def on_opened(self, event: AccountOpened) -> None:
        self.owners.append(event.owner)

    def reset(self) -> None:
        self.owners.clear()


class Broken(Projection):
    def handle(self, event: DomainEvent) -> None:
        raise RuntimeError("always")

    def reset(self) -> None: ...


def opened(owner: str = "ann") -> AccountOpened:
    return AccountOpened(aggregate_id=uuid4(), owner=owner)


def deposited(amount: int) -> MoneyDeposited:
    return MoneyDeposited(aggregate_id=uuid4(), amount=Decimal(amount), aggregate_version=2)


@pytest.fixture(autouse=True)
def _clear_owners() -> None:
    Owners.seen = []


# -- checkpoint, lag and reset on a projection ----------------------------------------------


def test_a_projection_reports_the_last_event_it_processed_as_its_checkpoint() -> None:
    projection = Owners()
    assert projection.get_checkpoint() is None
    first, second = opened("ann"), opened("bob")

    projection.handle(first, global_position=1)
    projection.handle(second, global_position=2)

    assert projection.get_checkpoint() == second.event_id
    assert asyncio.run(projection.aget_checkpoint()) == second.event_id


def test_a_projections_lag_counts_only_the_events_it_subscribes_to() -> None:
    store = InMemoryEventStore()
    projection = Owners(checkpoint_repo=InMemoryCheckpointRepository(store))
    assert projection.get_lag_metrics() is None
    open_account(store, "ann", deposits=(5, 6))
    (ann_opened, *_) = store.read_all()
    projection.handle(ann_opened.event, global_position=ann_opened.global_position)

    # The two deposits after the checkpoint are not the projection's business.
    caught_up = projection.get_lag_metrics()
    open_account(store, "bob")
    bob_opened = list(store.read_all())[-1]
    behind = asyncio.run(projection.aget_lag_metrics())

    assert caught_up is not None and behind is not None
    assert (caught_up.lag_events, caught_up.lag_seconds, caught_up.latest_event_id) == (
        0,
        0.0,
        ann_opened.event_id,
    )
    assert (behind.lag_events, behind.latest_event_id, behind.events_processed) == (
        bob_opened.global_position - ann_opened.global_position,
        bob_opened.event_id,
        1,
    )


def test_the_default_reset_clears_the_checkpoint_so_events_are_handled_again() -> None:
    projection = Owners()
    event = opened("ann")
    projection.handle(event, global_position=1)
    projection.handle(event, global_position=1)  # at the checkpoint: skipped

    projection.reset()
    projection.handle(event, global_position=1)

    assert Owners.seen == ["ann", "ann"]
    assert projection.get_checkpoint() == event.event_id


def test_a_reset_override_empties_the_read_model_and_through_super_the_checkpoint() -> None:
    checkpoints = InMemoryCheckpointRepository()
    projection = Deposits(checkpoint_repo=checkpoints)
    projection.handle(deposited(4), global_position=1)

    asyncio.run(projection.areset())

    assert projection.total == Decimal(0)
    assert checkpoints.get_position("Deposits") == 0
    assert projection.get_checkpoint() is None


@pytest.mark.django_db
@override_settings(EVENTSOURCE_PROJECTIONS=["tests.test_projection_api.Owners"])
def test_reset_projection_rebuilds_a_projection_that_keeps_the_default_reset() -> None:
    store = DjangoEventStore()
    open_account(store, "ann")
    open_account(store, "bob")
    run_projections(once=True)

    summary = reset_projection("Owners", rebuild=True)

    assert summary.processed == {"Owners": 2}
    assert Owners.seen == ["ann", "bob", "ann", "bob"]
    assert DjangoCheckpointRepository().get_position("Owners") == store.get_global_position()


# -- ProjectionRegistry ---------------------------------------------------------------------


def test_the_registry_counts_and_unregisters_projections_by_name() -> None:
    registry = ProjectionRegistry([Openings(), Owners()])

    assert registry.get_projection_count() == 2
    assert registry.unregister_projection("Openings") is True
    assert registry.unregister_projection("Openings") is False
    assert registry.get_projection_count() == 1
    assert "Openings" not in registry


def test_dispatch_many_hands_each_projection_the_events_in_order() -> None:
    openings = Openings()
    registry = ProjectionRegistry([openings])

    registry.dispatch_many([opened("ann"), deposited(1), opened("bob")])
    asyncio.run(registry.adispatch_many(iter([opened("cy")])))
    asyncio.run(registry.adispatch(opened("dee")))

    assert openings.owners == ["ann", "bob", "cy", "dee"]


def test_dispatch_many_goes_on_past_a_failing_projection() -> None:
    openings = Openings()
    registry = ProjectionRegistry([Broken(), openings])

    registry.dispatch_many([opened("ann"), opened("bob")])

    assert openings.owners == ["ann", "bob"]


def test_reset_all_resets_every_projection_including_tracked_checkpoints() -> None:
    openings, deposits = Openings(), Deposits()
    registry = ProjectionRegistry([openings, deposits])
    registry.dispatch(opened("ann"))
    deposits.handle(deposited(3), global_position=1)

    registry.reset_all()

    assert openings.owners == []
    assert (deposits.total, deposits.get_checkpoint()) == (Decimal(0), None)
    registry.dispatch(opened("bob"))
    asyncio.run(registry.areset_all())
    assert openings.owners == []


# -- ProjectionCoordinator ------------------------------------------------------------------


def test_a_coordinator_without_a_store_gets_an_in_memory_one() -> None:
    openings = Openings()
    coordinator = ProjectionCoordinator(ProjectionRegistry([openings]))
    open_account(coordinator.event_store, "ann")

    assert isinstance(coordinator.event_store, InMemoryEventStore)
    assert coordinator.catch_up() == {"Openings": 1}
    assert openings.owners == ["ann"]


def test_the_coordinator_dispatches_several_events_live() -> None:
    openings = Openings()
    coordinator = ProjectionCoordinator(ProjectionRegistry([openings]))

    coordinator.dispatch_events([opened("ann"), opened("bob")])
    asyncio.run(coordinator.adispatch_events([opened("cy")]))

    assert openings.owners == ["ann", "bob", "cy"]


def test_rebuild_all_resets_and_replays_every_projection() -> None:
    openings, deposits = Openings(), Deposits()
    coordinator = ProjectionCoordinator(ProjectionRegistry([openings, deposits]))
    open_account(coordinator.event_store, "ann", deposits=(2, 3))
    coordinator.catch_up()
    openings.owners.append("stale")
    deposits.total += 100

    assert coordinator.rebuild_all() == {"Openings": 3, "Deposits": 3}
    assert (openings.owners, deposits.total) == (["ann"], Decimal(5))
    assert asyncio.run(coordinator.arebuild_all()) == {"Openings": 3, "Deposits": 3}
    assert (openings.owners, deposits.total) == (["ann"], Decimal(5))


def test_projection_info_names_each_projection_with_its_event_types_position_and_lag() -> None:
    openings, deposits = Openings(), Deposits()
    coordinator = ProjectionCoordinator(ProjectionRegistry([openings, deposits]))
    open_account(coordinator.event_store, "ann", deposits=(2,))
    coordinator.catch_up(["Openings"])
    open_account(coordinator.event_store, "bob")

    info = coordinator.get_projection_info()

    assert list(info) == ["Openings", "Deposits"]
    assert info["Openings"] == ProjectionInfo(
        name="Openings",
        event_types=("AccountOpened",),
        position=2,
        lag_events=1,
        lag_seconds=info["Openings"].lag_seconds,
        events_processed=1,
        last_processed_at=info["Openings"].last_processed_at,
        dead_letters=0,
    )
    assert info["Openings"].last_processed_at is not None
    assert info["Openings"].healthy
    never_ran = info["Deposits"]
    assert (never_ran.event_types, never_ran.position, never_ran.lag_events) == (
        ("MoneyDeposited",),
        0,
        3,
    )
    assert (never_ran.events_processed, never_ran.last_processed_at) == (0, None)
    again = asyncio.run(coordinator.aget_projection_info())
    assert [(i.name, i.position, i.lag_events) for i in again.values()] == [
        ("Openings", 2, 1),
        ("Deposits", 0, 3),
    ]


def test_projection_info_of_a_projection_wanting_every_event_lists_no_types() -> None:
    class Everything(Projection):
        def handle(self, event: DomainEvent) -> None: ...

        def reset(self) -> None: ...

    coordinator = ProjectionCoordinator(ProjectionRegistry([Everything()]))

    assert coordinator.get_projection_info()["Everything"].event_types == ()
