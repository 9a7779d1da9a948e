"""The operator's admin: keyset paging, one stream's page, the dashboard, the outbox
detail page's Retry, read-only titles, the shared stylesheet and quiet result counts."""

from __future__ import annotations

import re
from typing import Any
from uuid import uuid4

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_eventsource import DjangoEventStore, DomainEvent
from django_eventsource.admin import EventRecordAdmin
from django_eventsource.admin._common import ADMIN_STYLESHEET
from django_eventsource.admin.dashboard import BEHIND, PAUSED, RUNNING, projection_status
from django_eventsource.models import Checkpoint, EventRecord, OutboxMessage
from django_eventsource.projections.django_dead_letters import DjangoDLQRepository
from tests.factories import account_history
from tests.test_admin import outbox_row

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EVENTSOURCE_PROJECTIONS = []


def changelist(model: str) -> str:
    return reverse(f"admin:django_eventsource_{model}_changelist")


def change(model: str, pk: object) -> str:
    return reverse(f"admin:django_eventsource_{model}_change", args=[pk])


def save(events: list[DomainEvent]) -> None:
    DjangoEventStore().append_events(events[0].aggregate_id, "Account", events, 0)


def positions(response: Any) -> list[int]:
    """The positions listed on an events page, top to bottom."""
    return [
        int(p)
        for p in re.findall(r'<th class="field-event_position"><a [^>]*>(\d+)</a>', response.text)
    ]


def staff(*perms: str) -> Client:
    user = User.objects.create_user(f"staff-{uuid4().hex[:6]}", password="x", is_staff=True)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


# -- events list: keyset paging ---------------------------------------------------------------


