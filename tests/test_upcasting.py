"""Upcasting: events stored under an old schema version load as the current class
everywhere events are read, and a broken chain is reported at start-up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar
from uuid import UUID, uuid4

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from pydantic import BaseModel

from django_eventsource import (
    AggregateRepository,
    DeclarativeAggregate,
    DeclarativeProjection,
    DjangoEventStore,
    DomainEvent,
    EventRegistry,
    default_registry,
    handles,
    upcaster,
)
from django_eventsource.checks import check_upcasters
from django_eventsource.events.upcasting import find_broken_upcaster_chains
from django_eventsource.exceptions import UpcastError
from django_eventsource.projections.runner import run_projections


class CustomerRegisteredV1(DomainEvent):
    """The event as first written: one ``name`` field."""

    event_type: str = "CustomerRegistered"
    aggregate_type: str = "Customer"
    name: str


class CustomerRegistered(DomainEvent):
    """Today's event: the name is split (v2) and the surname renamed (v3)."""

    aggregate_type: str = "Customer"
    event_version: int = 3
    given_name: str
    family_name: str
    newsletter: bool = False


def split_name(data: dict[str, Any]) -> dict[str, Any]:
    first, _, last = data.pop("name").partition(" ")
    return {**data, "first_name": first, "last_name": last}


def rename_names(data: dict[str, Any]) -> dict[str, Any]:
    data["given_name"] = data.pop("first_name")
    data["family_name"] = data.pop("last_name")
    return data


class CustomerState(BaseModel):
    given_name: str = ""
    family_name: str = ""


class Customer(DeclarativeAggregate[CustomerState]):
    aggregate_type = "Customer"

    def _get_initial_state(self) -> CustomerState:
        return CustomerState()

    @handles(CustomerRegistered)
    def _on_registered(self, event: CustomerRegistered) -> None:
        self._state = CustomerState(given_name=event.given_name, family_name=event.family_name)


class CustomerDirectory(DeclarativeProjection):
    """A read model of customer names (kept on the class: the runner builds the instance)."""

    names: ClassVar[dict[UUID, str]] = {}

    @handles(CustomerRegistered)
    def on_registered(self, event: CustomerRegistered) -> None:
        self.names[event.aggregate_id] = f"{event.family_name}, {event.given_name}"

    def reset(self) -> None:
        self.names.clear()


@pytest.fixture
def old_registry() -> EventRegistry:
    """What the code base registered when the v1 events were written."""
    registry = EventRegistry()
    registry.register(CustomerRegisteredV1)
    return registry


@pytest.fixture
def current_registry() -> EventRegistry:
    """Today's code base: the v3 class and the two upcasters."""
    registry = EventRegistry()
    registry.register(CustomerRegistered)
    upcaster("CustomerRegistered", from_version=1, registry=registry)(split_name)
    upcaster("CustomerRegistered", from_version=2, registry=registry)(rename_names)
    return registry


@pytest.fixture
def stored_v1_customer(old_registry: EventRegistry) -> UUID:
    customer_id = uuid4()
    old = CustomerRegisteredV1(aggregate_id=customer_id, name="Ada Lovelace")
    assert old.event_version == 1
    DjangoEventStore(registry=old_registry).append_events(customer_id, "Customer", [old], 0)
    return customer_id


pytestmark = pytest.mark.django_db


def test_a_version_one_event_loads_as_the_version_three_class_in_an_aggregate(
    stored_v1_customer: UUID, current_registry: EventRegistry
) -> None:
    repo = AggregateRepository(DjangoEventStore(registry=current_registry), Customer)

    customer = repo.load(stored_v1_customer)

    assert customer.state == CustomerState(given_name="Ada", family_name="Lovelace")
    assert customer.version == 1


def test_a_version_one_event_is_read_back_as_the_version_three_class_by_read_all(
    stored_v1_customer: UUID, current_registry: EventRegistry
) -> None:
    store = DjangoEventStore(registry=current_registry)

    [stored] = [s for s in store.read_all() if s.aggregate_id == stored_v1_customer]

    event = stored.event
    assert isinstance(event, CustomerRegistered)
    assert (event.event_version, event.given_name, event.family_name) == (3, "Ada", "Lovelace")
    assert event.newsletter is False


def test_get_events_by_type_and_read_stream_upcast_too(
    stored_v1_customer: UUID, current_registry: EventRegistry
) -> None:
    store = DjangoEventStore(registry=current_registry)

    by_type = store.get_events_by_type("Customer")
    in_stream = [s.event for s in store.read_stream(f"{stored_v1_customer}:Customer")]

    for events in (by_type, in_stream):
        assert [type(e) for e in events] == [CustomerRegistered]


