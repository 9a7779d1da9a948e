"""factory-boy factories for events and event streams of the test domain.

Events are pydantic models, so ``factory.Factory`` builds them by calling the class with
the declared fields. ``account_history`` gives a contiguous, storable stream.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import factory

from django_eventsource import DomainEvent
from tests.testapp.domain import AccountClosed, AccountOpened, MoneyDeposited, MoneyWithdrawn


class DomainEventFactory(factory.Factory):  # type: ignore[misc]
    """Fields every event needs; subclasses set ``Meta.model``."""

    class Meta:
        abstract = True

    aggregate_id = factory.LazyFunction(uuid4)
    aggregate_version = 1


class AccountOpenedFactory(DomainEventFactory):
    class Meta:
        model = AccountOpened

    owner = factory.Faker("first_name")
    opening_balance = Decimal("0")


class MoneyDepositedFactory(DomainEventFactory):
    class Meta:
        model = MoneyDeposited

    amount = factory.Faker("pydecimal", left_digits=3, right_digits=2, positive=True)


class MoneyWithdrawnFactory(DomainEventFactory):
    class Meta:
        model = MoneyWithdrawn

    amount = factory.Faker("pydecimal", left_digits=2, right_digits=2, positive=True)


class AccountClosedFactory(DomainEventFactory):
    class Meta:
        model = AccountClosed


def account_history(
    aggregate_id: UUID | None = None,
    deposits: int = 2,
    start_version: int = 1,
    **common: Any,
) -> list[DomainEvent]:
    """An opened account followed by ``deposits`` deposits, versions contiguous.

    With ``start_version > 1`` the stream continues an existing one: it has deposits only.
    ``common`` fields (``tenant_id``, ``occurred_at`` ...) go on every event.
    """
    agg_id = aggregate_id or uuid4()
    events: list[DomainEvent] = []
    version = start_version
    if start_version == 1:
        events.append(AccountOpenedFactory(aggregate_id=agg_id, aggregate_version=1, **common))
        version = 2
    for _ in range(deposits):
        events.append(
            MoneyDepositedFactory(aggregate_id=agg_id, aggregate_version=version, **common)
        )
        version += 1
    return events
