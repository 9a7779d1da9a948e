"""Operators get one structured log line per batch, retry, dead letter and outbox failure."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from django.db import OperationalError, connection
from django.test import override_settings

from django_eventsource import AggregateRepository, DjangoEventStore, DomainEvent
from django_eventsource.bus.memory import InMemoryEventBus
from django_eventsource.exceptions import EventBusError
from django_eventsource.models import DeadLetter
from django_eventsource.outbox.relay import publish_outbox
from django_eventsource.projections.django_dead_letters import DjangoDLQRepository
from django_eventsource.projections.runner import run_projections
from tests.testapp import projections
from tests.testapp.domain import Account

pytestmark = pytest.mark.django_db

#: An owner name that must never show up in INFO (or lower) log records.
SECRET_OWNER = "Ada-4e1c-private"

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _extra(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name.startswith("django_eventsource") and r.levelno == level
    ]


def _save_account(deposits: int = 1, outbox: bool = False) -> Account:
    repo = AggregateRepository(DjangoEventStore(outbox_enabled=outbox), Account)
    account = repo.create_new(uuid4())
    account.open(SECRET_OWNER)
    for n in range(deposits):
        account.deposit(Decimal(n + 1))
    repo.save(account)
    return account


class _BrokenBus(InMemoryEventBus):
    def publish(self, events: Sequence[DomainEvent], background: bool = False) -> None:
        raise EventBusError("broker is down")


@override_settings(EVENTSOURCE_PROJECTIONS=[projections.SUMMARY])
def test_each_projection_batch_logs_one_line_with_its_positions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _save_account(deposits=2)
    caplog.set_level(logging.DEBUG, logger="django_eventsource")

    run_projections(once=True)

    (line,) = [r for r in _records(caplog, logging.INFO) if "processed" in r.getMessage()]
    extra = _extra(line)
    assert extra["projection"] == "AccountSummaryProjection"
    assert extra["count"] == 3
    assert extra["from_position"] == 0
    assert extra["to_position"] == DjangoEventStore().get_global_position()


@override_settings(
    EVENTSOURCE_PROJECTIONS=[projections.FLAKY],
    EVENTSOURCE_MAX_RETRIES=3,
    EVENTSOURCE_RETRY_BACKOFF=0,
)
def test_each_retry_and_the_dead_letter_log_the_event_id_and_position(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    monkeypatch.setattr(projections, "POISON_AMOUNTS", {Decimal(1)})
    account = _save_account(deposits=1)
    caplog.set_level(logging.INFO, logger="django_eventsource")

    with django_capture_on_commit_callbacks(execute=True):
        run_projections(once=True)

    deposit = DjangoEventStore().get_events(account.aggregate_id, "Account").events[-1]
    retries = _records(caplog, logging.WARNING)
    assert [_extra(r)["attempt"] for r in retries] == [1, 2, 3]
    assert {_extra(r)["event_id"] for r in retries} == {str(deposit.event_id)}
    (dead_letter,) = _records(caplog, logging.ERROR)
    extra = _extra(dead_letter)
    assert extra["event_id"] == str(deposit.event_id)
    assert extra["projection"] == "FlakyLedgerProjection"
    assert extra["attempts"] == 3
    assert isinstance(extra["position"], int) and extra["position"] > 0


def _fail_the_dead_letter_commit(monkeypatch: pytest.MonkeyPatch, stop: threading.Event) -> None:
    """Make the commit of the batch that wrote a dead letter fail, as when the database
    goes away at COMMIT, and ask the runner to stop afterwards."""
    real_commit = connection.commit

    def commit() -> None:
        if DeadLetter.objects.exists():  # written by this batch, not committed yet
            stop.set()
            raise OperationalError("server closed the connection unexpectedly")
        real_commit()

    monkeypatch.setattr(connection, "commit", commit)


def _fail_the_dead_letter_write(monkeypatch: pytest.MonkeyPatch, stop: threading.Event) -> None:
    """Make writing the dead letter fail, as when the database goes away mid-batch."""

    def add_failed_event(self: DjangoDLQRepository, *args: Any, **kwargs: Any) -> int:
        stop.set()
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(DjangoDLQRepository, "add_failed_event", add_failed_event)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "failure",
    [_fail_the_dead_letter_commit, _fail_the_dead_letter_write],
    ids=["commit-fails", "dead-letter-write-fails"],
)
@override_settings(
    EVENTSOURCE_PROJECTIONS=[projections.FLAKY],
    EVENTSOURCE_MAX_RETRIES=1,
    EVENTSOURCE_RETRY_BACKOFF=0,
)
def test_a_dead_letter_rolled_back_with_its_batch_is_not_logged_as_dead_lettered(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    failure: Callable[[pytest.MonkeyPatch, threading.Event], None],
) -> None:
    monkeypatch.setattr(projections, "POISON_AMOUNTS", {Decimal(1)})
    _save_account(deposits=1)
    caplog.set_level(logging.INFO, logger="django_eventsource")
    stop = threading.Event()
    failure(monkeypatch, stop)

    run_projections(stop_event=stop, poll_interval=0)

    assert not DeadLetter.objects.exists()
    assert _records(caplog, logging.ERROR) == []
    (outage,) = _records(caplog, logging.WARNING)[-1:]
    assert "rolled back and will be retried" in outage.getMessage()

    monkeypatch.undo()
    monkeypatch.setattr(projections, "POISON_AMOUNTS", {Decimal(1)})
    caplog.clear()
    run_projections(once=True)

    assert DeadLetter.objects.count() == 1
    (dead_letter,) = _records(caplog, logging.ERROR)
    assert "dead-lettered" in dead_letter.getMessage()


@override_settings(EVENTSOURCE_OUTBOX_RETRY_BACKOFF=0, EVENTSOURCE_OUTBOX_RETRY_BACKOFF_MAX=0)
def test_each_failed_outbox_row_logs_its_event_id(caplog: pytest.LogCaptureFixture) -> None:
    account = _save_account(deposits=1, outbox=True)
    event_ids = {
        str(e.event_id)
        for e in DjangoEventStore().get_events(account.aggregate_id, "Account").events
    }
    caplog.set_level(logging.INFO, logger="django_eventsource")

    report = publish_outbox(once=True, bus=_BrokenBus())

    assert report.retried == 2
    per_row = [r for r in _records(caplog, logging.WARNING) if "event_id" in _extra(r)]
    assert {_extra(r)["event_id"] for r in per_row} == event_ids
    assert all("broker is down" in r.getMessage() for r in per_row)
    assert all(_extra(r)["attempt"] == 1 for r in per_row)


@override_settings(
    EVENTSOURCE_PROJECTIONS=[projections.SUMMARY, projections.FLAKY],
    EVENTSOURCE_MAX_RETRIES=1,
)
def test_no_info_line_carries_an_event_payload(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projections, "POISON_AMOUNTS", {Decimal(1)})
    caplog.set_level(logging.DEBUG, logger="django_eventsource")

    _save_account(deposits=1, outbox=True)
    run_projections(once=True)
    publish_outbox(once=True, bus=InMemoryEventBus())

    low = [
        r
        for r in caplog.records
        if r.name.startswith("django_eventsource") and r.levelno <= logging.INFO
    ]
    assert low, "the pipeline logged nothing at INFO"
    for record in low:
        assert SECRET_OWNER not in record.getMessage()
        assert SECRET_OWNER not in repr(_extra(record))


@pytest.mark.redis
def test_a_failing_redis_message_logs_each_redelivery_and_its_dead_letter(
    caplog: pytest.LogCaptureFixture, redis_url: str
) -> None:
    from django_eventsource.bus.redis import RedisEventBus, RedisEventBusConfig
    from tests.testapp.domain import AccountOpened

    config = RedisEventBusConfig(
        redis_url=redis_url,
        stream_prefix=f"test-{uuid4().hex}",
        max_retries=2,
        claim_idle_ms=0,
    )
    bus = RedisEventBus(config)

    def refuse(event: DomainEvent) -> None:
        raise RuntimeError("mailbox full")

    bus.subscribe(AccountOpened, refuse)
    event = AccountOpened(aggregate_id=uuid4(), owner=SECRET_OWNER)
    caplog.set_level(logging.INFO, logger="django_eventsource")
    try:
        bus.publish([event])
        bus.consume_once()  # first delivery fails: left pending
        bus.consume_once()  # claimed again, fails again: dead-lettered
    finally:
        bus.client.delete(config.stream_name, config.dead_letter_stream)
        bus.close()

    (retry,) = [r for r in _records(caplog, logging.WARNING) if "deliveries" in _extra(r)]
    assert _extra(retry)["event_id"] == str(event.event_id)
    assert _extra(retry)["deliveries"] == 1
    (dead,) = [r for r in _records(caplog, logging.ERROR) if "stream" in _extra(r)]
    assert _extra(dead)["event_id"] == str(event.event_id)
    assert _extra(dead)["deliveries"] == 2
    assert _extra(dead)["stream"] == config.dead_letter_stream
    assert all(SECRET_OWNER not in r.getMessage() for r in caplog.records)
