"""The outbox relay (``publish_outbox``): claiming, publishing, backoff, order, concurrency."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from io import StringIO
from typing import Any
from uuid import UUID, uuid4

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import F
from django.test import override_settings
from django.utils import timezone

from django_eventsource import DjangoEventStore, DomainEvent, ExpectedVersion, InMemoryEventBus
from django_eventsource.bus.interface import EventBus, HandlerLike
from django_eventsource.models import OutboxMessage
from django_eventsource.outbox import InMemoryOutboxRepository
from django_eventsource.outbox.relay import backoff_delay, publish_outbox, retry_failed
from django_eventsource.tasks import publish_outbox as publish_outbox_task
from tests.factories import account_history

# Runs the SQL the app writes itself (again with server-side binding in CI).
pytestmark = pytest.mark.own_sql


class RecordingBus(EventBus):
    """Remembers what was published; raises while ``down`` is set."""

    def __init__(self) -> None:
        self.published: list[DomainEvent] = []
        self.down = False
        self.lock = threading.Lock()

    def publish(self, events: Sequence[DomainEvent], background: bool = False) -> None:
        if self.down:
            raise ConnectionError("bus unreachable")
        with self.lock:
            self.published.extend(events)

    def subscribe(self, event_type: type[DomainEvent] | str, handler: HandlerLike) -> None:
        raise NotImplementedError

    def unsubscribe(self, event_type: type[DomainEvent] | str, handler: HandlerLike) -> bool:
        raise NotImplementedError

    def subscribe_to_all_events(self, handler: HandlerLike) -> None:
        raise NotImplementedError

    def unsubscribe_from_all_events(self, handler: HandlerLike) -> bool:
        raise NotImplementedError


def _save(events: list[DomainEvent], using: str | None = None) -> None:
    store = DjangoEventStore(using=using, outbox_enabled=True)
    store.append_events(events[0].aggregate_id, "Account", events, ExpectedVersion.ANY)


def _statuses() -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in OutboxMessage.objects.values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


@pytest.mark.django_db
def test_saved_events_are_published_once_and_marked_published() -> None:
    events = account_history(deposits=3)
    _save(events)
    bus = RecordingBus()

    report = publish_outbox(once=True, bus=bus)

    assert [e.event_id for e in bus.published] == [e.event_id for e in events]
    assert report.published == 4
    assert _statuses() == {"published": 4}
    assert publish_outbox(once=True, bus=bus).published == 0
    assert len(bus.published) == 4


@pytest.mark.django_db
def test_small_batches_still_publish_everything_in_order() -> None:
    first, second = account_history(deposits=4), account_history(deposits=4)
    _save(first)
    _save(second)
    bus = RecordingBus()

    publish_outbox(once=True, bus=bus, batch_size=3)

    for history in (first, second):
        published = [e for e in bus.published if e.aggregate_id == history[0].aggregate_id]
        assert [e.aggregate_version for e in published] == [1, 2, 3, 4, 5]


@pytest.mark.django_db
@override_settings(EVENTSOURCE_OUTBOX_RETRY_BACKOFF=60, EVENTSOURCE_OUTBOX_RETRY_BACKOFF_MAX=60)
def test_a_failing_bus_leaves_rows_pending_with_a_backoff() -> None:
    _save(account_history(deposits=1))
    bus = RecordingBus()
    bus.down = True
    before = timezone.now()

    report = publish_outbox(once=True, bus=bus)

    assert (report.published, report.retried, report.failed) == (0, 2, 0)
    rows = list(OutboxMessage.objects.order_by("id"))
    assert {r.status for r in rows} == {"pending"}
    assert {r.retry_count for r in rows} == {1}
    assert "bus unreachable" in rows[0].last_error
    assert all(r.next_attempt_at is not None and r.next_attempt_at >= before for r in rows)
    assert all(r.claimed_by == "" for r in rows)


@pytest.mark.django_db
@override_settings(EVENTSOURCE_OUTBOX_MAX_ATTEMPTS=2, EVENTSOURCE_OUTBOX_RETRY_BACKOFF=0)
def test_rows_become_failed_after_the_last_attempt_and_retry_failed_revives_them() -> None:
    _save(account_history(deposits=0))
    bus = RecordingBus()
    bus.down = True

    publish_outbox(once=True, bus=bus)
    report = publish_outbox(once=True, bus=bus)

    row = OutboxMessage.objects.get()
    assert report.failed == 1
    assert (row.status, row.retry_count) == ("failed", 2)
    assert publish_outbox(once=True, bus=bus).retried == 0  # failed rows are left alone

    bus.down = False
    assert retry_failed([row.pk]) == 1
    assert publish_outbox(once=True, bus=bus).published == 1
    assert OutboxMessage.objects.get().status == "published"


@pytest.mark.django_db
@override_settings(EVENTSOURCE_OUTBOX_RETRY_BACKOFF=0, EVENTSOURCE_OUTBOX_RETRY_BACKOFF_MAX=0)
def test_a_row_is_given_up_on_after_an_hour_of_failures_not_after_a_number_of_attempts() -> None:
    _save(account_history(deposits=0))
    bus = RecordingBus()
    bus.down = True

    for _ in range(25):
        publish_outbox(once=True, bus=bus)

    row = OutboxMessage.objects.get()
    assert (row.status, row.retry_count) == ("pending", 25)
    assert row.first_failed_at is not None
    # An hour after the first failure, moved back rather than waited for.
    OutboxMessage.objects.update(first_failed_at=F("first_failed_at") - timedelta(hours=1))

    report = publish_outbox(once=True, bus=bus)

    assert (report.failed, report.retried) == (1, 0)
    assert OutboxMessage.objects.get().status == "failed"


@pytest.mark.django_db
@override_settings(EVENTSOURCE_OUTBOX_RETRY_BACKOFF=0, EVENTSOURCE_OUTBOX_RETRY_BACKOFF_MAX=0)
def test_later_events_of_an_aggregate_wait_behind_an_earlier_row_while_it_is_retried() -> None:
    history = account_history(deposits=1)
    _save(history)
    bus = RecordingBus()
    bus.down = True
    for _ in range(12):  # more attempts than the attempt limit of earlier versions
        publish_outbox(once=True, bus=bus)
    # The jitter can make the first row due after the second: it still goes first.
    head = OutboxMessage.objects.filter(event_id=history[0].event_id)
    head.update(next_attempt_at=timezone.now() + timedelta(minutes=5))
    _save(account_history(history[0].aggregate_id, deposits=1, start_version=3))
    bus.down = False

    assert publish_outbox(once=True, bus=bus).published == 0

    head.update(next_attempt_at=None)
    assert publish_outbox(once=True, bus=bus).published == 3
    assert [e.aggregate_version for e in bus.published] == [1, 2, 3]


@pytest.mark.django_db
@override_settings(EVENTSOURCE_OUTBOX_RETRY_BACKOFF=60, EVENTSOURCE_OUTBOX_RETRY_BACKOFF_MAX=60)
def test_a_row_backing_off_holds_back_later_versions_of_its_aggregate_only() -> None:
    stuck, free = account_history(deposits=1), account_history(deposits=1)
    _save(stuck)
    bus = RecordingBus()
    bus.down = True
    publish_outbox(once=True, bus=bus)  # both rows of `stuck` now back off
    OutboxMessage.objects.filter(event_id=stuck[1].event_id).update(next_attempt_at=None)
    _save(free)
    bus.down = False

    publish_outbox(once=True, bus=bus)

    assert [e.event_id for e in bus.published] == [e.event_id for e in free]


@pytest.mark.django_db
def test_a_claim_of_a_dead_relay_is_taken_over_after_its_lease() -> None:
    _save(account_history(deposits=1))
    OutboxMessage.objects.update(
        claimed_by="dead-relay", claimed_at=timezone.now() - timedelta(hours=1)
    )
    bus = RecordingBus()

    with override_settings(
        EVENTSOURCE_OUTBOX_CLAIM_LEASE=7200, EVENTSOURCE_OUTBOX_CLAIM_TIMEOUT=7200
    ):
        assert publish_outbox(once=True, bus=bus).published == 0
    # The lease, not the (longer) claim timeout, decides.
    with override_settings(
        EVENTSOURCE_OUTBOX_CLAIM_LEASE=60, EVENTSOURCE_OUTBOX_CLAIM_TIMEOUT=7200
    ):
        assert publish_outbox(once=True, bus=bus).published == 2


@pytest.mark.django_db
def test_published_rows_past_the_retention_period_are_deleted() -> None:
    _save(account_history(deposits=1))
    publish_outbox(once=True, bus=RecordingBus())
    OutboxMessage.objects.filter(aggregate_version=1).update(
        published_at=timezone.now() - timedelta(days=8)
    )

    with override_settings(EVENTSOURCE_OUTBOX_RETENTION_DAYS=7):
        report = publish_outbox(once=True, bus=RecordingBus())

    assert report.cleaned == 1
    assert list(OutboxMessage.objects.values_list("aggregate_version", flat=True)) == [2]


@pytest.mark.django_db
def test_a_row_that_no_longer_decodes_fails_alone_and_holds_back_its_aggregate() -> None:
    broken, fine = account_history(deposits=1), account_history(deposits=0)
    _save(broken)
    _save(fine)
    OutboxMessage.objects.filter(event_id=broken[0].event_id).update(
        event_data={**broken[0].to_dict(), "event_type": "NoSuchEvent"}
    )
    bus = RecordingBus()

    report = publish_outbox(once=True, bus=bus)

    assert [e.event_id for e in bus.published] == [fine[0].event_id]
    assert report.retried == 1
    row = OutboxMessage.objects.get(event_id=broken[0].event_id)
    assert "NoSuchEvent" in row.last_error
    assert OutboxMessage.objects.get(event_id=broken[1].event_id).retry_count == 0


@pytest.mark.django_db
def test_events_reach_in_memory_bus_subscribers() -> None:
    received: list[UUID] = []
    bus = InMemoryEventBus()
    bus.subscribe_to_all_events(lambda event: received.append(event.event_id))
    events = account_history(deposits=1)
    _save(events)

    publish_outbox(once=True, bus=bus)

    assert received == [e.event_id for e in events]


def test_the_relay_runs_on_the_in_memory_outbox_without_a_database() -> None:
    repo = InMemoryOutboxRepository()
    events = account_history(deposits=2)
    for event in events:
        repo.add_event(event)
    bus = RecordingBus()

    report = publish_outbox(once=True, bus=bus, repository=repo)

    assert report.published == 3
    assert bus.published == events


@pytest.mark.django_db
def test_the_loop_stops_when_the_stop_event_is_set_and_reports_progress() -> None:
    _save(account_history(deposits=1))
    stop = threading.Event()
    seen: list[int] = []

    def progress(report: Any) -> None:
        seen.append(report.published)
        stop.set()

    report = publish_outbox(bus=RecordingBus(), stop_event=stop, progress=progress)

    assert report.published == 2
    assert seen == [2]


def test_backoff_grows_exponentially_and_respects_the_cap() -> None:
    delays = [backoff_delay(n, base=1.0, cap=8.0) for n in range(1, 8) for _ in range(50)]

    assert all(0 <= d <= 8.0 for d in delays)
    assert max(backoff_delay(1, base=1.0, cap=8.0) for _ in range(50)) <= 1.0
    assert max(delays) > 4.0  # later attempts may wait longer


@pytest.mark.django_db
@override_settings(EVENTSOURCE_EVENT_BUS="memory")
def test_the_command_publishes_and_prints_a_summary() -> None:
    _save(account_history(deposits=1))
    out = StringIO()

    call_command("publish_outbox", once=True, stdout=out)

    assert "published 2" in out.getvalue()
    assert _statuses() == {"published": 2}


@pytest.mark.django_db
@override_settings(EVENTSOURCE_EVENT_BUS=None)
def test_the_command_explains_that_no_bus_is_configured() -> None:
    with pytest.raises(CommandError, match="EVENTSOURCE_EVENT_BUS"):
        call_command("publish_outbox", once=True)


@pytest.mark.django_db
@override_settings(EVENTSOURCE_EVENT_BUS="memory")
def test_the_celery_task_publishes_what_is_due() -> None:
    _save(account_history(deposits=0))

    result = publish_outbox_task(batch_size=10)

    assert result["published"] == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_relays_at_once_publish_every_row_exactly_once() -> None:
    histories = [account_history(aggregate_id=uuid4(), deposits=9) for _ in range(10)]
    for history in histories:
        _save(history)
    bus = RecordingBus()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def relay() -> None:
        try:
            barrier.wait(timeout=10)
            publish_outbox(once=True, bus=bus, batch_size=7)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=relay) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert errors == []
    published = [e.event_id for e in bus.published]
    assert len(published) == len(set(published)) == 100
    for history in histories:
        versions = [
            e.aggregate_version for e in bus.published if e.aggregate_id == history[0].aggregate_id
        ]
        assert versions == list(range(1, 11))


@pytest.mark.django_db(transaction=True)  # the loop closes stale connections between passes
def test_a_stopped_relay_gives_back_the_batch_it_claimed_ahead() -> None:
    for _ in range(3):
        _save(account_history(deposits=1))  # three aggregates, two events each
    bus = RecordingBus()
    stop = threading.Event()

    # Stop as soon as the first batch is published: the relay has then already claimed
    # the next batch (marking and claiming share one transaction).
    report = publish_outbox(batch_size=2, bus=bus, stop_event=stop, progress=lambda _: stop.set())

    assert report.published == 2
    unpublished = OutboxMessage.objects.exclude(status=OutboxMessage.Status.PUBLISHED)
    assert unpublished.count() == 4
    assert not unpublished.exclude(claimed_by="").exists()
    assert publish_outbox(once=True, bus=bus).published == 4  # at once, no claim timeout
    assert len(bus.published) == 6


class SerializedRecordingBus(RecordingBus):
    """A bus with the serialized path, so the relay overlaps publishing and claiming.

    ``fail_calls`` makes the given calls (counted from 1) raise.
    """

    def __init__(self, fail_calls: Sequence[int] = ()) -> None:
        super().__init__()
        self.payloads: list[dict[str, Any]] = []
        self.threads: set[str] = set()
        self.calls = 0
        self.fail_calls = set(fail_calls)

    def publish_serialized(self, events: Sequence[Mapping[str, Any]]) -> None:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.down or self.calls in self.fail_calls:
            raise ConnectionError("bus unreachable")
        self.payloads.extend(dict(event) for event in events)


def _published_versions(bus: SerializedRecordingBus, aggregate_id: UUID) -> list[int]:
    return [p["aggregate_version"] for p in bus.payloads if p["aggregate_id"] == str(aggregate_id)]


@pytest.mark.django_db
def test_with_a_serialized_bus_batches_go_out_from_a_worker_thread_in_order() -> None:
    histories = [account_history(deposits=4) for _ in range(4)]
    for history in histories:
        _save(history)
    bus = SerializedRecordingBus()

    report = publish_outbox(once=True, bus=bus, batch_size=3)

    assert report.published == 20
    assert _statuses() == {"published": 20}
    assert not OutboxMessage.objects.exclude(claimed_by="").exists()
    assert len({p["event_id"] for p in bus.payloads}) == len(bus.payloads) == 20
    for history in histories:
        assert _published_versions(bus, history[0].aggregate_id) == [1, 2, 3, 4, 5]
    assert threading.current_thread().name not in bus.threads
    saved = {str(e.event_id): e.to_dict() for history in histories for e in history}
    assert all(payload == saved[payload["event_id"]] for payload in bus.payloads)


@pytest.mark.django_db
@override_settings(EVENTSOURCE_OUTBOX_RETRY_BACKOFF=60, EVENTSOURCE_OUTBOX_RETRY_BACKOFF_MAX=60)
def test_a_failed_batch_is_not_overtaken_by_a_batch_claimed_while_it_was_sent() -> None:
    stuck, other = account_history(deposits=3), account_history(deposits=3)
    _save(stuck)  # rows 1-4
    _save(other)  # rows 5-8
    bus = SerializedRecordingBus(fail_calls=[1])

    # Batch 1 (stuck v1-3) fails; batch 2 is claimed while batch 1 is being sent, so it
    # must leave out stuck v4, whose predecessors are still held.
    report = publish_outbox(once=True, bus=bus, batch_size=3)

    assert (report.published, report.retried) == (4, 3)
    assert _published_versions(bus, stuck[0].aggregate_id) == []
    assert _published_versions(bus, other[0].aggregate_id) == [1, 2, 3, 4]
    pending = OutboxMessage.objects.filter(status="pending")
    assert sorted(pending.values_list("aggregate_version", flat=True)) == [1, 2, 3, 4]
    assert not OutboxMessage.objects.exclude(claimed_by="").exists()


@pytest.mark.django_db(transaction=True)  # the loop closes stale connections between passes
def test_a_stopped_overlapping_relay_marks_what_the_bus_accepted_and_gives_back_the_rest() -> None:
    for _ in range(4):
        _save(account_history(deposits=1))  # four aggregates, two events each
    bus = SerializedRecordingBus()
    stop = threading.Event()

    # Stop after the first batch: the bus has accepted it and the next batch is claimed.
    report = publish_outbox(batch_size=2, bus=bus, stop_event=stop, progress=lambda _: stop.set())

    accepted = {p["event_id"] for p in bus.payloads}
    published = OutboxMessage.objects.filter(status=OutboxMessage.Status.PUBLISHED)
    assert report.published == len(accepted) == 2
    assert {str(e) for e in published.values_list("event_id", flat=True)} == accepted
    assert not OutboxMessage.objects.exclude(claimed_by="").exists()
    assert publish_outbox(once=True, bus=bus).published == 6  # at once, no claim timeout
    assert len(bus.payloads) == 8
