"""Sequenced dead letters: a dead-lettered event holds back the later events of its sequence.

The projections are in ``tests.testapp.sequenced``; each read model would show an event
lost, doubled or applied out of order as a difference from a replay of the store.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from decimal import Decimal
from io import StringIO
from typing import Any
from uuid import UUID, uuid4

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings
from django.urls import path

from django_eventsource import DjangoEventStore, DomainEvent, views
from django_eventsource.models import Checkpoint, DeadLetter
from django_eventsource.projections.maintenance import (
    reset_projection,
    retry_dead_letters,
    skip_dead_letter,
)
from django_eventsource.projections.runner import run_projections
from tests.testapp import sequenced
from tests.testapp.domain import AccountOpened, MoneyDeposited
from tests.testapp.models import AccountSummary, HandledEvent
from tests.testapp.projections import SUMMARY
from tests.testapp.sequenced import MISSING, ORDERED, TASK_BOARD

urlpatterns = [path("admin/", admin.site.urls), path("health/", views.health)]

pytestmark = [
    pytest.mark.own_sql,
    pytest.mark.django_db,
    pytest.mark.urls("tests.test_sequenced_dead_letters"),
]


@pytest.fixture(autouse=True)
def _fresh_flags() -> Iterator[None]:
    sequenced.TaskBoard.narrow_column = True
    sequenced.OrderedLedger.failing = set()
    sequenced.MissingCatalogue.broken = True
    yield
    sequenced.TaskBoard.narrow_column = True
    sequenced.OrderedLedger.failing = set()
    sequenced.MissingCatalogue.broken = True


class Streams:
    """Appends events one at a time to account streams, so streams interleave."""

    def __init__(self) -> None:
        self.store = DjangoEventStore()
        self.versions: dict[UUID, int] = {}

    def open(self, owner: str = "ann") -> UUID:
        account = uuid4()
        self._append(account, AccountOpened(aggregate_id=account, owner=owner, aggregate_version=1))
        return account

    def deposit(self, account: UUID, amount: int = 1) -> int:
        version = self.versions[account] + 1
        self._append(
            account,
            MoneyDeposited(aggregate_id=account, amount=Decimal(amount), aggregate_version=version),
        )
        return version

    def _append(self, account: UUID, event: DomainEvent) -> None:
        expected = self.versions.get(account, 0)
        self.store.append_events(account, "Account", [event], expected)
        self.versions[account] = event.aggregate_version


def read_model() -> dict[UUID, tuple[str, Decimal, int]]:
    return {
        row.account_id: (row.owner, row.balance, row.events_seen)
        for row in AccountSummary.objects.all()
    }


def checkpoint(name: str) -> Checkpoint:
    return Checkpoint.objects.get(projection_name=name)


# -- the report's scenario -----------------------------------------------------------------


@override_settings(EVENTSOURCE_PROJECTIONS=[TASK_BOARD], EVENTSOURCE_MAX_RETRIES=1)
def test_a_too_long_title_holds_back_its_task_until_retried_and_the_result_equals_a_rebuild() -> (
    None
):
    streams = Streams()
    long_task = streams.open("t" * 250)
    other_task = streams.open("short title")
    streams.deposit(long_task, 5)  # "completed": an update of a row that is not there
    streams.deposit(other_task, 7)

    summary = run_projections(once=True)

    assert (summary.dead_lettered, summary.parked) == (1, 1)
    head = DeadLetter.objects.get(parked=False)
    assert "character varying(200)" in head.error_message
    assert head.sequence_key == str(long_task)
    parked = DeadLetter.objects.get(parked=True)
    assert parked.event_type == "MoneyDeposited" and parked.sequence_key == str(long_task)
    assert read_model() == {other_task: ("short title", Decimal(7), 1)}
    assert checkpoint("TaskBoard").position == streams.store.get_global_position()

    streams.deposit(long_task, 3)  # still parked: its sequence is open
    run_projections(once=True)
    assert DeadLetter.objects.parked_events().count() == 2
    assert long_task not in read_model()

    sequenced.TaskBoard.narrow_column = False  # the column is widened
    report = retry_dead_letters()

    assert (report.resolved, report.failed, report.waiting) == (3, 0, 0)
    assert not DeadLetter.objects.open().exists()
    retried = read_model()
    assert retried[long_task] == ("t" * 250, Decimal(8), 2)

    reset_projection("TaskBoard", rebuild=True)
    assert read_model() == retried

    # The sequence is closed: the task's next events are handled by the runner again.
    streams.deposit(long_task, 1)
    run_projections(once=True)
    assert read_model()[long_task] == ("t" * 250, Decimal(9), 3)
    assert not DeadLetter.objects.open().exists()


# -- retry and skip ------------------------------------------------------------------------


@override_settings(EVENTSOURCE_PROJECTIONS=[ORDERED], EVENTSOURCE_MAX_RETRIES=1)
def test_retry_stops_at_the_first_event_that_still_fails_which_becomes_the_head() -> None:
    streams = Streams()
    account = streams.open()
    versions = [streams.deposit(account) for _ in range(4)]  # versions 2..5
    sequenced.OrderedLedger.failing = {(account, 2), (account, 4)}
    run_projections(once=True)
    head = DeadLetter.objects.get(parked=False)
    assert DeadLetter.objects.parked_events().count() == 3

    sequenced.OrderedLedger.failing = {(account, 4)}
    report = retry_dead_letters(ids=[head.pk])

    assert (report.resolved, report.failed, report.waiting) == (2, 1, 1)
    new_head = DeadLetter.objects.get(parked=False, status=DeadLetter.Status.FAILED)
    assert new_head.event_data["aggregate_version"] == 4
    assert new_head.retry_count == 1
    assert "cannot record version 4" in new_head.error_message
    assert report.errors == {new_head.pk: new_head.error_message}
    assert read_model()[account][0] == "1,2,3,"

    sequenced.OrderedLedger.failing = set()
    # Any id of the sequence retries it from its head.
    parked = DeadLetter.objects.get(parked=True)
    report = retry_dead_letters(ids=[parked.pk])
    assert (report.resolved, report.failed) == (2, 0)
    assert read_model()[account][0] == "1,2,3,4,5,"
    assert versions == [2, 3, 4, 5]


@override_settings(EVENTSOURCE_PROJECTIONS=[ORDERED], EVENTSOURCE_MAX_RETRIES=1)
def test_skipping_the_head_discards_it_and_makes_the_next_parked_event_the_head() -> None:
    streams = Streams()
    account = streams.open()
    for _ in range(3):
        streams.deposit(account)
    sequenced.OrderedLedger.failing = {(account, 2)}
    run_projections(once=True)
    head = DeadLetter.objects.get(parked=False)
    behind = DeadLetter.objects.parked_events().order_by("global_position")
    second, third = list(behind)

    with pytest.raises(ValueError, match="waits behind the head"):
        skip_dead_letter(third.pk, "ops")
    following = skip_dead_letter(head.pk, "ops")

    assert following == second.pk
    head.refresh_from_db()
    assert head.status == DeadLetter.Status.RESOLVED and head.resolved_by == "ops (skipped)"
    second.refresh_from_db()
    assert not second.parked and second.status == DeadLetter.Status.FAILED
    assert "was skipped" in second.error_message
    assert read_model()[account][0] == "1,"  # skipping handles nothing

    report = retry_dead_letters()
    assert (report.resolved, report.failed) == (2, 0)
    assert read_model()[account][0] == "1,3,4,"


@override_settings(EVENTSOURCE_PROJECTIONS=[ORDERED], EVENTSOURCE_MAX_RETRIES=1)
def test_a_projection_may_widen_the_sequence_with_its_own_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        sequenced.OrderedLedger, "sequence_key", lambda self, event: "one-tenant", raising=False
    )
    streams = Streams()
    first = streams.open()
    second = streams.open()
    streams.deposit(second)
    sequenced.OrderedLedger.failing = {(first, 1)}

    run_projections(once=True)

    assert read_model() == {}  # the other account's events share the key: they wait
    assert DeadLetter.objects.parked_events().count() == 2
    sequenced.OrderedLedger.failing = set()
    retry_dead_letters()
    assert set(read_model()) == {first, second}


# -- randomized ------------------------------------------------------------------------------


def replay(store: DjangoEventStore) -> dict[UUID, tuple[str, Decimal, int]]:
    """What OrderedLedger holds after handling every event once, in order."""
    state: dict[UUID, tuple[str, Decimal, int]] = {}
    for stored in store.read_all():
        event = stored.event
        history, balance, seen = state.get(event.aggregate_id, ("", Decimal(0), 0))
        if isinstance(event, MoneyDeposited):
            balance += event.amount
        state[event.aggregate_id] = (f"{history}{event.aggregate_version},", balance, seen + 1)
    return state


@pytest.mark.parametrize("seed", range(20))
@override_settings(
    EVENTSOURCE_PROJECTIONS=[ORDERED],
    EVENTSOURCE_MAX_RETRIES=1,
    EVENTSOURCE_PROJECTION_PAUSE_AFTER=0,
)
def test_random_failures_then_retries_leave_the_read_model_equal_to_a_replay(seed: int) -> None:
    rng = random.Random(seed)
    streams = Streams()
    accounts = [streams.open(f"owner {n}") for n in range(50)]
    for _ in range(100):
        streams.deposit(rng.choice(accounts), rng.randint(1, 9))
    pairs = [(account, v) for account in accounts for v in range(1, streams.versions[account] + 1)]
    sequenced.OrderedLedger.failing = set(rng.sample(pairs, rng.randint(5, 30)))
    batch_size = rng.choice([3, 17, 64, 500])

    run_projections(once=True, batch_size=batch_size)
    # More events while sequences are open, and a partial fix with a retry in between.
    for _ in range(40):
        streams.deposit(rng.choice(accounts), rng.randint(1, 9))
    failing = sorted(sequenced.OrderedLedger.failing, key=str)
    sequenced.OrderedLedger.failing = set(failing[: len(failing) // 2])
    retry_dead_letters()
    run_projections(once=True, batch_size=batch_size)

    sequenced.OrderedLedger.failing = set()  # fixed
    report = retry_dead_letters()

    assert report.failed == 0
    assert not DeadLetter.objects.open().exists()
    assert read_model() == replay(streams.store)


# -- pause -----------------------------------------------------------------------------------


@override_settings(
    EVENTSOURCE_PROJECTIONS=[MISSING, SUMMARY],
    EVENTSOURCE_MAX_RETRIES=1,
    EVENTSOURCE_PROJECTION_PAUSE_AFTER=3,
)
def test_a_projection_failing_on_every_event_pauses_and_resumes_from_its_checkpoint(
    client: Client, admin_client: Client
) -> None:
    streams = Streams()
    accounts = [streams.open(f"item {n}") for n in range(20)]

    summary = run_projections(once=True)

    # Paused after three failures, committed up to the third; the other projection ran on.
    assert summary.processed == {"MissingCatalogue": 3, "AccountSummaryProjection": 20}
    assert summary.paused == ["MissingCatalogue"]
    assert DeadLetter.objects.count() == 3
    paused = checkpoint("MissingCatalogue")
    third = list(streams.store.read_all())[2]
    assert paused.paused and paused.position == third.global_position
    assert "catalogue entry 'item 2' is missing" in paused.last_error
    assert AccountSummary.objects.count() == 20

    # A paused projection takes no new events; --once returns at once, and the command
    # says so with the "problem" exit status.
    out = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("run_projections", once=True, stdout=out)
    assert exit_info.value.code == 3
    assert "MissingCatalogue: paused after repeated failures" in out.getvalue()
    again = run_projections(once=True)
    assert again.processed["MissingCatalogue"] == 0 and again.paused == ["MissingCatalogue"]
    assert checkpoint("MissingCatalogue").position == third.global_position

    response = client.get("/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["paused_projections"] == ["MissingCatalogue"]
    (problem,) = [p for p in body["problems"] if "paused" in p]
    assert "MissingCatalogue" in problem and "catalogue entry 'item 2' is missing" in problem

    out = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("eventsource_status", stdout=out)
    assert exit_info.value.code == 3
    assert "Paused: MissingCatalogue (last error: LookupError: catalogue entry" in out.getvalue()
    assert "Problem: projection MissingCatalogue is paused" in out.getvalue()

    listing = admin_client.get("/admin/django_eventsource/checkpoint/")
    assert "paused" in listing.text and "catalogue entry &#x27;item 2&#x27; is missing" in (
        listing.text
    )

    sequenced.MissingCatalogue.broken = False
    out = StringIO()
    call_command("resume_projection", "MissingCatalogue", stdout=out)
    assert "Resumed MissingCatalogue" in out.getvalue()
    resumed = run_projections(once=True)

    assert resumed.processed["MissingCatalogue"] == 17
    handled = set(
        HandledEvent.objects.filter(projection="MissingCatalogue").values_list(
            "event_id", flat=True
        )
    )
    assert handled == {s.event_id for s in list(streams.store.read_all())[3:]}
    assert not checkpoint("MissingCatalogue").paused
    body = client.get("/health/").json()
    assert body["paused_projections"] == []
    assert not [p for p in body["problems"] if "paused" in p]
    assert len(accounts) == AccountSummary.objects.count()


@override_settings(EVENTSOURCE_PROJECTIONS=[MISSING])
def test_resume_projection_says_when_there_was_nothing_to_resume() -> None:
    out = StringIO()
    call_command("resume_projection", "MissingCatalogue", stdout=out)
    assert "MissingCatalogue was not paused." in out.getvalue()
    with pytest.raises(CommandError, match="Unknown projection 'Nope'"):
        call_command("resume_projection", "Nope")


@override_settings(EVENTSOURCE_PROJECTIONS=[MISSING], EVENTSOURCE_MAX_RETRIES=1)
def test_the_checkpoint_admin_resumes_a_paused_projection(admin_client: Client) -> None:
    Streams().open()
    with override_settings(EVENTSOURCE_PROJECTION_PAUSE_AFTER=1):
        run_projections(once=True)
    row = checkpoint("MissingCatalogue")
    assert row.paused

    response = admin_client.post(
        "/admin/django_eventsource/checkpoint/",
        {"action": "resume_projections", "_selected_action": [row.pk]},
        follow=True,
    )

    assert "Resumed MissingCatalogue" in response.text
    row.refresh_from_db()
    assert not row.paused and row.last_error == "" and row.failure_streak == 0


# -- prompt stop -----------------------------------------------------------------------------


class StopAfter(sequenced.OrderedLedger):
    """Requests a stop (as SIGTERM would) while handling a chosen version."""

    stop_event = threading.Event()
    stop_on: tuple[UUID, int] | None = None

    def on_deposited(self, event: MoneyDeposited) -> None:  # type: ignore[override]
        super().on_deposited(event)
        if (event.aggregate_id, event.aggregate_version) == StopAfter.stop_on:
            StopAfter.stop_event.set()


STOP_AFTER = "tests.test_sequenced_dead_letters.StopAfter"


@override_settings(EVENTSOURCE_PROJECTIONS=[STOP_AFTER])
def test_a_stop_mid_batch_commits_up_to_the_last_handled_event_and_a_restart_does_the_rest() -> (
    None
):
    streams = Streams()
    account = streams.open()
    for _ in range(9):
        streams.deposit(account)
    StopAfter.stop_event = threading.Event()
    StopAfter.stop_on = (account, 4)

    run_projections(once=True, stop_event=StopAfter.stop_event, batch_size=100)

    fourth = list(streams.store.read_all())[3]
    assert checkpoint("StopAfter").position == fourth.global_position
    assert read_model()[account][0] == "1,2,3,4,"

    StopAfter.stop_on = None
    run_projections(once=True, batch_size=100)
    assert read_model() == replay(streams.store)


@override_settings(EVENTSOURCE_PROJECTIONS=[STOP_AFTER], EVENTSOURCE_MAX_RETRIES=5)
def test_a_stop_during_retry_backoff_ends_the_batch_without_dead_lettering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    streams = Streams()
    account = streams.open()
    streams.deposit(account)
    streams.deposit(account)
    stop = threading.Event()
    # The backoff would wait an hour; the stop requested on the first failure ends it.
    monkeypatch.setattr("django.conf.settings.EVENTSOURCE_RETRY_BACKOFF", 3600.0)
    monkeypatch.setattr("django.conf.settings.EVENTSOURCE_RETRY_BACKOFF_MAX", 3600.0)
    original = sequenced.OrderedLedger._maybe_fail

    def fail_and_stop(self: Any, aggregate_id: UUID, version: int) -> None:
        if version == 2:
            stop.set()
            raise RuntimeError("database constraint")
        original(self, aggregate_id, version)

    monkeypatch.setattr(sequenced.OrderedLedger, "_maybe_fail", fail_and_stop)
    monkeypatch.setattr("random.uniform", lambda low, high: high)

    run_projections(once=True, stop_event=stop)

    assert not DeadLetter.objects.exists()
    first = next(iter(streams.store.read_all()))
    assert checkpoint("StopAfter").position == first.global_position
    assert read_model()[account][0] == "1,"


# -- retry_dead_letters, the command -------------------------------------------------------


@override_settings(EVENTSOURCE_PROJECTIONS=[ORDERED], EVENTSOURCE_MAX_RETRIES=1)
def test_retry_dead_letters_exits_non_zero_while_some_stay_failing_or_an_id_is_unknown() -> None:
    streams = Streams()
    account = streams.open()
    streams.deposit(account)
    sequenced.OrderedLedger.failing = {(account, 1)}
    run_projections(once=True)
    head = DeadLetter.objects.get(parked=False)

    out = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("retry_dead_letters", stdout=out)
    assert exit_info.value.code == 3  # a problem reported, after the report
    assert f"#{head.pk}: RuntimeError: cannot record version 1" in out.getvalue()
    assert "0 resolved, 1 still failing, 1 waiting behind them." in out.getvalue()

    sequenced.OrderedLedger.failing = set()
    with pytest.raises(CommandError, match="No such dead letter: #999999"):
        call_command("retry_dead_letters", "--id", "999999", stdout=StringIO())

    out = StringIO()
    call_command("retry_dead_letters", "--id", str(head.pk), stdout=out)
    assert "Retrying: 2/2 events (100%)" in out.getvalue()
    assert "2 resolved, 0 still failing." in out.getvalue()


# -- the admin's dead-letter pages ---------------------------------------------------------


@pytest.fixture
def parked_sequence(settings: Any) -> DeadLetter:
    settings.EVENTSOURCE_PROJECTIONS = [ORDERED]
    settings.EVENTSOURCE_MAX_RETRIES = 1
    streams = Streams()
    account = streams.open()
    streams.deposit(account)
    streams.deposit(account)
    sequenced.OrderedLedger.failing = {(account, 1)}
    run_projections(once=True)
    return DeadLetter.objects.get(parked=False)


def test_the_dead_letter_list_shows_the_error_and_how_many_wait(
    admin_client: Client, parked_sequence: DeadLetter
) -> None:
    response = admin_client.get("/admin/django_eventsource/deadletter/?parked__exact=0")

    assert "RuntimeError: cannot record version 1" in response.text
    assert "2 waiting" in response.text


def test_a_parked_event_page_links_to_its_head_and_offers_no_button(
    admin_client: Client, parked_sequence: DeadLetter
) -> None:
    parked = DeadLetter.objects.filter(parked=True).first()
    assert parked is not None

    response = admin_client.get(f"/admin/django_eventsource/deadletter/{parked.pk}/change/")

    assert "<h1>View dead letter</h1>" in response.text
    assert f"Parked behind #{parked_sequence.pk}" in response.text
    assert 'name="retry"' not in response.text
    with pytest.raises(ValueError, match="waits behind the head"):
        skip_dead_letter(parked.pk, "ops")


def test_the_head_page_skips_and_resolves_with_its_buttons(
    admin_client: Client, parked_sequence: DeadLetter
) -> None:
    page = admin_client.get(f"/admin/django_eventsource/deadletter/{parked_sequence.pk}/change/")
    assert 'name="retry"' in page.text and 'name="skip"' in page.text
    assert "2 events wait behind the head" in page.text

    skipped = admin_client.post(
        f"/admin/django_eventsource/deadletter/{parked_sequence.pk}/skip/", follow=True
    )
    second = DeadLetter.objects.get(parked=False, status=DeadLetter.Status.FAILED)
    assert f"#{second.pk} is now the head of its sequence" in skipped.text

    resolved = admin_client.post(
        f"/admin/django_eventsource/deadletter/{second.pk}/resolve/", follow=True
    )
    third = DeadLetter.objects.get(parked=False, status=DeadLetter.Status.FAILED)
    assert f"#{third.pk} is now the head" in resolved.text
    second.refresh_from_db()
    assert second.resolved_by == "admin" and second.status == DeadLetter.Status.RESOLVED
    assert read_model() == {}  # neither handled anything


def test_view_only_staff_get_no_buttons_and_cannot_post_them(
    client: Client, parked_sequence: DeadLetter
) -> None:
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client.force_login(user)

    page = client.get(f"/admin/django_eventsource/deadletter/{parked_sequence.pk}/change/")
    assert page.status_code == 200 and 'name="retry"' not in page.text
    for button in ("retry", "skip", "resolve"):
        response = client.post(
            f"/admin/django_eventsource/deadletter/{parked_sequence.pk}/{button}/"
        )
        assert response.status_code == 403
    assert client.get(
        f"/admin/django_eventsource/deadletter/{parked_sequence.pk}/retry/"
    ).status_code in (403, 405)
    parked_sequence.refresh_from_db()
    assert parked_sequence.status == DeadLetter.Status.FAILED
