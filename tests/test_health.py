"""The health view reports lag, dead letters and the outbox, and turns 503 past thresholds."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any
from uuid import uuid4

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings
from django.urls import path
from django.utils import timezone

from django_eventsource import DjangoCheckpointRepository, DjangoEventStore, views
from django_eventsource.health import get_health
from django_eventsource.models import Checkpoint, DeadLetter, EventRecord, OutboxMessage
from django_eventsource.stores.interface import ReaderBlocker

urlpatterns = [path("health/", views.health)]

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.test_health")]

SUMMARY = "tests.testapp.projections.AccountSummaryProjection"


def _store_events(count: int) -> int:
    """Store ``count`` events of one account; returns the highest position.

    Positions come from a sequence that rolled-back tests have advanced, so tests
    compute expected figures from the returned position, never from 1.
    """
    aggregate_id = uuid4()
    EventRecord.objects.bulk_create(
        EventRecord(
            event_id=uuid4(),
            aggregate_type="Account",
            aggregate_id=aggregate_id,
            aggregate_version=version,
            event_type="MoneyDeposited",
            correlation_id=uuid4(),
            occurred_at="2026-01-01T00:00:00Z",
            payload={"amount": "1"},
        )
        for version in range(1, count + 1)
    )
    return int(EventRecord.objects.order_by("-position").values_list("position", flat=True)[0])


@override_settings(EVENTSOURCE_PROJECTIONS=[])
def test_health_is_ok_with_no_lag_and_no_dead_letters(client: Client) -> None:
    top = _store_events(3)
    Checkpoint.objects.create(projection_name="Balances", position=top)

    response = client.get("/health/")

    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    body = response.json()
    assert body["status"] == "ok"
    assert body["healthy"] is True
    assert body["global_position"] == top
    assert body["safe_high_water_mark"] == top
    assert body["projections"] == [
        {
            "name": "Balances",
            "position": top,
            "lag_events": 0,
            "lag_seconds": 0.0,
            "dead_letters": 0,
            "last_processed_at": None,
            "parked": 0,
            "paused": False,
            "last_error": "",
        }
    ]
    assert body["dead_letters_failed"] == 0
    assert body["outbox_pending"] == 0
    assert body["outbox_oldest_pending_seconds"] is None
    assert body["readers_held_back"] == []
    assert body["readers_held_back_seconds"] == 0.0
    assert body["problems"] == []


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_a_configured_projection_without_a_checkpoint_lags_by_every_event(
    client: Client,
) -> None:
    top = _store_events(2)

    body = client.get("/health/").json()

    assert [(p["name"], p["position"], p["lag_events"]) for p in body["projections"]] == [
        ("AccountSummaryProjection", 0, top)
    ]


@override_settings(EVENTSOURCE_PROJECTIONS=[], EVENTSOURCE_HEALTH_MAX_LAG_EVENTS=2)
def test_health_is_503_when_a_projection_lags_past_the_event_threshold(client: Client) -> None:
    top = _store_events(5)
    Checkpoint.objects.create(projection_name="Balances", position=top - 5)

    response = client.get("/health/")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["projections"][0]["lag_events"] == 5
    assert body["projections"][0]["lag_seconds"] > 0
    assert body["problems"] == ["projection Balances is 5 events behind (limit 2)"]


@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY], EVENTSOURCE_HEALTH_MAX_LAG_SECONDS=60)
def test_a_configured_projection_that_never_ran_is_as_old_as_the_first_event(
    client: Client,
) -> None:
    top = _store_events(2)
    EventRecord.objects.filter(position__lte=top).update(
        recorded_at=timezone.now() - timedelta(minutes=5)
    )

    response = client.get("/health/")

    assert response.status_code == 503
    (projection,) = response.json()["projections"]
    assert projection["lag_seconds"] >= 300


@override_settings(EVENTSOURCE_PROJECTIONS=[])
def test_health_reports_the_lag_the_checkpoint_repository_reports(client: Client) -> None:
    top = _store_events(4)
    Checkpoint.objects.create(projection_name="Balances", position=top - 3)
    EventRecord.objects.filter(position=top - 2).update(
        recorded_at=timezone.now() - timedelta(minutes=10)
    )

    (projection,) = client.get("/health/").json()["projections"]
    lag = DjangoCheckpointRepository().get_lag_metrics("Balances")

    assert lag is not None
    assert projection["lag_events"] == lag.lag_events == 3
    assert 600 <= projection["lag_seconds"] <= lag.lag_seconds


@override_settings(EVENTSOURCE_PROJECTIONS=[], EVENTSOURCE_HEALTH_MAX_LAG_SECONDS=60)
def test_health_is_503_when_the_oldest_unprocessed_event_is_older_than_the_threshold(
    client: Client,
) -> None:
    top = _store_events(2)
    EventRecord.objects.filter(position=top).update(
        recorded_at=timezone.now() - timedelta(minutes=5)
    )
    Checkpoint.objects.create(projection_name="Balances", position=top - 1)

    response = client.get("/health/")

    assert response.status_code == 503
    (projection,) = response.json()["projections"]
    assert projection["lag_events"] == 1
    assert projection["lag_seconds"] >= 300
    assert "Balances is 300s behind" in response.json()["problems"][0]


@override_settings(EVENTSOURCE_PROJECTIONS=[], EVENTSOURCE_HEALTH_MAX_DEAD_LETTERS=0)
def test_health_is_503_when_dead_letters_exceed_the_threshold(client: Client) -> None:
    DeadLetter.objects.create(
        event_id=uuid4(), projection_name="Balances", event_type="MoneyDeposited"
    )
    DeadLetter.objects.create(
        event_id=uuid4(),
        projection_name="Balances",
        event_type="MoneyDeposited",
        status=DeadLetter.Status.RESOLVED,
    )

    response = client.get("/health/")

    assert response.status_code == 503
    body = response.json()
    assert body["dead_letters_failed"] == 1
    assert body["projections"][0]["name"] == "Balances"
    assert body["projections"][0]["dead_letters"] == 1
    assert body["problems"] == ["1 dead letter(s) (limit 0)"]


@override_settings(EVENTSOURCE_PROJECTIONS=[], EVENTSOURCE_HEALTH_MAX_DEAD_LETTERS=5)
def test_dead_letters_below_the_threshold_keep_the_health_ok(client: Client) -> None:
    for _ in range(3):
        DeadLetter.objects.create(
            event_id=uuid4(), projection_name="Balances", event_type="MoneyDeposited"
        )

    response = client.get("/health/")

    assert response.status_code == 200
    assert response.json()["projections"][0]["dead_letters"] == 3


@override_settings(EVENTSOURCE_PROJECTIONS=[], EVENTSOURCE_HEALTH_MAX_DEAD_LETTERS=5)
def test_health_reports_the_outbox_backlog(client: Client) -> None:
    for status in ("pending", "pending", "failed", "published"):
        OutboxMessage.objects.create(
            event_id=uuid4(),
            event_type="MoneyDeposited",
            aggregate_id=uuid4(),
            aggregate_type="Account",
            status=status,
        )
    OutboxMessage.objects.filter(status="pending").update(
        created_at=timezone.now() - timedelta(seconds=90)
    )

    body = client.get("/health/").json()

    assert body["outbox_pending"] == 2
    assert body["outbox_failed"] == 1
    assert body["outbox_oldest_pending_seconds"] >= 90


@override_settings(EVENTSOURCE_PROJECTIONS=[], EVENTSOURCE_HEALTH_MAX_DEAD_LETTERS=0)
def test_a_head_request_gets_the_health_status(client: Client) -> None:
    DeadLetter.objects.create(
        event_id=uuid4(), projection_name="Balances", event_type="MoneyDeposited"
    )

    assert client.head("/health/").status_code == 503


def test_health_rejects_other_methods(client: Client) -> None:
    assert client.post("/health/").status_code == 405


@pytest.mark.postgres
@override_settings(EVENTSOURCE_PROJECTIONS=[])
def test_health_names_the_transaction_holding_readers_back(client: Client) -> None:
    import psycopg

    params = connection.get_connection_params()
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    with psycopg.connect(**params, application_name="stuck-writer") as writer:
        writer.execute(
            f"LOCK TABLE {EventRecord._meta.db_table} IN ROW EXCLUSIVE MODE /* {SECRET} */"
        )

        writer_pid = writer.info.backend_pid

        report = get_health()
        response = client.get("/health/")

        writer.rollback()
    (blocker,) = report.readers_held_back
    assert blocker["pid"] == writer_pid
    assert blocker["application_name"] == "stuck-writer"
    assert report.readers_held_back_seconds >= 0
    assert [b["pid"] for b in response.json()["readers_held_back"]] == [writer_pid]
    assert SECRET not in response.content.decode()


#: A literal value in another session's SQL.
SECRET = "card 4111-1111-1111-1111"


@pytest.fixture
def blocking_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """A session holding readers back, whatever the database (SQLite has none of its own)."""
    blocker = ReaderBlocker(
        pid=4242,
        xact_start=None,
        duration_seconds=90.0,
        state="idle in transaction",
        application_name="billing",
        query=f"UPDATE payment SET note = '{SECRET}'",
    )
    monkeypatch.setattr(DjangoEventStore, "get_reader_blockers", lambda self: [blocker])


@override_settings(EVENTSOURCE_PROJECTIONS=[])
def test_the_health_view_shows_no_sql_of_blocking_sessions_by_default(
    client: Client, admin_client: Client, blocking_session: None
) -> None:
    for caller in (client, admin_client):
        response = caller.get("/health/")

        (blocker,) = response.json()["readers_held_back"]
        assert blocker["pid"] == 4242
        assert blocker["application_name"] == "billing"
        assert "query" not in blocker
        assert SECRET not in response.content.decode()


@override_settings(EVENTSOURCE_PROJECTIONS=[], EVENTSOURCE_HEALTH_SHOW_QUERIES=True)
def test_with_show_queries_on_only_staff_users_see_the_sql_of_blocking_sessions(
    client: Client, admin_client: Client, django_user_model: Any, blocking_session: None
) -> None:
    client.force_login(django_user_model.objects.create_user("clerk", password="x"))

    assert SECRET not in client.get("/health/").content.decode()
    assert SECRET not in Client().get("/health/").content.decode()
    (blocker,) = admin_client.get("/health/").json()["readers_held_back"]
    assert SECRET in blocker["query"]


@override_settings(EVENTSOURCE_PROJECTIONS=[])
def test_eventsource_status_still_shows_the_sql_of_blocking_sessions(
    blocking_session: None,
) -> None:
    out = StringIO()

    call_command("eventsource_status", stdout=out)

    assert SECRET in out.getvalue()
