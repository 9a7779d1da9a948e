"""The projection management commands: run_projections, reset_projection,
retry_dead_letters and eventsource_status."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO
from typing import Any
from uuid import uuid4

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from django_eventsource import DjangoEventStore
from django_eventsource.models import Checkpoint, DeadLetter, OutboxMessage
from tests.testapp.models import AccountSummary, HandledEvent
from tests.testapp.projections import FLAKY, SUMMARY, open_account

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("poison"),
]


def run(*args: Any, **options: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


def run_reporting_a_problem(*args: Any, **options: Any) -> str:
    """Run a command that must end with exit status 3 (a problem reported); its output."""
    out = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command(*args, stdout=out, **options)
    assert exit_info.value.code == 3
    return out.getvalue()


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY, FLAKY])
def test_run_projections_once_processes_every_projection_and_reports_counts(
    store: DjangoEventStore,
) -> None:
    account = open_account(store, deposits=(4,))

    output = run("run_projections", once=True)

    assert "AccountSummaryProjection: 2 events" in output
    assert "FlakyLedgerProjection: 2 events" in output
    assert AccountSummary.objects.get(account_id=account).balance == Decimal(4)


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY, FLAKY])
def test_run_projections_can_be_limited_to_named_projections(store: DjangoEventStore) -> None:
    open_account(store, deposits=(4,))

    run("run_projections", once=True, projections=["FlakyLedgerProjection"], batch_size=1)

    assert set(HandledEvent.objects.values_list("projection", flat=True)) == {
        "FlakyLedgerProjection"
    }


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_run_projections_is_quiet_at_verbosity_zero(store: DjangoEventStore) -> None:
    open_account(store)

    assert run("run_projections", once=True, verbosity=0) == ""


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_run_projections_rejects_an_unknown_projection_listing_the_configured_ones() -> None:
    with pytest.raises(CommandError, match="'Nope'; configured: AccountSummaryProjection"):
        run("run_projections", "--once", "--projection", "Nope")


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_run_projections_rejects_a_batch_size_below_one() -> None:
    with pytest.raises(CommandError, match="--batch-size"):
        run("run_projections", "--once", "--batch-size", "0")


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY], EVENTSOURCE_REBUILD_BATCH_SIZE=2)
def test_reset_projection_with_rebuild_replays_everything_showing_progress(
    store: DjangoEventStore,
) -> None:
    account = open_account(store, deposits=(1, 2, 3))
    run("run_projections", once=True)
    AccountSummary.objects.update(balance=999)

    output = run("reset_projection", "AccountSummaryProjection", "--rebuild", "--no-input")

    # Not a terminal: no redrawn bar, one plain line at the end.
    progress = [line for line in output.splitlines() if line.startswith("Rebuilding")]
    assert len(progress) == 1
    assert "4/4 events (100%)" in progress[0] and "/s in " in progress[0]
    assert "\r" not in output
    assert "Rebuilt AccountSummaryProjection: replayed 4 events." in output
    assert AccountSummary.objects.get(account_id=account).balance == Decimal(6)
    assert HandledEvent.objects.count() == 4


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_reset_projection_rebuild_on_a_terminal_draws_a_bar_with_the_rate(
    store: DjangoEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_account(store, deposits=(1, 2, 3))
    out = StringIO()
    monkeypatch.setattr(out, "isatty", lambda: True, raising=False)

    call_command(
        "reset_projection", "AccountSummaryProjection", "--rebuild", "--no-input", stdout=out
    )

    assert "\r" in out.getvalue()
    assert "[########################] 4/4 events (100%)" in out.getvalue()


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_reset_projection_rejects_a_zero_batch_size() -> None:
    with pytest.raises(CommandError, match="--batch-size"):
        run(
            "reset_projection",
            "AccountSummaryProjection",
            "--rebuild",
            "--no-input",
            "--batch-size",
            "0",
        )


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_reset_projection_without_rebuild_empties_the_read_model_and_checkpoint(
    store: DjangoEventStore,
) -> None:
    open_account(store)
    run("run_projections", once=True)

    run("reset_projection", "AccountSummaryProjection", no_input=True, interactive=False)

    assert not AccountSummary.objects.exists()
    assert Checkpoint.objects.get(projection_name="AccountSummaryProjection").position == 0


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_reset_projection_asks_for_confirmation(
    store: DjangoEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_account(store)
    run("run_projections", once=True)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "no")

    with pytest.raises(CommandError, match="cancelled"):
        run("reset_projection", "AccountSummaryProjection")

    assert AccountSummary.objects.exists()


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_reset_projection_resets_once_confirmed_on_a_terminal(
    store: DjangoEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_account(store)
    run("run_projections", once=True)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")

    run("reset_projection", "AccountSummaryProjection")

    assert not AccountSummary.objects.exists()


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_reset_projection_without_a_terminal_refuses_unless_told_not_to_ask(
    store: DjangoEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_account(store)
    run("run_projections", once=True)
    monkeypatch.setattr("sys.stdin", StringIO(""))

    with pytest.raises(CommandError, match=r"not a terminal\. Pass --no-input"):
        run("reset_projection", "AccountSummaryProjection")

    assert AccountSummary.objects.exists()


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_reset_projection_rejects_an_unknown_name() -> None:
    with pytest.raises(CommandError, match="Unknown projection 'Orders'"):
        run("reset_projection", "Orders", "--no-input")


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_reset_projection_rejects_an_unknown_name_before_asking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "yes")

    with pytest.raises(CommandError, match="Unknown projection 'Orders'"):
        run("reset_projection", "Orders")

    assert asked == []


@override_settings(EVENTSOURCE_PROJECTIONS=[FLAKY])
def test_retry_dead_letters_reports_resolved_and_still_failing_entries(
    store: DjangoEventStore, poison: set[Decimal]
) -> None:
    poison.update({Decimal(13), Decimal(14)})
    open_account(store, deposits=(13,))
    open_account(store, "bob", deposits=(14,))
    run_reporting_a_problem("run_projections", once=True)
    poison.discard(Decimal(13))
    still_broken = DeadLetter.objects.get(event_data__amount="14")

    output = run_reporting_a_problem("retry_dead_letters", "--projection", "FlakyLedgerProjection")

    assert "1 resolved, 1 still failing." in output
    assert f"#{still_broken.pk}: ValueError: cannot book 14" in output
    assert DeadLetter.objects.filter(status=DeadLetter.Status.RESOLVED).count() == 1


@override_settings(EVENTSOURCE_PROJECTIONS=[FLAKY])
def test_retry_dead_letters_can_target_single_ids(
    store: DjangoEventStore, poison: set[Decimal]
) -> None:
    poison.update({Decimal(13), Decimal(14)})
    open_account(store, deposits=(13,))
    open_account(store, "bob", deposits=(14,))
    run_reporting_a_problem("run_projections", once=True)
    poison.clear()
    chosen = DeadLetter.objects.get(event_data__amount="14")

    output = run("retry_dead_letters", "--id", str(chosen.pk))

    assert "1 resolved, 0 still failing." in output
    still_failed = DeadLetter.objects.filter(status=DeadLetter.Status.FAILED)
    assert [letter.event_data["amount"] for letter in still_failed] == ["13"]


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY, FLAKY])
def test_eventsource_status_shows_position_lag_dead_letters_and_outbox_backlog(
    store: DjangoEventStore, poison: set[Decimal]
) -> None:
    poison.add(Decimal(13))
    open_account(store, deposits=(13,))
    run_reporting_a_problem("run_projections", once=True, projections=["FlakyLedgerProjection"])
    flaky_position = store.get_global_position()
    open_account(store)
    OutboxMessage.objects.create(
        event_id=uuid4(), event_type="AccountOpened", aggregate_id=uuid4(), aggregate_type="Account"
    )

    output = run_reporting_a_problem("eventsource_status")

    lines = {line.split()[0]: line.split()[1:] for line in output.splitlines() if line.strip()}
    head = store.get_global_position()
    assert lines["AccountSummaryProjection"][:2] == ["0", str(head)]
    assert lines["FlakyLedgerProjection"][:2] == [str(flaky_position), str(head - flaky_position)]
    assert lines["FlakyLedgerProjection"][-1] == "1"
    assert "Dead letters: 1 failed, 0 retrying" in output
    assert "Outbox: 1 pending, 0 failed" in output


@pytest.mark.postgres
@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_eventsource_status_names_the_open_transaction_holding_readers_back() -> None:
    import psycopg
    from django.db import connection

    params = connection.get_connection_params()
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    with psycopg.connect(**params, application_name="forgotten-shell") as other:
        # A writer's open transaction, as an appending session would hold it.
        other.execute("LOCK TABLE eventsource_event IN ROW EXCLUSIVE MODE")

        output = run("eventsource_status")

    assert "Readers held back by open transactions:" in output
    assert "forgotten-shell" in output