@pytest.fixture
def many_events(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    monkeypatch.setattr(EventRecordAdmin, "list_per_page", 5)
    for _ in range(4):
        save(account_history(deposits=2))  # 12 events
    return list(EventRecord.objects.order_by("-position").values_list("position", flat=True))


def test_older_and_newer_walk_the_list_by_position(
    admin_client: Client, many_events: list[int]
) -> None:
    first = admin_client.get(changelist("eventrecord"))
    assert positions(first) == many_events[:5]
    assert "Newer" not in first.text

    older_url = re.search(r'<a href="([^"]+)" class="older">', first.text)
    assert older_url is not None
    second = admin_client.get(changelist("eventrecord") + older_url[1].replace("&amp;", "&"))
    assert positions(second) == many_events[5:10]

    newer_url = re.search(r'<a href="([^"]+)" class="newer">', second.text)
    assert newer_url is not None
    back = admin_client.get(changelist("eventrecord") + newer_url[1].replace("&amp;", "&"))
    assert positions(back) == many_events[:5]


def test_the_oldest_page_and_a_jump_to_a_position(
    admin_client: Client, many_events: list[int]
) -> None:
    oldest = admin_client.get(changelist("eventrecord"), {"after": "0"})
    assert positions(oldest) == many_events[-5:]
    assert 'class="older"' not in oldest.text

    target = many_events[7]
    jumped = admin_client.get(changelist("eventrecord"), {"position": str(target)})
    assert positions(jumped) == many_events[7:12]


def test_keyset_paging_keeps_the_filters(admin_client: Client, many_events: list[int]) -> None:
    deposits = list(
        EventRecord.objects.filter(event_type="MoneyDeposited")
        .order_by("-position")
        .values_list("position", flat=True)
    )
    page = admin_client.get(
        changelist("eventrecord"), {"event_type": "MoneyDeposited", "before": str(deposits[2])}
    )
    assert positions(page) == deposits[3:8]


def test_a_bad_position_is_refused_not_ignored(
    admin_client: Client, many_events: list[int]
) -> None:
    response = admin_client.get(changelist("eventrecord"), {"before": "soon"})
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


# -- events list: fitting the page --------------------------------------------------------------


def test_the_list_shows_short_ids_with_the_full_id_on_hover_and_a_payload_preview(
    admin_client: Client,
) -> None:
    history = account_history(deposits=1)
    save(history)

    response = admin_client.get(changelist("eventrecord"))

    full = str(history[0].aggregate_id)
    assert f'<span class="eventsource-id" title="{full}">{full[:8]}…</span>' in response.text
    assert 'class="eventsource-preview"' in response.text
    assert "&quot;amount&quot;" in response.text


def test_no_tenant_column_without_tenants_and_one_with_them(admin_client: Client) -> None:
    save(account_history(deposits=1))
    without = admin_client.get(changelist("eventrecord"))
    assert "column-tenant" not in without.text

    tenant = uuid4()
    save(account_history(deposits=1, tenant_id=tenant))
    with_tenants = admin_client.get(changelist("eventrecord"))
    assert "column-tenant" in with_tenants.text
    assert f'title="{tenant}"' in with_tenants.text


def test_one_aggregate_stream_in_version_order_with_payloads(admin_client: Client) -> None:
    history = account_history(deposits=3)
    save(history)
    save(account_history(deposits=1))

    response = admin_client.get(
        changelist("eventrecord"),
        {"aggregate_type": "Account", "aggregate_id": str(history[0].aggregate_id)},
    )

    versions = re.findall(r'<td class="field-version">(\d+)</td>', response.text)
    assert versions == ["1", "2", "3", "4"]
    assert response.text.count('<pre class="eventsource-pre eventsource-json">') == 4
    assert "4 events in this stream, in version order" in response.text


# -- result counts, titles, stylesheet ------------------------------------------------------------


@pytest.mark.parametrize("model", ["outboxmessage", "snapshot", "deadletter", "checkpoint"])
def test_an_unfiltered_list_does_not_offer_show_all(admin_client: Client, model: str) -> None:
    outbox_row("pending")

    response = admin_client.get(changelist(model))

    assert response.status_code == 200
    assert "Show all" not in response.text
    assert "0 results" not in response.text


def test_a_filtered_list_still_offers_to_clear_the_filter(admin_client: Client) -> None:
    outbox_row("pending")
    outbox_row("failed")

    response = admin_client.get(changelist("outboxmessage"), {"q": str(uuid4())})

    assert "0 results" in response.text
    assert "Show all" in response.text


def test_read_only_detail_pages_are_titled_view(admin_client: Client) -> None:
    row = outbox_row("failed", last_error="boom")
    save(account_history(deposits=0))
    event = EventRecord.objects.get()

    assert "<h1>View outbox message</h1>" in admin_client.get(change("outboxmessage", row.pk)).text
    assert "<h1>View event</h1>" in admin_client.get(change("eventrecord", event.pk)).text


def test_every_eventsource_page_loads_the_shared_stylesheet(admin_client: Client) -> None:
    row = outbox_row("failed", last_error="x" * 3000)
    history = account_history(deposits=1)
    save(history)
    letter = DjangoDLQRepository().add_failed_event(
        event_id=history[1].event_id,
        projection_name="Ledger",
        event_type=history[1].event_type,
        event_data=history[1].to_dict(),
        error=RuntimeError("boom"),
        retry_count=3,
    )
    pages = [
        changelist("eventrecord"),
        change("outboxmessage", row.pk),
        change("deadletter", letter),
        reverse("admin:django_eventsource_dashboard"),
    ]
    for url in pages:
        assert f"/static/{ADMIN_STYLESHEET}" in admin_client.get(url).text, url


# -- outbox detail page ------------------------------------------------------------------------


def test_the_outbox_detail_page_retries_a_failed_row(admin_client: Client) -> None:
    row = outbox_row("failed", last_error="ConnectionError", retry_count=9)
    page = admin_client.get(change("outboxmessage", row.pk))
    retry_url = reverse("admin:django_eventsource_outboxmessage_retry", args=[row.pk])
    assert f'action="{retry_url}"' in page.text

    response = admin_client.post(retry_url, follow=True)

    assert "1 message will be published on the next relay pass." in response.text
    row.refresh_from_db()
    assert (row.status, row.retry_count) == ("pending", 0)


def test_retry_needs_the_change_permission_and_a_post(admin_client: Client) -> None:
    row = outbox_row("failed", last_error="ConnectionError")
    retry_url = reverse("admin:django_eventsource_outboxmessage_retry", args=[row.pk])
    viewer = staff("view_outboxmessage")

    assert "eventsource-retry" not in viewer.get(change("outboxmessage", row.pk)).text
    assert viewer.post(retry_url).status_code == 403
    assert admin_client.get(retry_url).status_code == 405
    row.refresh_from_db()
    assert row.status == "failed"


def test_a_published_row_has_no_retry_button(admin_client: Client) -> None:
    row = outbox_row("published")
    assert "eventsource-retry" not in admin_client.get(change("outboxmessage", row.pk)).text


def test_unpublished_outbox_rows_cannot_be_deleted_and_the_page_says_why(
    admin_client: Client,
) -> None:
    pending = outbox_row("pending")
    published = outbox_row("published")

    page = admin_client.get(change("outboxmessage", pending.pk))
    assert "deletelink" not in page.text
    assert "it cannot be deleted here" in page.text
    assert (
        admin_client.post(
            reverse("admin:django_eventsource_outboxmessage_delete", args=[pending.pk]),
            {"post": "yes"},
        ).status_code
        == 403
    )
    assert 'value="delete_selected"' not in admin_client.get(changelist("outboxmessage")).text
    assert "deletelink" in admin_client.get(change("outboxmessage", published.pk)).text
    assert OutboxMessage.objects.filter(pk=pending.pk).exists()


# -- dashboard -------------------------------------------------------------------------------


def test_the_dashboard_shows_projections_dead_letters_and_outbox_with_links(
    admin_client: Client, settings: Any
) -> None:
    settings.EVENTSOURCE_PROJECTIONS = ["tests.testapp.projections.AccountSummaryProjection"]
    settings.EVENTSOURCE_HEALTH_MAX_LAG_EVENTS = 1
    history = account_history(deposits=2)
    save(history)
    head = EventRecord.objects.order_by("-position").first()
    assert head is not None
    Checkpoint.objects.create(projection_name="Ledger", position=head.position)
    DjangoDLQRepository().add_failed_event(
        event_id=history[1].event_id,
        projection_name="Ledger",
        event_type=history[1].event_type,
        event_data=history[1].to_dict(),
        error=RuntimeError("boom"),
        retry_count=3,
    )
    outbox_row("pending")
    outbox_row("failed")

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse("admin:django_eventsource_dashboard"))

    text = response.text
    assert response.status_code == 200
    summary = re.search(r'data-projection="AccountSummaryProjection">(.*?)</tr>', text, re.S)
    ledger = re.search(r'data-projection="Ledger">(.*?)</tr>', text, re.S)
    assert summary is not None and ledger is not None
    assert "never ran" in summary[1] and BEHIND in summary[1]
    assert RUNNING in ledger[1]
    assert "projection_name__exact=Ledger&amp;status__exact=failed" in ledger[1]
    assert ">1 failed dead letter<" in text
    assert "?status__exact=pending" in text and "?status__exact=failed" in text
    own = [q for q in queries.captured_queries if "eventsource_" in q["sql"]]
    # Checkpoints with lag and dead letters, outbox summary, the never-ran projection's head.
    assert len(own) <= 4


