"""``EventSavepoint``: the per-event savepoint of the projection runner."""

from __future__ import annotations

from uuid import uuid4

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_eventsource import DjangoEventStore
from django_eventsource.projections.batch import EventSavepoint
from django_eventsource.projections.runner import run_projections
from tests.testapp.models import HandledEvent
from tests.testapp.projections import COUNTING, SUMMARY, open_account

# on_commit callbacks must really run.
pytestmark = [pytest.mark.own_sql, pytest.mark.django_db(transaction=True)]


def _row(name: str = "p") -> HandledEvent:
    return HandledEvent.objects.create(projection=name, event_id=uuid4())


def test_a_failing_block_leaves_no_writes_and_the_transaction_goes_on() -> None:
    with transaction.atomic():
        kept = _row("kept")
        with pytest.raises(ValueError), EventSavepoint("default"):
            _row("dropped")
            with transaction.atomic():  # a handler's own atomic block, committed inside
                _row("dropped")
            raise ValueError("boom")
        after = _row("after")

    assert sorted(HandledEvent.objects.values_list("pk", flat=True)) == [kept.pk, after.pk]


def test_a_handler_whose_first_query_opens_its_own_atomic_block_is_rolled_back_whole() -> None:
    with transaction.atomic():
        with pytest.raises(ValueError), EventSavepoint("default"):
            with transaction.atomic():  # the lazy savepoint is created around this one
                _row("dropped")
            _row("dropped")
            raise ValueError("boom")
        after = _row("after")

    assert list(HandledEvent.objects.values_list("pk", flat=True)) == [after.pk]


def test_writes_of_a_successful_block_commit_with_the_transaction() -> None:
    with transaction.atomic():
        with EventSavepoint("default"):
            _row()
        with EventSavepoint("default"):
            _row()

    assert HandledEvent.objects.count() == 2


@pytest.mark.parametrize("query_first", [False, True], ids=["no-query-yet", "after-a-query"])
def test_on_commit_callbacks_of_a_failing_block_are_dropped(query_first: bool) -> None:
    ran: list[str] = []
    with transaction.atomic():
        transaction.on_commit(lambda: ran.append("outer"))
        with pytest.raises(ValueError), EventSavepoint("default"):
            transaction.on_commit(lambda: ran.append("failed, registered first"))
            if query_first:
                _row()
            transaction.on_commit(lambda: ran.append("failed, registered last"))
            raise ValueError("boom")
        with EventSavepoint("default"):
            transaction.on_commit(lambda: ran.append("succeeded"))

    assert ran == ["outer", "succeeded"]


def test_a_block_that_runs_no_query_sends_no_savepoint() -> None:
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        with EventSavepoint("default"):
            pass
        with pytest.raises(ValueError), EventSavepoint("default"):
            raise ValueError("boom")
        with EventSavepoint("default"):
            HandledEvent.objects.count()

    sql = [q["sql"].upper() for q in queries.captured_queries]
    assert sum("SAVEPOINT" in s for s in sql) == 2  # SAVEPOINT + RELEASE, only for the third
    assert sql[0].startswith("SAVEPOINT")


def test_it_refuses_to_run_outside_a_transaction() -> None:
    with pytest.raises(transaction.TransactionManagementError), EventSavepoint("default"):
        pass


@override_settings(EVENTSOURCE_PROJECTIONS=[COUNTING])
def test_a_batch_of_handlers_that_run_no_query_costs_the_same_statements_at_any_size() -> None:
    store = DjangoEventStore()
    open_account(store, "setup")
    run_projections(once=True)  # creates the checkpoint row

    def statements_for_one_batch(deposits: int) -> int:
        open_account(store, "ann", deposits=tuple(range(1, deposits + 1)))
        with CaptureQueriesContext(connection) as queries:
            run_projections(once=True, batch_size=1000)
        return len(queries.captured_queries)

    assert statements_for_one_batch(3) == statements_for_one_batch(60)


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_handlers_that_write_still_get_one_savepoint_each() -> None:
    store = DjangoEventStore()
    run_projections(once=True)  # creates the checkpoint row
    open_account(store, "ann", deposits=(1, 2, 3))

    with CaptureQueriesContext(connection) as queries:
        run_projections(once=True)

    savepoints = [q for q in queries.captured_queries if q["sql"].upper().startswith("SAVEPOINT")]
    assert len(savepoints) == 4  # one per event: opened + three deposits
