"""What operators and monitoring see from the commands: exit statuses, the status report
as text and JSON, start lines, progress on a terminal and in a log, skipped projections."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any
from uuid import uuid4

import pytest
from django.core.management import CommandError, call_command
from django.db import router
from django.test import override_settings
from django.utils import timezone

from django_eventsource import DjangoEventStore
from django_eventsource.management.exit_codes import PROBLEM
from django_eventsource.models import Checkpoint, OutboxMessage
from django_eventsource.projections.exclusivity import exclusive
from tests.testapp.projections import FLAKY, SUMMARY, open_account

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("poison")]


class Terminal(StringIO):
    """Captured output that says it is a terminal, as a shell's stdout would."""

    def isatty(self) -> bool:
        return True


def run(*args: Any, stdout: StringIO | None = None, **options: Any) -> tuple[int, str]:
    """Run a command as ``manage.py`` would; its exit status and its output."""
    out = stdout if stdout is not None else StringIO()
    try:
        call_command(*args, stdout=out, **options)
    except SystemExit as exit_:
        code = exit_.code
        assert isinstance(code, int)
        return code, out.getvalue()
    return 0, out.getvalue()


def failed_outbox_row() -> OutboxMessage:
    return OutboxMessage.objects.create(
        event_id=uuid4(),
        event_type="AccountOpened",
        aggregate_id=uuid4(),
        aggregate_type="Account",
        status=OutboxMessage.Status.FAILED,
        last_error="ConnectionError: bus down",
    )


# -- eventsource_status ---------------------------------------------------------------------


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_status_exits_0_and_says_ok_when_all_is_well(store: DjangoEventStore) -> None:
    open_account(store, deposits=(5,))
    assert run("run_projections", once=True)[0] == 0

    code, output = run("eventsource_status")

    assert code == 0
    assert output.rstrip().endswith("OK")
    assert "Problem" not in output


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_status_at_verbosity_0_prints_nothing_when_all_is_well(store: DjangoEventStore) -> None:
    open_account(store)
    run("run_projections", once=True)

    assert run("eventsource_status", verbosity=0) == (0, "")


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY, FLAKY])
def test_dead_letters_are_a_problem_exit_3_and_verbosity_0_prints_only_problems(
    store: DjangoEventStore, poison: set[Any]
) -> None:
    from decimal import Decimal

    poison.add(Decimal(13))
    open_account(store, deposits=(13,))
    code, _ = run("run_projections", once=True)
    assert code == PROBLEM

    code, output = run("eventsource_status", verbosity=0)

    assert code == PROBLEM == 3
    assert output.splitlines() == [
        "Problem: 1 failed dead letter(s) (limit 0): see retry_dead_letters"
    ]


