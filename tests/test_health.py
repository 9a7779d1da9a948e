"""The health view reports lag, dead letters and the outbox, and turns 503 past thresholds."""

from __future__ import annotations

from uuid import uuid4

import pytest
from django.test import Client, override_settings
from django.urls import path

from django_eventsource import views
from django_eventsource.models import Checkpoint, DeadLetter, EventRecord, OutboxMessage

urlpatterns = [path("health/", views.health)]

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.test_health")]


def _store_events(count: int) -> None:
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


@override_settings(EVENTSOURCE_PROJECTIONS=[])
def test_health_is_ok_with_no_lag_and_no_dead_letters(client: Client) -> None:
    _store_events(3)
    top = EventRecord.objects.order_by("-position").values_list("position", flat=True)[0]
    Checkpoint.objects.create(projection_name="Balances", position=top)

    response = client.get("/health/")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["projections"] == [
        {
            "name": "Balances",
            "position": top,
            "lag_events": 0,
            "lag_seconds": 0.0,
            "dead_letters": 0,
            "last_processed_at": None,
        }
    ]
    assert body["outbox_pending"] == 0
    assert body["problems"] == []


@override_settings(EVENTSOURCE_PROJECTIONS=[], EVENTSOURCE_HEALTH_MAX_LAG_EVENTS=2)
def test_health_is_503_when_a_projection_lags_past_the_threshold(client: Client) -> None:
    _store_events(5)
    Checkpoint.objects.create(projection_name="Balances", position=0)

    response = client.get("/health/")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["projections"][0]["lag_events"] == 5
    assert body["projections"][0]["lag_seconds"] > 0
    assert "Balances is 5 events behind" in body["problems"][0]


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
    assert body["projections"][0]["dead_letters"] == 1


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

    body = client.get("/health/").json()

    assert body["outbox_pending"] == 2
    assert body["outbox_failed"] == 1
    assert body["outbox_oldest_pending_seconds"] >= 0


def test_health_rejects_other_methods(client: Client) -> None:
    assert client.post("/health/").status_code == 405
