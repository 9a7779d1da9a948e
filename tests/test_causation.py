"""Causation and correlation: events saved in reaction to another event are linked to it,
from the request that started the chain to the projection handler that continued it."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from django.test import Client, override_settings

from django_eventsource import (
    AggregateRepository,
    DeclarativeProjection,
    DjangoEventStore,
    DomainEvent,
    event_context,
    handles,
)
from django_eventsource.exceptions import InvalidEventError
from django_eventsource.projections.runner import run_projections
from tests.testapp.domain import Account, AccountOpened, MoneyDeposited

pytestmark = pytest.mark.django_db

WELCOME_BONUS = "tests.test_causation.WelcomeBonus"


class WelcomeBonus(DeclarativeProjection):
    """A reaction: every new account gets a deposit of 5, saved from the handler."""

    @handles(AccountOpened)
    def on_opened(self, event: AccountOpened) -> None:
        repo = AggregateRepository(DjangoEventStore(), Account)
        account = repo.load(event.aggregate_id)
        account.deposit(Decimal("5"))
        repo.save(account)

    def reset(self) -> None:
        """Reactions have no read model to drop."""


def _repo() -> AggregateRepository[Account]:
    return AggregateRepository(DjangoEventStore(), Account)


def _events(account_id: UUID) -> list[DomainEvent]:
    return DjangoEventStore().get_events(account_id, "Account").events


@override_settings(EVENTSOURCE_PROJECTIONS=[WELCOME_BONUS])
def test_an_event_saved_by_a_projection_handler_is_caused_by_the_event_it_handled() -> None:
    correlation_id = uuid4()
    account = _repo().create_new(uuid4())
    account.open("ada")
    with event_context(actor_id="signup-form", correlation_id=correlation_id):
        _repo().save(account)

    run_projections(once=True)

    opened, bonus = _events(account.aggregate_id)
    assert isinstance(bonus, MoneyDeposited) and bonus.amount == Decimal("5")
    assert bonus.causation_id == opened.event_id
    assert bonus.correlation_id == opened.correlation_id == correlation_id
    assert bonus.is_caused_by(opened)


@pytest.mark.urls("tests.urls_metadata")
@override_settings(EVENTSOURCE_PROJECTIONS=[WELCOME_BONUS])
def test_the_request_correlation_id_follows_the_chain_into_reactions(client: Client) -> None:
    correlation_id = uuid4()
    response = client.post("/accounts/", headers={"X-Correlation-ID": str(correlation_id)})
    account_id = UUID(response.json()["account_id"])

    run_projections(once=True)

    opened, bonus = _events(account_id)
    assert opened.causation_id is None
    assert bonus.causation_id == opened.event_id
    assert {opened.correlation_id, bonus.correlation_id} == {correlation_id}


def test_events_saved_in_a_task_carry_the_context_of_the_block() -> None:
    cause = uuid4()
    correlation_id = uuid4()
    account = _repo().create_new(uuid4())
    account.open("ada")
    account.deposit(Decimal("1"))

    with (
        event_context(actor_id="nightly-import", correlation_id=str(correlation_id)),
        event_context(causation_id=cause),
    ):
        _repo().save(account)

    events = _events(account.aggregate_id)
    assert {(e.actor_id, e.correlation_id, e.causation_id) for e in events} == {
        ("nightly-import", correlation_id, cause)
    }


def test_values_set_on_the_event_itself_win_over_the_context() -> None:
    own_correlation, own_cause = uuid4(), uuid4()
    account = _repo().create_new(uuid4())
    account.raise_event(
        AccountOpened,
        owner="ada",
        actor_id="admin",
        correlation_id=own_correlation,
        causation_id=own_cause,
    )

    with event_context(actor_id="web", correlation_id=uuid4(), causation_id=uuid4()):
        _repo().save(account)

    [event] = _events(account.aggregate_id)
    assert (event.actor_id, event.correlation_id, event.causation_id) == (
        "admin",
        own_correlation,
        own_cause,
    )


def test_context_ids_must_be_uuids() -> None:
    with (
        pytest.raises(InvalidEventError, match="correlation_id"),
        event_context(correlation_id="request-42"),
    ):
        pass
