"""Contract of the checkpoint repositories, run against the in-memory and Django ones."""

from __future__ import annotations

from collections.abc import Callable
from uuid import uuid4

import pytest

from django_eventsource import (
    CheckpointRepository,
    DjangoCheckpointRepository,
    DjangoEventStore,
    EventStore,
    InMemoryCheckpointRepository,
    InMemoryEventStore,
)
from tests.testapp.projections import open_account

pytestmark = pytest.mark.django_db

Factory = Callable[[], tuple[CheckpointRepository, EventStore]]


def in_memory() -> tuple[CheckpointRepository, EventStore]:
    store = InMemoryEventStore()
    return InMemoryCheckpointRepository(store), store


def django() -> tuple[CheckpointRepository, EventStore]:
    return DjangoCheckpointRepository(), DjangoEventStore()


@pytest.fixture(params=[in_memory, django], ids=["in_memory", "django"])
def repo_and_store(request: pytest.FixtureRequest) -> tuple[CheckpointRepository, EventStore]:
    factory: Factory = request.param
    return factory()


def test_a_projection_that_never_ran_has_no_checkpoint_and_position_zero(
    repo_and_store: tuple[CheckpointRepository, EventStore],
) -> None:
    repo, _ = repo_and_store

    assert repo.get_checkpoint("Orders") is None
    assert repo.get_position("Orders") == 0
    assert repo.get_lag_metrics("Orders") is None


def test_updating_a_checkpoint_records_position_event_and_count(
    repo_and_store: tuple[CheckpointRepository, EventStore],
) -> None:
    repo, _ = repo_and_store
    first, second = uuid4(), uuid4()

    repo.update_checkpoint("Orders", first, "OrderPlaced", 5, events_processed_delta=5)
    repo.update_checkpoint("Orders", second, "OrderShipped", 7, events_processed_delta=2)

    assert repo.get_checkpoint("Orders") == second
    assert repo.get_position("Orders") == 7
    (data,) = repo.get_all_checkpoints()
    assert data.projection_name == "Orders"
    assert data.last_event_type == "OrderShipped"
    assert data.events_processed == 7
    assert data.last_processed_at is not None


def test_checkpoints_of_different_projections_are_independent(
    repo_and_store: tuple[CheckpointRepository, EventStore],
) -> None:
    repo, _ = repo_and_store
    repo.update_checkpoint("B", uuid4(), "X", 3)
    repo.update_checkpoint("A", uuid4(), "X", 9)

    assert [c.projection_name for c in repo.get_all_checkpoints()] == ["A", "B"]
    assert (repo.get_position("A"), repo.get_position("B")) == (9, 3)


def test_resetting_a_checkpoint_starts_the_projection_from_zero(
    repo_and_store: tuple[CheckpointRepository, EventStore],
) -> None:
    repo, _ = repo_and_store
    repo.update_checkpoint("Orders", uuid4(), "OrderPlaced", 12)

    repo.reset_checkpoint("Orders")

    assert repo.get_position("Orders") == 0
    assert repo.get_checkpoint("Orders") is None


def test_lag_counts_the_events_stored_after_the_checkpoint(
    repo_and_store: tuple[CheckpointRepository, EventStore],
) -> None:
    repo, store = repo_and_store
    open_account(store, deposits=(1, 2, 3))
    events = list(store.read_all())
    repo.update_checkpoint(
        "Summary", events[0].event_id, events[0].event_type, events[0].global_position
    )

    metrics = repo.get_lag_metrics("Summary")

    assert metrics is not None
    assert metrics.lag_events == 3
    assert metrics.latest_event_id == events[-1].event_id
    assert metrics.last_event_id == events[0].event_id
    assert metrics.lag_seconds >= 0


def test_lag_can_be_restricted_to_the_event_types_a_projection_handles(
    repo_and_store: tuple[CheckpointRepository, EventStore],
) -> None:
    repo, store = repo_and_store
    open_account(store, deposits=(1, 2))
    events = list(store.read_all())
    repo.update_checkpoint(
        "Summary", events[0].event_id, events[0].event_type, events[0].global_position
    )

    metrics = repo.get_lag_metrics("Summary", event_types=["AccountOpened"])

    assert metrics is not None
    assert metrics.lag_events == 0
    assert metrics.lag_seconds == 0
