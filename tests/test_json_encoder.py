from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from uuid import UUID, uuid4

import pytest
from pydantic import BaseModel

from django_eventsource import DomainEvent
from django_eventsource.events.serialization import EventSourceJSONEncoder, json_dumps, json_loads
from django_eventsource.exceptions import SerializationError


class Priority(Enum):
    LOW = 1
    HIGH = 2


class Channel(Enum):
    WEB = "web"
    SHOP = "shop"


class Address(BaseModel):
    street: str
    postcode: str


class ParcelShipped(DomainEvent):
    aggregate_type: str = "Parcel"
    carrier_id: UUID
    weight_kg: Decimal
    shipped_on: date
    promised_at: datetime
    priority: Priority
    channel: Channel
    address: Address
    tags: frozenset[str]


def make_event() -> ParcelShipped:
    return ParcelShipped(
        aggregate_id=uuid4(),
        carrier_id=uuid4(),
        weight_kg=Decimal("12.3400"),
        shipped_on=date(2026, 2, 28),
        promised_at=datetime(2026, 3, 2, 17, 30, 0, 123456, tzinfo=UTC),
        priority=Priority.HIGH,
        channel=Channel.SHOP,
        address=Address(street="1 Quay Road", postcode="AB1 2CD"),
        tags=frozenset({"fragile", "bulky", "insured"}),
        metadata={"source_ip": "203.0.113.9"},
    )


def test_an_event_dict_with_every_supported_type_round_trips_to_an_equal_event() -> None:
    event = make_event()
    event_dict = event.model_dump()  # Python mode: UUIDs, Decimals, datetimes, Enums intact

    rebuilt = ParcelShipped.from_dict(json_loads(json_dumps(event_dict)))

    assert rebuilt == event
    assert rebuilt.weight_kg == Decimal("12.3400")
    assert rebuilt.promised_at == event.promised_at


def test_each_type_is_encoded_in_its_documented_json_form() -> None:
    event = make_event()
    decoded = json_loads(json_dumps(event.model_dump()))

    assert decoded["event_id"] == str(event.event_id)
    assert decoded["weight_kg"] == "12.3400"  # a string: no precision lost to a float
    assert decoded["shipped_on"] == "2026-02-28"
    assert decoded["promised_at"] == "2026-03-02T17:30:00.123456+00:00"
    assert decoded["priority"] == 2
    assert decoded["channel"] == "shop"
    assert decoded["address"] == {"street": "1 Quay Road", "postcode": "AB1 2CD"}
    assert decoded["tags"] == ["bulky", "fragile", "insured"]


def test_a_set_of_uuids_becomes_a_sorted_list_of_strings() -> None:
    ids = {uuid4() for _ in range(5)}

    assert json_loads(json_dumps({"ids": ids})) == {"ids": [str(i) for i in sorted(ids)]}


def test_a_whole_pydantic_model_encodes_as_its_json_dump() -> None:
    event = make_event()

    assert json_loads(json_dumps(event)) == event.to_dict()


def test_an_aware_datetime_keeps_its_utc_offset() -> None:
    moment = datetime(2026, 1, 5, 9, 0, tzinfo=timezone(timedelta(hours=2)))

    assert json_loads(json_dumps({"at": moment})) == {"at": "2026-01-05T09:00:00+02:00"}


def test_equal_sets_always_encode_to_the_same_text() -> None:
    first = json_dumps({"ids": {3, 1, 2}, "mixed": {"b", 1, "a"}})
    second = json_dumps({"ids": {2, 3, 1}, "mixed": {1, "a", "b"}})

    assert first == second
    assert json_loads(first)["ids"] == [1, 2, 3]


def test_the_encoder_works_with_the_standard_json_module() -> None:
    encoded = json.dumps({"total": Decimal("0.10"), "id": UUID(int=1)}, cls=EventSourceJSONEncoder)

    assert json.loads(encoded) == {"total": "0.10", "id": "00000000-0000-0000-0000-000000000001"}


def test_an_unsupported_value_is_a_serialization_error_naming_the_type() -> None:
    with pytest.raises(SerializationError, match="object"):
        json_dumps({"handler": object()})


def test_malformed_json_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError):
        json_loads("{not json")


def test_utf8_bytes_decode_like_text() -> None:
    assert json_loads(json_dumps({"city": "Zürich"}).encode()) == {"city": "Zürich"}