def test_the_dashboard_needs_the_checkpoint_view_permission() -> None:
    url = reverse("admin:django_eventsource_dashboard")
    assert staff().get(url).status_code == 403
    assert staff("view_checkpoint").get(url).status_code == 200


def test_the_app_page_and_the_events_list_link_to_the_dashboard(admin_client: Client) -> None:
    url = reverse("admin:django_eventsource_dashboard")
    assert url in admin_client.get(reverse("admin:app_list", args=["django_eventsource"])).text
    assert url in admin_client.get(changelist("eventrecord")).text


def test_status_is_behind_past_either_threshold(settings: Any) -> None:
    settings.EVENTSOURCE_HEALTH_MAX_LAG_EVENTS = 10
    checkpoint = Checkpoint(projection_name="p", position=5)
    checkpoint.head_position, checkpoint.head_event_id, checkpoint.oldest_unread_at = 15, None, None
    assert projection_status(checkpoint) == RUNNING
    checkpoint.head_position = 16
    assert projection_status(checkpoint) == BEHIND


def test_a_paused_projection_shows_paused_whatever_its_lag() -> None:
    checkpoint = Checkpoint(projection_name="p", position=5, paused_at=timezone.now())
    checkpoint.head_position, checkpoint.head_event_id, checkpoint.oldest_unread_at = 5, None, None
    assert projection_status(checkpoint) == PAUSED


def test_the_jump_form_keeps_the_filters_but_not_the_old_cursor(
    admin_client: Client, many_events: list[int]
) -> None:
    response = admin_client.get(
        changelist("eventrecord"), {"event_type": "MoneyDeposited", "before": "10"}
    )
    form = re.search(r'<form method="get" id="eventsource-jump".*?</form>', response.text, re.S)
    assert form is not None
    assert '<input type="hidden" name="event_type" value="MoneyDeposited">' in form[0]
    assert 'name="before"' not in form[0]


def test_a_page_deep_in_the_list_is_one_query_without_a_count(
    admin_client: Client, many_events: list[int]
) -> None:
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(changelist("eventrecord"), {"before": str(many_events[5])})
    own = [q["sql"] for q in queries.captured_queries if "eventsource_" in q["sql"]]
    assert len(own) == 1
    assert "COUNT(" not in own[0].upper()
    assert f"positions {many_events[6]} to {many_events[10]}" in response.text