@override_settings(EVENTSOURCE_PROJECTIONS=[])
def test_failed_outbox_rows_are_a_problem() -> None:
    failed_outbox_row()

    code, output = run("eventsource_status")

    assert code == PROBLEM
    assert "Outbox: 0 pending, 1 failed" in output
    assert "Problem: 1 outbox row(s) failed" in output


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY], EVENTSOURCE_HEALTH_MAX_LAG_EVENTS=2)
def test_a_projection_past_the_lag_threshold_is_a_problem(store: DjangoEventStore) -> None:
    open_account(store, deposits=(1, 2, 3))
    head = store.get_global_position()  # never ran: behind by every position

    code, output = run("eventsource_status")

    assert code == PROBLEM
    assert f"Problem: projection AccountSummaryProjection is {head} events behind (limit 2)" in (
        output
    )
    run("run_projections", once=True)
    assert run("eventsource_status")[0] == 0


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY], EVENTSOURCE_HEALTH_MAX_LAG_SECONDS=60)
def test_a_projection_whose_oldest_unread_event_is_too_old_is_a_problem(
    store: DjangoEventStore,
) -> None:
    open_account(store)
    from django_eventsource.models import EventRecord

    EventRecord.objects.update(recorded_at=timezone.now() - timedelta(minutes=10))

    code, output = run("eventsource_status", verbosity=0)

    assert code == PROBLEM
    assert "AccountSummaryProjection is 600s behind (limit 60s)" in output


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_json_lists_problems_by_kind_for_scripts(store: DjangoEventStore) -> None:
    open_account(store)
    run("run_projections", once=True)
    failed_outbox_row()

    code, output = run("eventsource_status", format="json")

    assert code == PROBLEM
    data = json.loads(output)
    assert data["status"] == "unhealthy"
    assert data["healthy"] is False
    assert [p["kind"] for p in data["problems"]] == ["outbox_failed"]
    assert data["outbox_failed"] == 1
    (projection,) = data["projections"]
    assert projection["name"] == "AccountSummaryProjection"
    assert projection["lag_events"] == 0


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_json_of_a_healthy_system_exits_0(store: DjangoEventStore) -> None:
    open_account(store)
    run("run_projections", once=True)

    code, output = run("eventsource_status", "--format", "json")

    assert code == 0
    assert json.loads(output)["problems"] == []


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_the_safe_high_water_mark_shown_is_never_below_a_checkpoint(
    store: DjangoEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_account(store, deposits=(1, 2))
    run("run_projections", once=True)
    head = store.get_global_position()
    # Measured while a writer holds a position open, the mark reads lower than what the
    # runner had already reached.
    monkeypatch.setattr(DjangoEventStore, "safe_high_water_mark", lambda self: head - 2)

    _, output = run("eventsource_status")
    _, as_json = run("eventsource_status", format="json")

    assert f"Events: {head} stored, safe high-water mark {head}" in output
    assert json.loads(as_json)["safe_high_water_mark"] == head


def test_an_unknown_format_is_a_usage_error() -> None:
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("eventsource_status", "--format", "yaml")


# -- run_projections --------------------------------------------------------------------------


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_run_projections_once_says_what_it_catches_up_then_its_progress_in_a_log(
    store: DjangoEventStore,
) -> None:
    open_account(store, deposits=(1, 2))
    head = store.get_global_position()  # 3 on a fresh table; the sequence may be further

    code, output = run("run_projections", once=True)

    assert code == 0
    lines = output.splitlines()
    assert lines[0] == (
        "Catching up 1 projection(s) (AccountSummaryProjection); "
        f"{head} event position(s) behind the newest event."
    )
    # Not a terminal: plain lines, no carriage return, the final one with the totals.
    assert "\r" not in output
    assert any(line.startswith(f"Catching up: {head}/{head} events (100%)") for line in lines)
    assert "Processed 3 events." in lines[-1]


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_run_projections_on_a_terminal_draws_a_bar_in_place(store: DjangoEventStore) -> None:
    open_account(store, deposits=(1, 2))
    head = store.get_global_position()

    code, output = run("run_projections", once=True, stdout=Terminal(), batch_size=1)

    assert code == 0
    assert f"\rCatching up: [########################] {head}/{head} events (100%)" in output
    assert "Processed 3 events." in output


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY, FLAKY])
def test_run_projections_once_exits_3_when_it_dead_lettered_events(
    store: DjangoEventStore, poison: set[Any]
) -> None:
    from decimal import Decimal

    poison.add(Decimal(13))
    open_account(store, deposits=(13,))

    code, output = run("run_projections", once=True)

    assert code == PROBLEM
    assert "1 events dead-lettered" in output
    # Nothing new to dead-letter on the next pass: success again.
    assert run("run_projections", once=True)[0] == 0


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY, FLAKY])
def test_run_projections_says_when_another_runner_holds_a_projection(
    store: DjangoEventStore,
) -> None:
    open_account(store, deposits=(1,))
    using = router.db_for_write(Checkpoint)

    with exclusive("FlakyLedgerProjection", using):
        code, output = run("run_projections", once=True)

    assert code == 0
    assert "FlakyLedgerProjection: skipped, another runner holds it" in output
    assert "AccountSummaryProjection: 2 events" in output


def test_run_projections_at_verbosity_0_prints_nothing(store: DjangoEventStore) -> None:
    with override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY]):
        open_account(store)
        assert run("run_projections", once=True, verbosity=0) == (0, "")


def test_an_unknown_projection_exits_with_an_error() -> None:
    with (
        override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY]),
        pytest.raises(CommandError, match="Nope"),
    ):
        call_command("run_projections", "--once", "--projection", "Nope")


# -- publish_outbox and consume_events ----------------------------------------------------------


def _pending_rows(store: DjangoEventStore, accounts: int) -> None:
    with override_settings(EVENTSOURCE_OUTBOX_ENABLED=True):
        for _ in range(accounts):
            open_account(store, deposits=(1,))


@override_settings(EVENTSOURCE_EVENT_BUS="memory")
def test_publish_outbox_says_what_it_publishes_then_the_backlog_progress(
    store: DjangoEventStore,
) -> None:
    _pending_rows(store, 3)
    assert OutboxMessage.objects.pending().count() == 6

    code, output = run("publish_outbox", once=True, batch_size=2)

    assert code == 0
    lines = output.splitlines()
    assert lines[0] == (
        "Publishing 6 pending outbox row(s) to InMemoryEventBus in batches of 2, then exiting."
    )
    assert any(line.startswith("Outbox backlog: 6/6 rows (100%)") for line in lines)
    assert lines[-1] == "published 6, retried 0, failed 0, cleaned 0"


@override_settings(EVENTSOURCE_EVENT_BUS="memory")
def test_publish_outbox_on_a_terminal_draws_the_backlog_bar(store: DjangoEventStore) -> None:
    _pending_rows(store, 2)

    code, output = run("publish_outbox", once=True, stdout=Terminal())

    assert code == 0
    assert "\rOutbox backlog: [########################] 4/4 rows (100%)" in output


@override_settings(EVENTSOURCE_EVENT_BUS="memory")
def test_publish_outbox_with_nothing_to_do_says_so() -> None:
    code, output = run("publish_outbox", once=True)

    assert code == 0
    assert output.startswith("Publishing 0 pending outbox row(s)")
    assert output.splitlines()[-1] == "published 0, retried 0, failed 0, cleaned 0"
