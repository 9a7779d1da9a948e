"""Contract of the dead-letter repositories, run against the in-memory and Django ones."""

from __future__ import annotations

from uuid import uuid4

import pytest

from django_eventsource import DjangoDLQRepository, DLQRepository, InMemoryDLQRepository

pytestmark = pytest.mark.django_db


@pytest.fixture(params=[InMemoryDLQRepository, DjangoDLQRepository], ids=["in_memory", "django"])
def repo(request: pytest.FixtureRequest) -> DLQRepository:
    factory: type[DLQRepository] = request.param
    return factory()


def fail(repo: DLQRepository, projection: str = "Orders", **kwargs: object) -> int:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        return repo.add_failed_event(
            event_id=kwargs.pop("event_id", uuid4()),  # type: ignore[arg-type]
            projection_name=projection,
            event_type="OrderPlaced",
            event_data={"total": "3.50"},
            error=exc,
            **kwargs,  # type: ignore[arg-type]
        )


def test_a_failed_event_is_stored_with_its_error_and_stack_trace(repo: DLQRepository) -> None:
    dlq_id = fail(repo, retry_count=3, global_position=42)

    entry = repo.get_failed_event_by_id(dlq_id)

    assert entry is not None
    assert entry.status == "failed"
    assert entry.error_message == "ValueError: boom"
    assert "Traceback" in entry.error_stacktrace and "raise ValueError" in entry.error_stacktrace
    assert entry.event_data == {"total": "3.50"}
    assert (entry.retry_count, entry.global_position) == (3, 42)
    assert entry.first_failed_at is not None and entry.resolved_at is None


def test_failing_again_on_the_same_event_updates_the_entry(repo: DLQRepository) -> None:
    event_id = uuid4()
    first = fail(repo, event_id=event_id, retry_count=3)

    second = repo.add_failed_event(event_id, "Orders", "OrderPlaced", {}, "still broken", 4)

    assert second == first
    (entry,) = repo.get_failed_events()
    assert (entry.error_message, entry.retry_count) == ("still broken", 4)


def test_the_same_event_failing_in_two_projections_gives_two_entries(repo: DLQRepository) -> None:
    event_id = uuid4()
    fail(repo, "Orders", event_id=event_id)
    fail(repo, "Invoices", event_id=event_id)

    assert len(repo.get_failed_events()) == 2
    assert [e.projection_name for e in repo.get_failed_events("Invoices")] == ["Invoices"]


def test_failed_events_are_filtered_by_status_and_limited(repo: DLQRepository) -> None:
    ids = [fail(repo) for _ in range(3)]
    repo.mark_retrying(ids[0])
    repo.mark_resolved(ids[1], resolved_by="ops")

    assert [e.id for e in repo.get_failed_events()] == [ids[2]]
    assert [e.id for e in repo.get_failed_events(status="retrying")] == [ids[0]]
    assert len(repo.get_failed_events(status=None, limit=2)) == 2


def test_resolving_records_who_and_when(repo: DLQRepository) -> None:
    dlq_id = fail(repo)

    repo.mark_resolved(dlq_id, resolved_by="alice")

    entry = repo.get_failed_event_by_id(dlq_id)
    assert entry is not None
    assert (entry.status, entry.resolved_by) == ("resolved", "alice")
    assert entry.resolved_at is not None


def test_stats_and_counts_cover_unresolved_entries_only(repo: DLQRepository) -> None:
    fail(repo, "Orders")
    fail(repo, "Orders")
    retrying = fail(repo, "Invoices")
    repo.mark_retrying(retrying)
    repo.mark_resolved(fail(repo, "Shipping"), resolved_by="ops")

    stats = repo.get_failure_stats()
    counts = repo.get_projection_failure_counts()

    assert (stats.total_failed, stats.total_retrying, stats.affected_projections) == (2, 1, 2)
    assert stats.oldest_failure is not None
    assert [(c.projection_name, c.failure_count) for c in counts] == [
        ("Orders", 2),
        ("Invoices", 1),
    ]
    assert counts[0].oldest_failure <= counts[0].most_recent_failure  # type: ignore[operator]


def test_only_entries_resolved_long_ago_are_deleted(repo: DLQRepository) -> None:
    recent = fail(repo)
    repo.mark_resolved(recent, resolved_by="ops")
    open_entry = fail(repo)

    assert repo.delete_resolved_events(older_than_days=30) == 0
    assert repo.delete_resolved_events(older_than_days=-1) == 1
    assert repo.get_failed_event_by_id(recent) is None
    assert repo.get_failed_event_by_id(open_entry) is not None