@override_settings(EVENTSOURCE_PROJECTIONS=["tests.test_upcasting.CustomerDirectory"])
def test_a_projection_receives_version_one_events_as_the_version_three_class(
    stored_v1_customer: UUID, current_registry: EventRegistry
) -> None:
    CustomerDirectory.names.clear()

    summary = run_projections(once=True, store=DjangoEventStore(registry=current_registry))

    assert summary.dead_lettered == 0
    assert CustomerDirectory.names == {stored_v1_customer: "Lovelace, Ada"}


def test_events_written_at_the_current_version_are_not_upcast(
    current_registry: EventRegistry,
) -> None:
    calls: list[int] = []
    current_registry.unregister("CustomerRegistered")
    current_registry.register(CustomerRegistered)

    @upcaster("CustomerRegistered", from_version=1, registry=current_registry)
    def counting_split(data: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        return split_name(data)

    upcaster("CustomerRegistered", from_version=2, registry=current_registry)(rename_names)
    store = DjangoEventStore(registry=current_registry)
    customer = Customer(uuid4())
    customer.raise_event(CustomerRegistered, given_name="Grace", family_name="Hopper")
    store.append_events(customer.aggregate_id, "Customer", customer.uncommitted_events, 0)

    [event] = store.get_events(customer.aggregate_id, "Customer").events

    assert isinstance(event, CustomerRegistered) and event.family_name == "Hopper"
    assert calls == []


def test_a_failing_upcaster_raises_an_upcast_error_naming_the_event(
    stored_v1_customer: UUID, old_registry: EventRegistry
) -> None:
    registry = EventRegistry()
    registry.register(CustomerRegistered)

    @upcaster("CustomerRegistered", from_version=1, registry=registry)
    def wrong_field(data: dict[str, Any]) -> dict[str, Any]:
        data.pop("full_name")
        return data

    upcaster("CustomerRegistered", from_version=2, registry=registry)(rename_names)
    repo = AggregateRepository(DjangoEventStore(registry=registry), Customer)

    with pytest.raises(UpcastError, match=r"wrong_field.*CustomerRegistered"):
        repo.load(stored_v1_customer)


def test_a_missing_link_in_the_chain_is_an_upcast_error_on_read(
    stored_v1_customer: UUID,
) -> None:
    registry = EventRegistry()
    registry.register(CustomerRegistered)
    upcaster("CustomerRegistered", from_version=1, registry=registry)(split_name)
    repo = AggregateRepository(DjangoEventStore(registry=registry), Customer)

    with pytest.raises(UpcastError, match="from version 2"):
        repo.load(stored_v1_customer)


def test_a_complete_chain_has_no_problems(current_registry: EventRegistry) -> None:
    assert find_broken_upcaster_chains(current_registry) == []


def test_chain_problems_name_the_event_type_and_the_versions() -> None:
    registry = EventRegistry()
    registry.register(CustomerRegistered)
    upcaster("CustomerRegistered", from_version=1, registry=registry)(split_name)
    upcaster("CustomerRegistered", from_version=3, registry=registry)(rename_names)
    upcaster("CustomerRegistred", from_version=1, registry=registry)(split_name)

    problems = find_broken_upcaster_chains(registry)

    assert problems == [
        "CustomerRegistred: upcaster(s) registered for an event type that is not registered",
        "CustomerRegistered: no upcaster from version(s) 2 (current version 3)",
        "CustomerRegistered: upcaster(s) from version(s) 3 but the current version is 3",
    ]


def test_upcasters_cannot_start_below_version_one() -> None:
    with pytest.raises(ValueError, match="from_version"):
        upcaster("CustomerRegistered", from_version=0, registry=EventRegistry())


class ShipmentDispatched(DomainEvent):
    aggregate_type: str = "Shipment"
    event_version: int = 3
    carrier: str


@pytest.fixture
def broken_chain_in_default_registry() -> Iterator[None]:
    default_registry.register(ShipmentDispatched)
    upcaster("ShipmentDispatched", from_version=1)(split_name)
    try:
        yield
    finally:
        default_registry.unregister("ShipmentDispatched")


@pytest.mark.usefixtures("broken_chain_in_default_registry")
def test_manage_py_check_reports_a_missing_upcaster_as_e002() -> None:
    [error] = check_upcasters()
    assert error.id == "django_eventsource.E002"
    assert "ShipmentDispatched: no upcaster from version(s) 2" in error.msg

    with pytest.raises(SystemCheckError, match=r"django_eventsource\.E002"):
        call_command("check")


def test_manage_py_check_passes_with_the_project_registry() -> None:
    assert check_upcasters() == []
    call_command("check")
