"""``EventMetadataMiddleware``: events saved during a request carry the user and the
request's correlation id."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client, override_settings

from django_eventsource import DjangoEventStore, DomainEvent
from django_eventsource.context import get_event_context

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.urls_metadata")]


def _saved_event(response: Any) -> DomainEvent:
    assert response.status_code == 200
    account_id = UUID(response.json()["account_id"])
    [event] = DjangoEventStore().get_events(account_id, "Account").events
    return event


@pytest.fixture
def user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(username="ada", password="-")


def test_events_carry_the_logged_in_user_and_the_request_correlation_id(
    client: Client, user: Any
) -> None:
    client.force_login(user)
    correlation_id = uuid4()

    response = client.post("/accounts/", headers={"X-Correlation-ID": str(correlation_id)})

    event = _saved_event(response)
    assert event.actor_id == str(user.pk)
    assert event.correlation_id == correlation_id
    assert response["X-Correlation-ID"] == str(correlation_id)


def test_without_the_header_a_new_correlation_id_is_made_and_echoed(client: Client) -> None:
    first = client.post("/accounts/")
    second = client.post("/accounts/")

    first_event, second_event = _saved_event(first), _saved_event(second)
    assert str(first_event.correlation_id) == first["X-Correlation-ID"]
    assert str(second_event.correlation_id) == second["X-Correlation-ID"]
    assert first_event.correlation_id != second_event.correlation_id


def test_anonymous_requests_save_events_without_an_actor(client: Client) -> None:
    assert _saved_event(client.post("/accounts/")).actor_id is None


def test_a_header_that_is_not_a_uuid_is_replaced_by_a_new_id(client: Client) -> None:
    response = client.post("/accounts/", headers={"X-Correlation-ID": "req-42"})

    event = _saved_event(response)
    assert response["X-Correlation-ID"] == str(event.correlation_id) != "req-42"


@override_settings(EVENTSOURCE_CORRELATION_ID_HEADER="X-Request-ID")
def test_the_correlation_header_name_is_a_setting(client: Client) -> None:
    correlation_id = uuid4()

    response = client.post("/accounts/", headers={"X-Request-ID": str(correlation_id)})

    assert _saved_event(response).correlation_id == correlation_id
    assert response["X-Request-ID"] == str(correlation_id)


def test_the_metadata_does_not_outlive_the_request(client: Client, user: Any) -> None:
    client.force_login(user)
    client.post("/accounts/", headers={"X-Correlation-ID": str(uuid4())})

    context = get_event_context()
    assert (context.actor_id, context.correlation_id) == (None, None)


def test_async_views_save_events_with_the_same_metadata(
    async_client: AsyncClient, user: Any
) -> None:
    correlation_id = uuid4()

    async def request() -> Any:
        await async_client.aforce_login(user)
        return await async_client.post(
            "/accounts/async/", headers={"X-Correlation-ID": str(correlation_id)}
        )

    response = async_to_sync(request)()

    event = _saved_event(response)
    assert event.actor_id == str(user.pk)
    assert event.correlation_id == correlation_id
    assert response["X-Correlation-ID"] == str(correlation_id)
