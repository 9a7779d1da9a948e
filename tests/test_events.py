"""DomainEvent: immutability, defaults, derivation helpers and serialization."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError

from django_eventsource import DomainEvent
from tests.factories import AccountOpenedFactory, MoneyDepositedFactory
from tests.testapp.domain import AccountOpened


class InvoiceIssued(DomainEvent):
    aggregate_type: str = "Invoice"
    customer_id: UUID
    total: Decimal
    due_at: datetime


class LegacyNamedEvent(DomainEvent):
    event_type: str = "invoice.voided"
    aggregate_type: str = "Invoice"


def make_invoice(**fields: object) -> InvoiceIssued:
    values: dict[str, object] = {
        "aggregate_id": uuid4(),
        "customer_id": uuid4(),
        "total": Decimal("1234.50"),
        "due_at": datetime(2025, 3, 1, 12, 30, tzinfo=UTC),
    }
    values.update(fields)
    return InvoiceIssued(**values)  # type: ignore[arg-type]


# -- immutability and defaults ------------------------------------------------------------


def test_events_cannot_be_modified_after_creation() -> None:
    event = AccountOpenedFactory()
    with pytest.raises(ValidationError):
        event.owner = "someone else"
    with pytest.raises(ValidationError):
        event.aggregate_version = 7


def test_events_are_hashable_despite_their_metadata_dict() -> None:
    event = AccountOpenedFactory(metadata={"source": "api"})
    same = AccountOpened.from_dict(event.to_dict())
    other = AccountOpenedFactory(metadata={"source": "api"})
    assert len({event, same, other}) == 2
    assert {event: "seen"}[same] == "seen"


def test_each_event_gets_its_own_ids() -> None:
    first, second = AccountOpenedFactory(), AccountOpenedFactory()
    assert isinstance(first.event_id, UUID)
    assert first.event_id != second.event_id
    assert first.correlation_id != second.correlation_id
    assert first.causation_id is None


def test_occurred_at_defaults_to_an_aware_utc_now() -> None:
    before = datetime.now(UTC)
    event = AccountOpenedFactory()
    after = datetime.now(UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert before <= event.occurred_at <= after


def test_naive_occurred_at_is_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        AccountOpenedFactory(occurred_at=datetime(2025, 1, 1, 9, 0))


def test_occurred_at_in_another_timezone_is_converted_to_utc() -> None:
    paris_winter = timezone(timedelta(hours=1))
    event = AccountOpenedFactory(occurred_at=datetime(2025, 1, 1, 9, 0, tzinfo=paris_winter))
    assert event.occurred_at == datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
    assert event.occurred_at.tzinfo == UTC


def test_event_type_defaults_to_the_class_name() -> None:
    assert AccountOpenedFactory().event_type == "AccountOpened"
    assert AccountOpened.event_type_name() == "AccountOpened"


def test_event_type_can_be_overridden_by_the_class() -> None:
    event = LegacyNamedEvent(aggregate_id=uuid4())
    assert event.event_type == "invoice.voided"
    assert LegacyNamedEvent.event_type_name() == "invoice.voided"


@pytest.mark.parametrize("field", ["event_version", "aggregate_version"])
@pytest.mark.parametrize("value", [0, -1])
def test_versions_below_one_are_rejected(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        AccountOpenedFactory(**{field: value})


def test_a_misspelt_field_is_an_error_not_silently_dropped() -> None:
    with pytest.raises(ValidationError, match="ownr"):
        AccountOpened(aggregate_id=uuid4(), ownr="ada")  # type: ignore[call-arg]


def test_a_missing_required_field_is_an_error() -> None:
    with pytest.raises(ValidationError, match="owner"):
        AccountOpened(aggregate_id=uuid4())  # type: ignore[call-arg]


# -- causation and correlation ------------------------------------------------------------


def test_with_causation_links_the_new_event_to_its_cause() -> None:
    cause = AccountOpenedFactory()
    effect = MoneyDepositedFactory().with_causation(cause)
    assert effect.causation_id == cause.event_id
    assert effect.correlation_id == cause.correlation_id
    assert effect.is_caused_by(cause)
    assert effect.is_correlated_with(cause)


def test_unrelated_events_are_neither_caused_nor_correlated() -> None:
    first, second = AccountOpenedFactory(), MoneyDepositedFactory()
    assert not second.is_caused_by(first)
    assert not second.is_correlated_with(first)


def test_a_chain_of_effects_shares_the_correlation_of_its_origin() -> None:
    origin = AccountOpenedFactory()
    effect = MoneyDepositedFactory().with_causation(origin)
    consequence = MoneyDepositedFactory().with_causation(effect)
    assert consequence.is_correlated_with(origin)
    assert consequence.is_caused_by(effect)
    assert not consequence.is_caused_by(origin)


def test_derivation_helpers_leave_the_original_untouched() -> None:
    cause = AccountOpenedFactory()
    original = MoneyDepositedFactory(metadata={"source": "api"})
    original.with_causation(cause)
    original.with_metadata(ip="10.0.0.1")
    original.with_aggregate_version(5)
    assert original.causation_id is None
    assert original.metadata == {"source": "api"}
    assert original.aggregate_version == 1


# -- metadata and version ---------------------------------------------------------------


def test_with_metadata_merges_into_existing_metadata() -> None:
    event = MoneyDepositedFactory(metadata={"source": "api", "ip": "10.0.0.1"})
    enriched = event.with_metadata(ip="10.0.0.2", user_agent="curl")
    assert enriched.metadata == {"source": "api", "ip": "10.0.0.2", "user_agent": "curl"}
    assert enriched.event_id == event.event_id


def test_with_aggregate_version_returns_a_copy_at_that_version() -> None:
    event = MoneyDepositedFactory()
    moved = event.with_aggregate_version(4)
    assert moved.aggregate_version == 4
    assert moved.event_id == event.event_id
    assert moved.amount == event.amount


@pytest.mark.parametrize("version", [0, -3])
def test_with_aggregate_version_rejects_versions_below_one(version: int) -> None:
    with pytest.raises(ValueError, match="aggregate_version"):
        MoneyDepositedFactory().with_aggregate_version(version)


# -- serialization ------------------------------------------------------------------------


def test_to_dict_is_plain_json() -> None:
    event = make_invoice(tenant_id=uuid4(), metadata={"channel": "web"})
    data = event.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["event_type"] == "InvoiceIssued"
    assert data["customer_id"] == str(event.customer_id)
    assert data["total"] == "1234.50"


def test_from_dict_round_trips_uuid_decimal_and_datetime_fields() -> None:
    event = make_invoice(
        tenant_id=uuid4(),
        actor_id="user-7",
        causation_id=uuid4(),
        aggregate_version=3,
        metadata={"channel": "web"},
    )
    restored = InvoiceIssued.from_dict(json.loads(json.dumps(event.to_dict())))
    assert restored == event
    assert isinstance(restored.customer_id, UUID)
    assert restored.total == Decimal("1234.50")
    assert restored.due_at == datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
    assert restored.occurred_at == event.occurred_at


def test_from_dict_rejects_unknown_fields() -> None:
    data = make_invoice().to_dict()
    data["totl"] = "1.00"
    with pytest.raises(ValidationError, match="totl"):
        InvoiceIssued.from_dict(data)


def test_payload_holds_only_the_events_own_fields() -> None:
    event = make_invoice()
    assert set(event.payload()) == {"customer_id", "total", "due_at"}


def test_str_of_an_event_names_its_type_ids_and_version_but_not_its_payload() -> None:
    event = make_invoice(aggregate_version=3)
    text = str(event)
    assert text.startswith("InvoiceIssued(")
    for part in (str(event.event_id), f"Invoice:{event.aggregate_id}", "v3"):
        assert part in text
    assert str(event.customer_id) not in text
    assert "1234.50" not in text
