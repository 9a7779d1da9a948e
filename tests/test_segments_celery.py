"""Celery: a dispatcher task queues one ``run_projections`` task per unit."""

from __future__ import annotations

import time
import uuid

import pytest

from django_eventsource import DjangoEventStore
from django_eventsource.models import Checkpoint, EventRecord
from django_eventsource.projections.segments import unit_name
from tests.processes import start_celery_worker, stop
from tests.test_segments import append_accounts, assert_exact
from tests.testapp.segmented import SEGMENTED


def test_the_dispatcher_is_registered_under_its_documented_name() -> None:
    from django_eventsource import tasks

    assert getattr(tasks.dispatch_projections, "name", None) == (
        "django_eventsource.tasks.dispatch_projections"
    )


@pytest.mark.slow
@pytest.mark.celery
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_one_task_per_unit_queued_by_the_dispatcher(redis_url: str) -> None:
    from tests.celery_app import app

    queue = f"eventsource-test-{uuid.uuid4().hex}"
    store = DjangoEventStore()
    append_accounts(store, accounts=20, deposits=2)
    worker = start_celery_worker(SEGMENTED, queue)
    units = [unit_name("SegmentedTally", index, 4) for index in range(4)]
    try:
        result = app.send_task("django_eventsource.tasks.dispatch_projections", queue=queue)
        assert result.get(timeout=60) == units
        total = EventRecord.objects.count()
        rows = Checkpoint.objects.filter(projection_name__in=units)
        deadline = time.monotonic() + 60
        while sum(rows.values_list("events_processed", flat=True)) < total:
            assert time.monotonic() < deadline, "the unit tasks did not finish"
            assert worker.poll() is None
            time.sleep(0.05)
    finally:
        stop(worker)

    assert set(rows.filter(events_processed__gt=0).values_list("projection_name", flat=True)) == (
        set(units)
    )
    assert_exact(store)
