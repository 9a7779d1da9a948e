"""The Celery tasks, run by a real worker process."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from django_eventsource import DjangoEventStore
from tests.processes import start_celery_worker, stop
from tests.testapp.models import AccountSummary
from tests.testapp.projections import BATCH_TALLY, SUMMARY, open_account


def test_the_tasks_are_registered_under_their_documented_names() -> None:
    from django_eventsource import tasks

    assert getattr(tasks.run_projections, "name", None) == (
        "django_eventsource.tasks.run_projections"
    )
    assert getattr(tasks.retry_dead_letters, "name", None) == (
        "django_eventsource.tasks.retry_dead_letters"
    )


@pytest.mark.django_db
def test_the_run_projections_task_runs_one_pass_in_process(settings: Any) -> None:
    from django_eventsource.tasks import run_projections

    settings.EVENTSOURCE_PROJECTIONS = [SUMMARY]
    account = open_account(DjangoEventStore(), deposits=(8,))

    result = run_projections.apply().get()  # type: ignore[attr-defined]

    assert result == {"processed": {"AccountSummaryProjection": 2}, "dead_lettered": 0}
    assert AccountSummary.objects.get(account_id=account).balance == Decimal(8)


@pytest.mark.django_db
def test_the_rebuild_task_replays_a_projection_in_large_pages_and_logs_progress(
    settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_eventsource import tasks

    settings.EVENTSOURCE_PROJECTIONS = [BATCH_TALLY]
    settings.EVENTSOURCE_REBUILD_BATCH_SIZE = 3
    accounts = [open_account(DjangoEventStore(), deposits=(2, 3)) for _ in range(3)]
    AccountSummary.objects.all().delete()
    monkeypatch.setattr(tasks._Logged, "__init__", _log_every_batch)

    with caplog.at_level("INFO", logger="django_eventsource"):
        result = tasks.rebuild_projection.apply(args=["BatchTallyProjection"]).get()  # type: ignore[attr-defined]

    assert getattr(tasks.rebuild_projection, "name", None) == (
        "django_eventsource.tasks.rebuild_projection"
    )
    assert result == {"processed": 9, "dead_lettered": 0}
    assert [AccountSummary.objects.get(account_id=a).balance for a in accounts] == [5, 5, 5]
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Rebuilding")]
    assert progress[-1].startswith("Rebuilding BatchTallyProjection: 9 of 9 events")
    assert len(progress) == 3


def _log_every_batch(self: Any, name: str, interval: float = 10.0) -> None:
    self.name, self.interval, self.clock = name, 0.0, lambda: 1.0
    self.started, self.last = 0.0, -1.0


@pytest.mark.slow
@pytest.mark.celery
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_runs_the_projections_task(redis_url: str) -> None:
    from tests.celery_app import app

    queue = f"eventsource-test-{uuid.uuid4().hex}"
    account = open_account(DjangoEventStore(), deposits=(5, 7))
    worker = start_celery_worker(SUMMARY, queue)
    try:
        result = app.send_task("django_eventsource.tasks.run_projections", queue=queue)
        outcome = result.get(timeout=60)
    finally:
        stop(worker)

    assert outcome["processed"] == {"AccountSummaryProjection": 3}
    assert AccountSummary.objects.get(account_id=account).balance == Decimal(12)
