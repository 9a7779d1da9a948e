"""A small bank-account domain shared by the tests."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from pydantic import BaseModel

from django_eventsource import DeclarativeAggregate, DomainEvent, handles, register_event


@register_event
class AccountOpened(DomainEvent):
    aggregate_type: str = "Account"
    owner: str
    opening_balance: Decimal = Decimal("0")


@register_event
class MoneyDeposited(DomainEvent):
    aggregate_type: str = "Account"
    amount: Decimal


@register_event
class MoneyWithdrawn(DomainEvent):
    aggregate_type: str = "Account"
    amount: Decimal


@register_event
class AccountClosed(DomainEvent):
    aggregate_type: str = "Account"


class AccountState(BaseModel):
    account_id: UUID
    owner: str = ""
    balance: Decimal = Decimal("0")
    closed: bool = False


class Account(DeclarativeAggregate[AccountState]):
    aggregate_type = "Account"

    def _get_initial_state(self) -> AccountState:
        return AccountState(account_id=self.aggregate_id)

    # commands
    def open(self, owner: str, opening_balance: Decimal = Decimal("0")) -> None:
        if self.version:
            raise ValueError("account already opened")
        self.raise_event(AccountOpened, owner=owner, opening_balance=opening_balance)

    def deposit(self, amount: Decimal) -> None:
        if amount <= 0:
            raise ValueError("amount must be positive")
        self.raise_event(MoneyDeposited, amount=amount)

    def withdraw(self, amount: Decimal) -> None:
        if amount > self.state.balance:
            raise ValueError("insufficient funds")
        self.raise_event(MoneyWithdrawn, amount=amount)

    def close(self) -> None:
        self.raise_event(AccountClosed)

    # event handlers
    @handles(AccountOpened)
    def _on_opened(self, event: AccountOpened) -> None:
        self._state = self._state.model_copy(
            update={"owner": event.owner, "balance": event.opening_balance}
        )

    @handles(MoneyDeposited)
    def _on_deposited(self, event: MoneyDeposited) -> None:
        self._state = self._state.model_copy(update={"balance": self._state.balance + event.amount})

    @handles(MoneyWithdrawn)
    def _on_withdrawn(self, event: MoneyWithdrawn) -> None:
        self._state = self._state.model_copy(update={"balance": self._state.balance - event.amount})

    @handles(AccountClosed)
    def _on_closed(self, event: AccountClosed) -> None:
        self._state = self._state.model_copy(update={"closed": True})
