"""OutboxRepository behaviour, identical for the Django table and the in-memory store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from typing import get_args
from uuid import uuid4

import pytest
from django.db import NotSupportedError, connection
from django.utils import timezone
from pytest_django import DjangoAssertNumQueries

from django_eventsource import (
    DjangoEventStore,
    DjangoOutboxRepository,
    ExpectedVersion,
    InMemoryOutboxRepository,
    OutboxRepository,
)
from django_eventsource.models import OutboxMessage
from django_eventsource.outbox.rows import OutboxFailure, OutboxStatus
from tests.factories import account_history

# Runs the SQL the app writes itself (again with server-side binding in CI).
pytestmark = pytest.mark.own_sql


@pytest.fixture(params=["django", "memory"])
def repo(request: pytest.FixtureRequest) -> Iterator[OutboxRepository]:
    if request.param == "django":
        request.getfixturevalue("db")
        yield DjangoOutboxRepository()
    else:
        yield InMemoryOutboxRepository()


def test_added_events_are_pending_in_insertion_order(repo: OutboxRepository) -> None:
    events = account_history(deposits=2)
    ids = [repo.add_event(e) for e in events]

    pending = repo.get_pending_events(limit=10)

    assert [p.id for p in pending] == ids
    assert [p.event_id for p in pending] == [e.event_id for e in events]
    assert pending[0].event_data == events[0].to_dict()
    assert pending[0].status == "pending"
    assert pending[0].aggregate_type == "Account"
    assert repo.get_pending_events(limit=2) == pending[:2]


def test_published_rows_leave_the_pending_list(repo: OutboxRepository) -> None:
    first, second = (repo.add_event(e) for e in account_history(deposits=1))

    repo.mark_published(first)

    assert [p.id for p in repo.get_pending_events()] == [second]
    entry = repo.get_entry(first)
    assert entry is not None and entry.status == "published" and entry.published_at is not None


def test_failed_rows_keep_their_error_and_can_be_retried(repo: OutboxRepository) -> None:
    outbox_id = repo.add_event(account_history(deposits=0)[0])
    repo.increment_retry(outbox_id, "boom 1")
    repo.mark_failed(outbox_id, "boom 2")

    entry = repo.get_entry(outbox_id)
    assert entry is not None
    assert (entry.status, entry.retry_count, entry.last_error) == ("failed", 1, "boom 2")
    assert repo.get_pending_events() == []

    assert repo.retry_failed([outbox_id]) == 1
    entry = repo.get_entry(outbox_id)
    assert entry is not None and (entry.status, entry.retry_count) == ("pending", 0)


def test_stats_count_rows_by_status(repo: OutboxRepository) -> None:
    ids = [repo.add_event(e) for e in account_history(deposits=3)]
    repo.mark_published(ids[0])
    repo.mark_failed(ids[1], "nope")

    stats = repo.get_stats()

    assert (stats.pending_count, stats.published_count, stats.failed_count) == (2, 1, 1)
    assert stats.oldest_pending is not None


def test_stats_give_the_mean_attempts_of_the_rows_still_to_publish(
    repo: OutboxRepository,
) -> None:
    assert repo.get_stats().avg_retries == 0.0
    fresh, retried, given_up, published = (repo.add_event(e) for e in account_history(deposits=3))
    for _ in range(3):
        repo.increment_retry(retried, "bus down")
    for _ in range(5):
        repo.increment_retry(given_up, "bus down")
    repo.mark_failed(given_up, "bus down")
    repo.increment_retry(published, "bus down")
    repo.mark_published(published)

    stats = repo.get_stats()

    # (0 + 3) / 2: the failed and the published rows do not count.
    assert stats.avg_retries == pytest.approx(1.5)
    assert (stats.pending_count, stats.failed_count, stats.published_count) == (2, 1, 1)
    repo.mark_published(fresh)
    assert repo.get_stats().avg_retries == pytest.approx(3.0)


def test_django_stats_cost_one_query(
    db: None, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    repo = DjangoOutboxRepository()
    outbox_id = repo.add_event(account_history(deposits=0)[0])
    repo.increment_retry(outbox_id, "bus down")

    with django_assert_num_queries(1):
        stats = repo.get_stats()

    assert (stats.pending_count, stats.avg_retries) == (1, 1.0)


def test_cleanup_deletes_only_old_published_rows(repo: OutboxRepository) -> None:
    old, recent, pending = (repo.add_event(e) for e in account_history(deposits=2))
    repo.mark_published_many([old], now=timezone.now() - timedelta(days=10))
    repo.mark_published(recent)

    assert repo.cleanup_published(days=7) == 1

    assert repo.get_entry(old) is None
    assert repo.get_entry(recent) is not None
    assert repo.get_entry(pending) is not None


def test_claims_skip_rows_behind_an_earlier_version_that_backs_off(repo: OutboxRepository) -> None:
    now = timezone.now()
    held = [repo.add_event(e) for e in account_history(deposits=2)]
    other = repo.add_event(account_history(deposits=0)[0])
    repo.claim_due("r1", 1, now=now, claim_timeout=60)
    repo.record_failures(
        [OutboxFailure(held[0], "down", now + timedelta(minutes=5))], max_attempts=10
    )

    claimed = repo.claim_due("r2", 10, now=now, claim_timeout=60)

    assert [c.id for c in claimed] == [other]


def test_a_live_claim_is_not_taken_but_a_stale_one_is(repo: OutboxRepository) -> None:
    outbox_id = repo.add_event(account_history(deposits=0)[0])
    now = timezone.now()
    assert [c.id for c in repo.claim_due("r1", 10, now=now, claim_timeout=60)] == [outbox_id]

    assert repo.claim_due("r2", 10, now=now + timedelta(seconds=30), claim_timeout=60) == []
    taken = repo.claim_due("r2", 10, now=now + timedelta(seconds=61), claim_timeout=60)

    assert [(c.id, c.claimed_by) for c in taken] == [(outbox_id, "r2")]


def test_failures_become_failed_after_the_last_attempt(repo: OutboxRepository) -> None:
    outbox_id = repo.add_event(account_history(deposits=0)[0])
    now = timezone.now()
    for attempt in range(3):
        assert repo.claim_due("r", 1, now=now + timedelta(seconds=attempt), claim_timeout=60)
        given_up = repo.record_failures(
            [OutboxFailure(outbox_id, f"error {attempt}", now)], max_attempts=3
        )

    entry = repo.get_entry(outbox_id)
    assert given_up == 1
    assert entry is not None
    assert (entry.status, entry.retry_count, entry.last_error) == ("failed", 3, "error 2")


def test_a_failing_row_becomes_failed_once_the_give_up_period_has_passed_since_its_first_failure(
    repo: OutboxRepository,
) -> None:
    outbox_id = repo.add_event(account_history(deposits=0)[0])
    first = timezone.now()
    outcomes = []
    for seconds in (0, 60, 3599, 3600):
        failed_at = first + timedelta(seconds=seconds)
        assert repo.claim_due("r", 1, now=failed_at, claim_timeout=60)
        given_up = repo.record_failures(
            [OutboxFailure(outbox_id, "down", failed_at)], now=failed_at, give_up_after=3600
        )
        entry = repo.get_entry(outbox_id)
        assert entry is not None and entry.first_failed_at == first
        outcomes.append((given_up, entry.status, entry.retry_count))

    assert outcomes == [(0, "pending", 1), (0, "pending", 2), (0, "pending", 3), (1, "failed", 4)]
    assert repo.retry_failed([outbox_id]) == 1
    entry = repo.get_entry(outbox_id)
    assert entry is not None
    assert (entry.status, entry.retry_count, entry.first_failed_at) == ("pending", 0, None)


@pytest.mark.django_db
def test_django_claims_record_the_claimer_in_the_table() -> None:
    repo = DjangoOutboxRepository()
    outbox_id = repo.add_event(account_history(aggregate_id=uuid4(), deposits=0)[0])

    repo.claim_due("relay-a", 10, now=timezone.now(), claim_timeout=60)

    row = OutboxMessage.objects.get(pk=outbox_id)
    assert row.claimed_by == "relay-a" and row.claimed_at is not None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_rows_behind_a_row_another_relay_is_claiming_are_left_for_later() -> None:
    import threading

    from django.db import connection, transaction

    repo = DjangoOutboxRepository()
    first, second = (repo.add_event(e) for e in account_history(deposits=1))
    other = repo.add_event(account_history(deposits=0)[0])
    locked, release = threading.Event(), threading.Event()

    def claim_in_progress() -> None:
        # Another relay's claiming statement, caught between locking and committing.
        with transaction.atomic():
            list(OutboxMessage.objects.select_for_update().filter(id=first))
            locked.set()
            release.wait(timeout=10)
        connection.close()

    holder = threading.Thread(target=claim_in_progress)
    holder.start()
    try:
        assert locked.wait(timeout=10)
        claimed = repo.claim_due("relay-b", 10, now=timezone.now(), claim_timeout=60)
    finally:
        release.set()
        holder.join(timeout=10)

    assert [c.id for c in claimed] == [other]
    assert OutboxMessage.objects.get(pk=second).claimed_by == ""


@pytest.mark.django_db
def test_the_store_and_add_event_write_the_same_outbox_row_for_an_event() -> None:
    events = account_history(deposits=1, tenant_id=uuid4())
    DjangoEventStore(outbox_enabled=True).append_events(
        events[0].aggregate_id, "Account", events, ExpectedVersion.NO_STREAM
    )
    row_columns = [
        f.name for f in OutboxMessage._meta.concrete_fields if f.name not in ("id", "created_at")
    ]
    by_store = list(OutboxMessage.objects.order_by("id").values(*row_columns))
    OutboxMessage.objects.all().delete()

    repo = DjangoOutboxRepository()
    for event in events:
        repo.add_event(event)
    by_repository = list(OutboxMessage.objects.order_by("id").values(*row_columns))

    assert by_store == by_repository
    assert [row["event_id"] for row in by_store] == [e.event_id for e in events]


def test_outbox_entry_statuses_are_the_models_statuses() -> None:
    assert set(get_args(OutboxStatus)) == set(OutboxMessage.Status.values)


@pytest.mark.django_db
def test_claiming_on_an_unsupported_database_names_the_vendor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = DjangoOutboxRepository()
    outbox_id = repo.add_event(account_history(deposits=0)[0])
    monkeypatch.setattr(connection, "vendor", "mysql")

    with pytest.raises(NotSupportedError, match=r"PostgreSQL and SQLite.*'mysql'"):
        repo.claim_due("r", 10, now=timezone.now(), claim_timeout=60)
    with pytest.raises(NotSupportedError, match=r"'mysql'"):
        repo.mark_published(outbox_id)


@pytest.mark.django_db
def test_claiming_on_sqlite_before_3_35_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite-only test (suite runs on PostgreSQL)")
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))

    with pytest.raises(NotSupportedError, match=r"SQLite 3\.35 or later"):
        DjangoOutboxRepository().claim_due("r", 10, now=timezone.now(), claim_timeout=60)
