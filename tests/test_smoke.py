from decimal import Decimal
from uuid import uuid4

from django_eventsource import AggregateRepository, InMemoryEventStore
from tests.testapp.domain import Account


def test_saved_account_reloads_with_its_balance() -> None:
    repo = AggregateRepository(InMemoryEventStore(), Account)
    account = repo.create_new(uuid4())
    account.open("ada", Decimal("10"))
    account.deposit(Decimal("5"))
    repo.save(account)
    loaded = repo.load(account.aggregate_id)
    assert loaded.state.balance == Decimal("15")
    assert loaded.version == 2
