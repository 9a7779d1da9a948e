"""The projection runner on the Django event store: batches, checkpoints, dead letters."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from uuid import uuid4

import pytest
from django.test import override_settings
from django.utils import timezone

from django_eventsource import DjangoEventStore, EventTypeNotFoundError
from django_eventsource.exceptions import UnknownProjectionError
from django_eventsource.models import Checkpoint, DeadLetter, EventRecord
from django_eventsource.projections.exclusivity import exclusivity_for
from django_eventsource.projections.maintenance import retry_dead_letters
from django_eventsource.projections.runner import checkpoint_db, load_projections, run_projections
from tests.testapp.models import AccountSummary, HandledEvent
from tests.testapp.projections import (
    ASYNC_JOURNAL,
    COUNTING,
    FLAKY,
    OPTIMISTIC,
    SUMMARY,
    open_account,
)

pytestmark = [pytest.mark.own_sql, pytest.mark.django_db]


def checkpoint_position(name: str) -> int:
    return (
        Checkpoint.objects.filter(projection_name=name).values_list("position", flat=True).first()
        or 0
    )


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_one_pass_brings_the_read_model_up_to_every_stored_event(store: DjangoEventStore) -> None:
    ann = open_account(store, "ann", deposits=(10, 5))
    bob = open_account(store, "bob", deposits=(7,))

    summary = run_projections(once=True)

    assert AccountSummary.objects.get(account_id=ann).balance == Decimal(15)
    assert AccountSummary.objects.get(account_id=bob).balance == Decimal(7)
    assert summary.processed == {"AccountSummaryProjection": 5}
    assert checkpoint_position("AccountSummaryProjection") == store.get_global_position()


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_a_second_pass_only_handles_events_appended_since(store: DjangoEventStore) -> None:
    ann = open_account(store, "ann", deposits=(10,))
    run_projections(once=True)
    bob = open_account(store, "bob", deposits=(3,))

    summary = run_projections(once=True)

    assert summary.processed == {"AccountSummaryProjection": 2}
    assert AccountSummary.objects.get(account_id=ann).events_seen == 2
    assert AccountSummary.objects.get(account_id=bob).events_seen == 2


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_events_are_read_in_batches_of_the_requested_size(store: DjangoEventStore) -> None:
    open_account(store, deposits=(1, 2, 3, 4))

    summary = run_projections(once=True, batch_size=2)

    assert summary.batches == 3
    assert HandledEvent.objects.count() == 5


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_handlers_run_with_the_event_as_causation_and_its_correlation(
    store: DjangoEventStore,
) -> None:
    open_account(store)
    event = next(iter(store.read_all())).event

    run_projections(once=True)

    journal = HandledEvent.objects.get()
    assert journal.causation_id == event.event_id
    assert journal.correlation_id == event.correlation_id


@override_settings(EVENTSOURCE_PROJECTIONS=[ASYNC_JOURNAL])
def test_async_handlers_are_run_to_completion_inside_the_batch(store: DjangoEventStore) -> None:
    open_account(store, deposits=(5,))

    run_projections(once=True)

    assert list(HandledEvent.objects.values_list("projection", flat=True)) == [
        "AsyncJournalProjection"
    ]


@override_settings(EVENTSOURCE_PROJECTIONS=[FLAKY], EVENTSOURCE_MAX_RETRIES=3)
def test_a_poison_event_is_dead_lettered_without_its_partial_writes_and_later_events_go_on(
    store: DjangoEventStore, poison: set[Decimal]
) -> None:
    poison.add(Decimal(13))
    open_account(store, deposits=(10, 13, 20))
    open_account(store, "bob", deposits=(30,))

    summary = run_projections(once=True)

    booked = sorted(
        store_event.event.amount  # type: ignore[attr-defined]
        for store_event in store.read_all()
        if HandledEvent.objects.filter(event_id=store_event.event_id).exists()
    )
    # The same account's later deposit waits behind the dead letter; bob's goes on.
    assert booked == [Decimal(10), Decimal(30)]
    assert summary.dead_lettered == 1
    assert summary.parked == 1
    parked = DeadLetter.objects.get(parked=True)
    assert parked.event_data["amount"] == "20"
    letter = DeadLetter.objects.get(parked=False)
    assert letter.projection_name == "FlakyLedgerProjection"
    assert letter.retry_count == 3
    assert letter.status == DeadLetter.Status.FAILED
    assert "ValueError: cannot book 13" in letter.error_message
    assert "Traceback" in letter.error_stacktrace and "on_deposited" in letter.error_stacktrace
    assert letter.event_data["amount"] == "13"
    assert checkpoint_position("FlakyLedgerProjection") == store.get_global_position()


@override_settings(EVENTSOURCE_PROJECTIONS=[OPTIMISTIC], EVENTSOURCE_MAX_RETRIES=2)
def test_optimistic_batches_give_the_same_outcome_as_one_savepoint_per_event(
    store: DjangoEventStore, poison: set[Decimal]
) -> None:
    poison.add(Decimal(13))
    open_account(store, deposits=(10, 11))
    run_projections(once=True)
    open_account(store, deposits=(12, 13))
    open_account(store, "bob", deposits=(14,))

    summary = run_projections(once=True)

    journal = HandledEvent.objects.values_list("event_id", flat=True)
    amounts = sorted(s.event.amount for s in store.read_all() if s.event_id in set(journal))  # type: ignore[attr-defined]
    assert amounts == [Decimal(10), Decimal(11), Decimal(12), Decimal(14)]
    assert len(journal) == 4
    assert summary.dead_lettered == 1
    assert DeadLetter.objects.get().retry_count == 2


@override_settings(EVENTSOURCE_PROJECTIONS=[FLAKY])
def test_retrying_a_fixed_dead_letter_applies_it_and_marks_it_resolved(
    store: DjangoEventStore, poison: set[Decimal]
) -> None:
    poison.add(Decimal(13))
    open_account(store, deposits=(13,))
    run_projections(once=True)
    poison.clear()

    report = retry_dead_letters(projection="FlakyLedgerProjection", resolved_by="ops")

    assert (report.resolved, report.failed) == (1, 0)
    letter = DeadLetter.objects.get()
    assert letter.status == DeadLetter.Status.RESOLVED
    assert letter.resolved_by == "ops"
    assert HandledEvent.objects.filter(event_id=letter.event_id).count() == 1


@override_settings(EVENTSOURCE_PROJECTIONS=[FLAKY], EVENTSOURCE_MAX_RETRIES=2)
def test_a_dead_letter_that_still_fails_stays_failed_with_one_more_attempt(
    store: DjangoEventStore, poison: set[Decimal]
) -> None:
    poison.add(Decimal(13))
    open_account(store, deposits=(13,))
    run_projections(once=True)
    letter = DeadLetter.objects.get()

    report = retry_dead_letters(ids=[letter.pk])

    letter.refresh_from_db()
    assert (report.resolved, report.failed) == (0, 1)
    assert "cannot book 13" in report.errors[letter.pk]
    assert letter.status == DeadLetter.Status.FAILED
    assert letter.retry_count == 3
    assert not HandledEvent.objects.exists()


@override_settings(EVENTSOURCE_PROJECTIONS=[FLAKY])
def test_retrying_an_unknown_dead_letter_id_is_reported_as_failed() -> None:
    report = retry_dead_letters(ids=[424242])

    assert report.errors == {424242: "No such dead letter"}


def store_raw_event(event_type: str, payload: dict[str, object]) -> None:
    """Insert an event row the way an older version of the application might have."""
    EventRecord.objects.create(
        event_id=uuid4(),
        aggregate_type="Account",
        aggregate_id=uuid4(),
        aggregate_version=1,
        event_type=event_type,
        correlation_id=uuid4(),
        occurred_at=timezone.now(),
        payload=payload,
    )


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_an_event_whose_payload_no_longer_validates_is_dead_lettered_and_skipped(
    store: DjangoEventStore,
) -> None:
    first = open_account(store, "ann")
    store_raw_event("MoneyDeposited", {"amount": "a lot"})
    second = open_account(store, "bob")

    run_projections(once=True)

    assert set(AccountSummary.objects.values_list("account_id", flat=True)) == {first, second}
    letter = DeadLetter.objects.get()
    assert letter.event_type == "MoneyDeposited"
    assert letter.event_data["payload"] == {"amount": "a lot"}
    assert "no longer validates" in letter.error_message
    assert checkpoint_position("AccountSummaryProjection") == store.get_global_position()


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_events_of_unregistered_types_are_skipped_by_projections_that_do_not_handle_them(
    store: DjangoEventStore,
) -> None:
    store_raw_event("AccountRenamedLongAgo", {"name": "x"})
    account = open_account(store, "bob")

    run_projections(once=True)

    assert list(AccountSummary.objects.values_list("account_id", flat=True)) == [account]
    assert not DeadLetter.objects.exists()


@override_settings(EVENTSOURCE_PROJECTIONS=[COUNTING])
def test_an_unregistered_event_type_stops_a_projection_that_wants_every_event(
    store: DjangoEventStore,
) -> None:
    open_account(store)
    store_raw_event("AccountRenamedLongAgo", {"name": "x"})

    with pytest.raises(EventTypeNotFoundError, match="AccountRenamedLongAgo"):
        run_projections(once=True)

    assert checkpoint_position("CountingProjection") == 0


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY, FLAKY])
def test_unknown_projection_names_are_rejected_with_the_configured_ones() -> None:
    with pytest.raises(UnknownProjectionError) as excinfo:
        load_projections(["Nope"])

    assert "'Nope'" in str(excinfo.value)
    assert "AccountSummaryProjection, FlakyLedgerProjection" in str(excinfo.value)


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY, FLAKY])
def test_projections_can_be_selected_by_name_or_dotted_path() -> None:
    selected = load_projections(["FlakyLedgerProjection", SUMMARY])

    assert [p.name for p in selected] == ["FlakyLedgerProjection", "AccountSummaryProjection"]


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_a_projection_held_by_another_runner_is_skipped(store: DjangoEventStore) -> None:
    open_account(store)
    other_runner = exclusivity_for(checkpoint_db(), listen=False)
    assert other_runner.acquire("AccountSummaryProjection")
    try:
        summary = run_projections(once=True)
    finally:
        other_runner.close()

    assert summary.processed == {"AccountSummaryProjection": 0}
    assert not AccountSummary.objects.exists()


@pytest.mark.django_db(transaction=True)
@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_the_loop_follows_new_events_until_asked_to_stop(store: DjangoEventStore) -> None:
    stop = threading.Event()
    results = []
    runner = threading.Thread(
        target=lambda: results.append(run_projections(stop_event=stop, poll_interval=0.05))
    )
    runner.start()
    try:
        account = open_account(store, deposits=(4, 6))
        deadline = time.monotonic() + 10
        while checkpoint_position("AccountSummaryProjection") < store.get_global_position():
            assert time.monotonic() < deadline, "the runner did not pick the events up"
            time.sleep(0.02)
    finally:
        stop.set()
        runner.join(timeout=10)

    assert not runner.is_alive()
    assert results[0].processed == {"AccountSummaryProjection": 3}
    assert AccountSummary.objects.get(account_id=account).balance == Decimal(10)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_on_postgresql_an_append_wakes_the_runner_before_the_poll_interval(
    store: DjangoEventStore,
) -> None:
    stop = threading.Event()
    runner = threading.Thread(target=lambda: run_projections(stop_event=stop, poll_interval=60))
    runner.start()
    try:
        open_account(store)
        deadline = time.monotonic() + 10
        while checkpoint_position("AccountSummaryProjection") < store.get_global_position():
            assert time.monotonic() < deadline, "the runner waited for its poll interval"
            time.sleep(0.02)
        # The runner is now idle in its 60-second wait: only a notification wakes it.
        account = open_account(store, deposits=(3,))
        deadline = time.monotonic() + 10
        while checkpoint_position("AccountSummaryProjection") < store.get_global_position():
            assert time.monotonic() < deadline, "the runner waited for its poll interval"
            time.sleep(0.02)
    finally:
        stop.set()
        runner.join(timeout=10)

    assert AccountSummary.objects.get(account_id=account).balance == Decimal(3)
