"""The admin: every page renders, nothing edits stored events, actions do what they say."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_eventsource import DeclarativeProjection, DjangoEventStore, DomainEvent, handles
from django_eventsource.admin import EstimatedCountPaginator, EventRecordAdmin
from django_eventsource.models import Checkpoint, DeadLetter, EventRecord, OutboxMessage, Snapshot
from django_eventsource.projections.django_dead_letters import DjangoDLQRepository
from tests.factories import AccountOpenedFactory, account_history
from tests.testapp.domain import MoneyDeposited

pytestmark = [pytest.mark.own_sql, pytest.mark.django_db]

PROJECTION = "tests.test_admin.FlakyLedger"


class FlakyLedger(DeclarativeProjection):
    """Records deposits; fails while ``failure`` is set (the bug an operator fixes)."""

    failure: str | None = None
    handled: list[UUID] = []
    resets = 0

    @handles(MoneyDeposited)
    def on_deposit(self, event: MoneyDeposited) -> None:
        if FlakyLedger.failure:
            raise RuntimeError(FlakyLedger.failure)
        FlakyLedger.handled.append(event.event_id)

    def reset(self) -> None:
        FlakyLedger.resets += 1
        FlakyLedger.handled.clear()


@pytest.fixture(autouse=True)
def _ledger(settings: Any) -> Iterator[None]:
    settings.EVENTSOURCE_PROJECTIONS = [PROJECTION]
    # Creating users with the default hasher would dominate these tests' run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    FlakyLedger.failure = None
    FlakyLedger.handled = []
    FlakyLedger.resets = 0
    yield
    FlakyLedger.failure = None


def changelist(model: str) -> str:
    return reverse(f"admin:django_eventsource_{model}_changelist")


def change(model: str, pk: object) -> str:
    return reverse(f"admin:django_eventsource_{model}_change", args=[pk])


def run_action(client: Client, model: str, action: str, pks: list[int], **extra: str) -> Any:
    data = {"action": action, ACTION_CHECKBOX_NAME: [str(pk) for pk in pks], **extra}
    return client.post(changelist(model), data, follow=True)


def store_events(*events: DomainEvent) -> None:
    store = DjangoEventStore()
    first = events[0]
    store.append_events(first.aggregate_id, first.aggregate_type, list(events), expected_version=0)


@pytest.fixture
def tenant() -> UUID:
    return uuid4()


@pytest.fixture
def stream(tenant: UUID) -> list[DomainEvent]:
    history = account_history(deposits=2, tenant_id=tenant)
    store_events(*history)
    store_events(*account_history(deposits=1))
    return history


@pytest.fixture
def dead_letter(stream: list[DomainEvent]) -> DeadLetter:
    deposit = stream[1]
    pk = DjangoDLQRepository().add_failed_event(
        event_id=deposit.event_id,
        projection_name="FlakyLedger",
        event_type=deposit.event_type,
        event_data=deposit.to_dict(),
        error=RuntimeError("ledger table <missing>"),
        retry_count=3,
        global_position=EventRecord.objects.get(event_id=deposit.event_id).position,
    )
    return DeadLetter.objects.get(pk=pk)


@pytest.fixture
def checkpoint(stream: list[DomainEvent]) -> Checkpoint:
    first = EventRecord.objects.order_by("position").first()
    assert first is not None
    return Checkpoint.objects.create(
        projection_name="FlakyLedger",
        position=first.position,
        last_event_id=first.event_id,
        last_event_type=first.event_type,
        events_processed=1,
        last_processed_at=timezone.now(),
    )


def outbox_row(status: str, **fields: Any) -> OutboxMessage:
    event: DomainEvent = AccountOpenedFactory()
    return OutboxMessage.objects.create(
        event_id=event.event_id,
        event_type=event.event_type,
        aggregate_id=event.aggregate_id,
        aggregate_type=event.aggregate_type,
        aggregate_version=1,
        event_data=event.to_dict(),
        status=status,
        **fields,
    )


@pytest.fixture
def snapshot(stream: list[DomainEvent]) -> Snapshot:
    return Snapshot.objects.create(
        aggregate_type="Account",
        aggregate_id=stream[0].aggregate_id,
        version=3,
        state={"owner": "Ada", "balance": "12.50"},
        created_at=timezone.now(),
    )


@pytest.fixture
def every_object(
    dead_letter: DeadLetter, checkpoint: Checkpoint, snapshot: Snapshot
) -> dict[str, object]:
    return {
        "eventrecord": EventRecord.objects.order_by("position").first(),
        "deadletter": dead_letter,
        "checkpoint": checkpoint,
        "outboxmessage": outbox_row("failed", last_error="broker down\nTraceback ..."),
        "snapshot": snapshot,
    }


def result_ids(response: Any) -> list[UUID]:
    return [row.event_id for row in response.context["cl"].result_list]


# --- every page ------------------------------------------------------------------------


def test_app_index_lists_every_model(admin_client: Client) -> None:
    response = admin_client.get(reverse("admin:app_list", args=["django_eventsource"]))
    assert response.status_code == 200
    for model in ("eventrecord", "deadletter", "checkpoint", "outboxmessage", "snapshot"):
        assert changelist(model) in response.text


@pytest.mark.parametrize(
    "model", ["eventrecord", "deadletter", "checkpoint", "outboxmessage", "snapshot"]
)
def test_every_changelist_and_change_page_renders(
    admin_client: Client, every_object: dict[str, Any], model: str
) -> None:
    assert admin_client.get(changelist(model)).status_code == 200
    assert admin_client.get(change(model, every_object[model].pk)).status_code == 200


@pytest.mark.parametrize("model", ["deadletter", "outboxmessage", "snapshot", "checkpoint"])
def test_searching_other_models_by_a_non_uuid_finds_nothing_without_error(
    admin_client: Client, every_object: dict[str, Any], model: str
) -> None:
    response = admin_client.get(changelist(model), {"q": "no such thing"})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


def test_dead_letter_and_outbox_filters_render(admin_client: Client, every_object: Any) -> None:
    for url in (
        changelist("deadletter") + "?status=failed",
        changelist("deadletter") + "?projection_name=FlakyLedger",
        changelist("outboxmessage") + "?status=failed",
        changelist("snapshot") + "?aggregate_type=Account",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert response.context["cl"].result_count == 1, url


# --- events ----------------------------------------------------------------------------


def test_events_are_listed_newest_first(admin_client: Client, stream: list[DomainEvent]) -> None:
    response = admin_client.get(changelist("eventrecord"))
    positions = [row.position for row in response.context["cl"].result_list]
    assert positions == sorted(positions, reverse=True)
    assert len(positions) == 5


def test_event_filters_narrow_the_list(
    admin_client: Client, stream: list[DomainEvent], tenant: UUID
) -> None:
    url = changelist("eventrecord")
    deposits = admin_client.get(url, {"event_type": "MoneyDeposited"})
    assert len(result_ids(deposits)) == 3
    accounts = admin_client.get(url, {"aggregate_type": "Account"})
    assert len(result_ids(accounts)) == 5
    of_tenant = admin_client.get(url, {"tenant_id": str(tenant)})
    assert set(result_ids(of_tenant)) == {e.event_id for e in stream}
    combined = admin_client.get(url, {"tenant_id": str(tenant), "event_type": "AccountOpened"})
    assert result_ids(combined) == [stream[0].event_id]


def test_event_type_filter_offers_registered_types_without_querying_them(
    admin_client: Client, stream: list[DomainEvent]
) -> None:
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(changelist("eventrecord"))
    assert "?event_type=AccountClosed" in response.text  # registered, never stored
    assert "?aggregate_type=Account" in response.text
    assert not [q for q in queries if "DISTINCT" in q["sql"].upper()]


def test_a_mistyped_uuid_filter_is_reported_not_crashing(admin_client: Client) -> None:
    response = admin_client.get(changelist("eventrecord"), {"tenant_id": "not-a-uuid"})
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


@pytest.mark.parametrize("field", ["aggregate_id", "event_id", "correlation_id"])
def test_search_finds_events_by_exact_uuid(
    admin_client: Client, stream: list[DomainEvent], field: str
) -> None:
    target = stream[1]
    response = admin_client.get(changelist("eventrecord"), {"q": str(getattr(target, field))})
    assert response.status_code == 200
    found = set(result_ids(response))
    expected = {e.event_id for e in stream if getattr(e, field) == getattr(target, field)}
    assert found == expected


def test_search_with_anything_but_a_uuid_finds_nothing_and_says_why(
    admin_client: Client, stream: list[DomainEvent]
) -> None:
    response = admin_client.get(changelist("eventrecord"), {"q": "Account"}, follow=True)
    assert result_ids(response) == []
    assert "exact aggregate id, event id or correlation id" in response.text


def test_events_cannot_be_added_changed_or_deleted_even_by_a_superuser(
    admin_client: Client, stream: list[DomainEvent]
) -> None:
    record = EventRecord.objects.first()
    assert record is not None
    assert admin_client.get(reverse("admin:django_eventsource_eventrecord_add")).status_code == 403
    delete_url = reverse("admin:django_eventsource_eventrecord_delete", args=[record.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert admin_client.post(change("eventrecord", record.pk), {}).status_code == 403
    listing = admin_client.get(changelist("eventrecord"))
    assert listing.context["action_form"] is None
    assert reverse("admin:django_eventsource_eventrecord_add") not in listing.text
    assert EventRecord.objects.filter(pk=record.pk).exists()


def test_event_detail_shows_escaped_pretty_json_and_links(admin_client: Client) -> None:
    opened = AccountOpenedFactory(owner="<script>alert(1)</script>", metadata={"source": "api"})
    store_events(opened)
    record = EventRecord.objects.get(event_id=opened.event_id)

    response = admin_client.get(change("eventrecord", record.pk))

    assert "<pre" in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert "<script>alert(1)" not in response.text
    assert "&quot;source&quot;: &quot;api&quot;" in response.text
    stream_query = f"aggregate_type=Account&amp;aggregate_id={opened.aggregate_id}"
    assert stream_query in response.text
    assert f"?correlation_id={opened.correlation_id}" in response.text


def test_the_stream_and_correlation_links_list_the_right_events(
    admin_client: Client, stream: list[DomainEvent]
) -> None:
    url = changelist("eventrecord")
    agg = stream[0].aggregate_id
    whole = admin_client.get(url, {"aggregate_type": "Account", "aggregate_id": str(agg)})
    assert set(result_ids(whole)) == {e.event_id for e in stream}
    correlated = admin_client.get(url, {"correlation_id": str(stream[2].correlation_id)})
    assert result_ids(correlated) == [stream[2].event_id]


def test_events_changelist_queries_do_not_grow_with_the_table(
    admin_client: Client, django_assert_max_num_queries: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # More than one page from the start: a list that fits one page needs no count.
    monkeypatch.setattr(EventRecordAdmin, "list_per_page", 2)

    def render() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(changelist("eventrecord"), {"event_type": "MoneyDeposited"})
        assert response.status_code == 200
        return len(queries)

    store_events(*account_history(deposits=3))
    few = render()
    for _ in range(30):
        store_events(*account_history(deposits=8))
    with django_assert_max_num_queries(5):
        many = render()
    assert many == few


def test_events_changelist_never_counts_the_whole_table(
    admin_client: Client, stream: list[DomainEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EstimatedCountPaginator, "count_limit", 3)
    monkeypatch.setattr(EventRecordAdmin, "list_per_page", 2)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(changelist("eventrecord"))
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert all("LIMIT" in sql.upper() for sql in counts)
    assert re.search(r"(more than 3|about \d+)\s+events", response.text)


def test_a_small_result_is_counted_exactly(admin_client: Client, stream: list[DomainEvent]) -> None:
    response = admin_client.get(changelist("eventrecord"), {"event_type": "MoneyDeposited"})
    assert re.search(r"positions \d+ to \d+;</span>\s*3\s+events", response.text)


@pytest.mark.postgres
def test_on_postgresql_a_large_list_shows_the_planner_estimate_without_counting(
    admin_client: Client, stream: list[DomainEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EstimatedCountPaginator, "count_limit", 3)
    monkeypatch.setattr(EventRecordAdmin, "list_per_page", 2)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE eventsource_event")
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(changelist("eventrecord"))
    assert not [q for q in queries if "COUNT(" in q["sql"].upper()]
    assert re.search(r"about 5\s+events", response.text)


# --- dead letters ----------------------------------------------------------------------


def test_dead_letter_detail_shows_error_stack_trace_and_event_data(
    admin_client: Client, dead_letter: DeadLetter
) -> None:
    response = admin_client.get(change("deadletter", dead_letter.pk))
    assert "ledger table &lt;missing&gt;" in response.text
    assert "RuntimeError" in response.text
    assert f"&quot;event_id&quot;: &quot;{dead_letter.event_id}&quot;" in response.text
    assert 'name="_save"' not in response.text


def test_retry_selected_resolves_a_dead_letter_once_the_cause_is_fixed(
    admin_client: Client, dead_letter: DeadLetter
) -> None:
    response = run_action(admin_client, "deadletter", "retry_selected", [dead_letter.pk])

    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.RESOLVED
    assert FlakyLedger.handled == [dead_letter.event_id]
    assert "1 dead letter handled and resolved" in response.text


def test_retry_selected_keeps_a_still_failing_dead_letter_with_the_new_error(
    admin_client: Client, dead_letter: DeadLetter
) -> None:
    FlakyLedger.failure = "ledger still read-only"

    response = run_action(admin_client, "deadletter", "retry_selected", [dead_letter.pk])

    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.FAILED
    assert "ledger still read-only" in dead_letter.error_message
    assert "failed again" in response.text
    assert "ledger still read-only" in response.text


def test_mark_resolved_records_who_resolved_it(
    admin_client: Client, admin_user: User, dead_letter: DeadLetter
) -> None:
    before = timezone.now()
    response = run_action(admin_client, "deadletter", "mark_resolved", [dead_letter.pk])

    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.RESOLVED
    assert dead_letter.resolved_by == admin_user.get_username()
    assert dead_letter.resolved_at is not None and dead_letter.resolved_at >= before
    assert "1 dead letter marked resolved" in response.text


def test_delete_resolved_deletes_only_the_resolved_ones(
    admin_client: Client, dead_letter: DeadLetter, stream: list[DomainEvent]
) -> None:
    other = stream[2]
    resolved = DeadLetter.objects.create(
        event_id=other.event_id,
        projection_name="FlakyLedger",
        event_type=other.event_type,
        event_data=other.to_dict(),
        status=DeadLetter.Status.RESOLVED,
        resolved_by="ops",
        resolved_at=timezone.now(),
    )

    response = run_action(
        admin_client, "deadletter", "delete_resolved", [dead_letter.pk, resolved.pk]
    )

    assert list(DeadLetter.objects.values_list("pk", flat=True)) == [dead_letter.pk]
    assert "1 resolved dead letter deleted. 1 unresolved one was kept." in response.text


def test_an_unresolved_dead_letter_cannot_be_deleted(
    admin_client: Client, dead_letter: DeadLetter
) -> None:
    url = reverse("admin:django_eventsource_deadletter_delete", args=[dead_letter.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    listing = admin_client.get(changelist("deadletter"))
    actions = listing.context["cl"].model_admin.get_actions(listing.wsgi_request)
    assert "delete_selected" not in actions
    assert DeadLetter.objects.filter(pk=dead_letter.pk).exists()


# --- checkpoints -----------------------------------------------------------------------


def test_checkpoints_show_their_lag(admin_client: Client, checkpoint: Checkpoint) -> None:
    response = admin_client.get(changelist("checkpoint"))
    row = response.context["cl"].result_list[0]
    admin_obj = response.context["cl"].model_admin
    head = EventRecord.objects.order_by("-position").values_list("position", flat=True)[0]
    assert admin_obj.lag_events(row) == head - checkpoint.position > 0
    assert float(admin_obj.lag_seconds(row)) >= 0


def test_checkpoint_lag_is_zero_when_caught_up(
    admin_client: Client, checkpoint: Checkpoint
) -> None:
    head = EventRecord.objects.order_by("-position").first()
    assert head is not None
    Checkpoint.objects.filter(pk=checkpoint.pk).update(position=head.position)
    response = admin_client.get(changelist("checkpoint"))
    row = response.context["cl"].result_list[0]
    admin_obj = response.context["cl"].model_admin
    assert (admin_obj.lag_events(row), admin_obj.lag_seconds(row)) == (0, "0")


def test_checkpoint_list_queries_do_not_grow_with_the_number_of_projections(
    admin_client: Client, checkpoint: Checkpoint
) -> None:
    def render() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(changelist("checkpoint")).status_code == 200
        return len(queries)

    one = render()
    Checkpoint.objects.bulk_create(
        Checkpoint(projection_name=f"Report{i}", position=i) for i in range(20)
    )
    assert render() == one


def test_reset_asks_for_confirmation_before_touching_anything(
    admin_client: Client, checkpoint: Checkpoint
) -> None:
    response = run_action(admin_client, "checkpoint", "reset_projections", [checkpoint.pk])

    assert response.status_code == 200
    assert "Reset projections?" in response.text
    assert "FlakyLedger" in response.text
    assert 'name="post" value="yes"' in response.text
    checkpoint.refresh_from_db()
    assert checkpoint.position > 0
    assert FlakyLedger.resets == 0


def test_confirmed_reset_sends_the_projection_back_to_position_zero(
    admin_client: Client, checkpoint: Checkpoint
) -> None:
    response = run_action(
        admin_client, "checkpoint", "reset_projections", [checkpoint.pk], post="yes"
    )

    assert "Reset FlakyLedger" in response.text
    position = Checkpoint.objects.filter(projection_name="FlakyLedger").values_list(
        "position", flat=True
    )
    assert list(position) in ([], [0])
    assert FlakyLedger.resets == 1


def test_reset_of_an_unconfigured_projection_is_reported_and_changes_nothing(
    admin_client: Client, checkpoint: Checkpoint
) -> None:
    retired = Checkpoint.objects.create(projection_name="RetiredReport", position=7)

    response = run_action(
        admin_client, "checkpoint", "reset_projections", [retired.pk, checkpoint.pk], post="yes"
    )

    assert "Could not reset RetiredReport" in response.text
    assert "Reset FlakyLedger" in response.text
    retired.refresh_from_db()
    assert retired.position == 7


# --- outbox ----------------------------------------------------------------------------


def test_retry_now_makes_failed_and_waiting_messages_due_immediately(
    admin_client: Client,
) -> None:
    failed = outbox_row("failed", retry_count=10, last_error="broker down")
    waiting = outbox_row(
        "pending", retry_count=2, next_attempt_at=timezone.now() + timedelta(hours=1)
    )
    published = outbox_row("published", published_at=timezone.now())

    response = run_action(
        admin_client, "outboxmessage", "retry_now", [failed.pk, waiting.pk, published.pk]
    )

    now = timezone.now()
    for row in (failed, waiting, published):
        row.refresh_from_db()
    assert failed.status == OutboxMessage.Status.PENDING
    assert failed.next_attempt_at is None or failed.next_attempt_at <= now
    assert waiting.status == OutboxMessage.Status.PENDING
    assert waiting.next_attempt_at is not None and waiting.next_attempt_at <= now
    assert published.status == OutboxMessage.Status.PUBLISHED
    assert "2 messages will be published on the next relay pass" in response.text


# --- permissions -----------------------------------------------------------------------

MODELS = ["eventrecord", "deadletter", "checkpoint", "outboxmessage", "snapshot"]


def staff_client(client: Client, *codenames: str) -> Client:
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="django_eventsource", codename__in=codenames
        )
    )
    client.force_login(user)
    return client


def test_view_only_staff_sees_every_page_but_runs_no_action(
    client: Client, every_object: dict[str, Any]
) -> None:
    viewer = staff_client(client, *(f"view_{model}" for model in MODELS))
    for model in MODELS:
        listing = viewer.get(changelist(model))
        assert listing.status_code == 200, model
        assert not listing.context["cl"].model_admin.get_actions(listing.wsgi_request), model
        assert viewer.get(change(model, every_object[model].pk)).status_code == 200, model

    dead_letter = every_object["deadletter"]
    for action in ("retry_selected", "mark_resolved", "delete_resolved"):
        run_action(viewer, "deadletter", action, [dead_letter.pk])
    checkpoint = every_object["checkpoint"]
    run_action(viewer, "checkpoint", "reset_projections", [checkpoint.pk], post="yes")
    outbox = every_object["outboxmessage"]
    run_action(viewer, "outboxmessage", "retry_now", [outbox.pk])

    dead_letter.refresh_from_db()
    checkpoint.refresh_from_db()
    outbox.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.FAILED
    assert checkpoint.position > 0 and FlakyLedger.resets == 0
    assert outbox.status == OutboxMessage.Status.FAILED


def test_change_permission_unlocks_retry_and_resolve_but_not_delete(
    client: Client, dead_letter: DeadLetter
) -> None:
    operator = staff_client(client, "view_deadletter", "change_deadletter")
    listing = operator.get(changelist("deadletter"))
    actions = listing.context["cl"].model_admin.get_actions(listing.wsgi_request)
    assert set(actions) == {"retry_selected", "skip_selected", "mark_resolved"}

    run_action(operator, "deadletter", "mark_resolved", [dead_letter.pk])

    dead_letter.refresh_from_db()
    assert dead_letter.resolved_by == "operator"


def test_staff_without_model_permissions_is_refused(
    client: Client, dead_letter: DeadLetter
) -> None:
    stranger = staff_client(client)
    for model in MODELS:
        assert stranger.get(changelist(model)).status_code == 403


def test_non_staff_users_are_sent_to_the_login_page(
    client: Client, dead_letter: DeadLetter
) -> None:
    user = User.objects.create_user("customer", password="pw")
    client.force_login(user)
    for model in MODELS:
        response = client.get(changelist(model))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
