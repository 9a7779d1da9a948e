"""EventRegistry: registration, lookup, thread safety and upcasting."""

from __future__ import annotations

import threading
from typing import Any
from uuid import uuid4

import pytest
from pydantic import create_model

from django_eventsource import (
    DomainEvent,
    DuplicateEventTypeError,
    EventRegistry,
    EventTypeNotFoundError,
    default_registry,
    get_event_class,
    get_event_class_or_none,
    is_event_registered,
    list_registered_events,
    register_event,
    upcaster,
)
from django_eventsource.bus.memory import InMemoryEventBus
from django_eventsource.bus.redis import RedisEventBus
from django_eventsource.events.upcasting import find_broken_upcaster_chains
from django_eventsource.exceptions import SerializationError, UpcastError
from django_eventsource.outbox.relay import OutboxRelay
from django_eventsource.outbox.repository import InMemoryOutboxRepository
from tests.testapp.domain import AccountOpened


@pytest.fixture
def registry() -> EventRegistry:
    return EventRegistry()


def define_event(name: str, module: str = __name__, **fields: Any) -> type[DomainEvent]:
    """A new DomainEvent subclass called ``name`` with ``aggregate_type`` "Thing"."""
    event_class: type[DomainEvent] = create_model(
        name, __base__=DomainEvent, __module__=module, aggregate_type=(str, "Thing"), **fields
    )
    return event_class


# -- registration -------------------------------------------------------------------------


def test_register_event_without_arguments_registers_under_the_type_name(
    registry: EventRegistry,
) -> None:
    event_class = define_event("PlainRegistered")
    assert register_event(registry=registry)(event_class) is event_class
    assert registry.get("PlainRegistered") is event_class


def test_bare_register_event_decorator_uses_the_default_registry() -> None:
    @register_event
    class BareDecorated(DomainEvent):
        aggregate_type: str = "Thing"

    try:
        assert get_event_class("BareDecorated") is BareDecorated
        assert is_event_registered("BareDecorated")
    finally:
        default_registry.unregister("BareDecorated")


def test_register_event_with_an_explicit_type_name(registry: EventRegistry) -> None:
    @register_event(event_type="thing.renamed.v1", registry=registry)
    class ThingRenamed(DomainEvent):
        aggregate_type: str = "Thing"

    assert registry.get("thing.renamed.v1") is ThingRenamed
    assert not registry.contains("ThingRenamed")
    event = ThingRenamed(aggregate_id=uuid4())
    assert event.event_type == "thing.renamed.v1"
    assert registry.deserialize(event.to_dict()) == event


def test_a_refused_registration_does_not_rename_the_class(registry: EventRegistry) -> None:
    registry.register(define_event("Taken"), "shared.name")
    newcomer = define_event("Newcomer", module="other.events")
    with pytest.raises(DuplicateEventTypeError):
        registry.register(newcomer, "shared.name")
    assert newcomer.event_type_name() == "Newcomer"


def test_an_explicit_name_for_a_class_with_its_own_event_type_is_an_alias(
    registry: EventRegistry,
) -> None:
    @register_event(registry=registry)
    class ThingArchived(DomainEvent):
        event_type: str = "thing.archived"
        aggregate_type: str = "Thing"

    registry.register(ThingArchived, "ThingDeleted")
    legacy = ThingArchived(aggregate_id=uuid4()).to_dict() | {"event_type": "ThingDeleted"}
    assert isinstance(registry.deserialize(legacy), ThingArchived)
    assert ThingArchived(aggregate_id=uuid4()).event_type == "thing.archived"
    assert registry.list_types() == ["ThingDeleted", "thing.archived"]


def test_registering_a_non_event_class_is_a_type_error(registry: EventRegistry) -> None:
    with pytest.raises(TypeError, match="not a DomainEvent subclass"):
        registry.register(dict)  # type: ignore[arg-type]


def test_two_classes_under_one_type_name_is_an_error_naming_both(
    registry: EventRegistry,
) -> None:
    first = define_event("Clash", module="shop.events")
    second = define_event("Clash", module="billing.events")
    registry.register(first)
    with pytest.raises(DuplicateEventTypeError) as excinfo:
        registry.register(second)
    message = str(excinfo.value)
    assert "shop.events.Clash" in message
    assert "billing.events.Clash" in message
    assert registry.get("Clash") is first


def test_registering_the_same_class_twice_is_harmless(registry: EventRegistry) -> None:
    registry.register(AccountOpened)
    registry.register(AccountOpened)
    assert registry.list_types() == ["AccountOpened"]


# -- lookup -------------------------------------------------------------------------------


def test_unknown_type_error_lists_the_registered_types(registry: EventRegistry) -> None:
    registry.register(define_event("Alpha"))
    registry.register(define_event("Beta"))
    with pytest.raises(EventTypeNotFoundError) as excinfo:
        registry.get("Gamma")
    assert excinfo.value.available_types == ["Alpha", "Beta"]
    assert "'Gamma'" in str(excinfo.value)
    assert "Alpha, Beta" in str(excinfo.value)


def test_unknown_type_error_asks_whether_the_type_was_registered(registry: EventRegistry) -> None:
    with pytest.raises(EventTypeNotFoundError, match="did you forget to register it"):
        registry.get("Forgotten")


def test_module_level_lookups_accept_a_registry(registry: EventRegistry) -> None:
    event_class = registry.register(define_event("OnlyHere"))
    assert get_event_class("OnlyHere", registry=registry) is event_class
    assert get_event_class_or_none("OnlyHere", registry=registry) is event_class
    assert get_event_class_or_none("Missing", registry=registry) is None
    assert is_event_registered("OnlyHere", registry=registry)
    assert not is_event_registered("Missing", registry=registry)
    assert list_registered_events(registry=registry) == ["OnlyHere"]


def test_an_empty_registry_passed_explicitly_is_used_not_the_default() -> None:
    empty = EventRegistry()
    assert is_event_registered("AccountOpened")
    assert not is_event_registered("AccountOpened", registry=empty)
    assert list_registered_events(registry=empty) == []
    with pytest.raises(EventTypeNotFoundError):
        get_event_class("AccountOpened", registry=empty)


def test_the_default_registry_knows_the_test_domain() -> None:
    assert get_event_class("AccountOpened") is AccountOpened
    assert {"AccountOpened", "MoneyDeposited"} <= set(list_registered_events())


def test_separate_registries_do_not_see_each_others_types() -> None:
    left, right = EventRegistry(), EventRegistry()
    left.register(define_event("LeftOnly"))
    right.register(define_event("RightOnly"))
    assert left.list_types() == ["LeftOnly"]
    assert right.list_types() == ["RightOnly"]
    assert not is_event_registered("LeftOnly")


def test_unregister_forgets_the_type(registry: EventRegistry) -> None:
    registry.register(define_event("Temporary"))
    registry.unregister("Temporary")
    assert registry.get_or_none("Temporary") is None


def test_unregister_says_whether_it_removed_a_type(registry: EventRegistry) -> None:
    registry.register(define_event("Temporary"))
    assert registry.unregister("Temporary") is True
    assert registry.unregister("Temporary") is False


def test_an_empty_registry_is_truthy_and_its_length_counts_the_types() -> None:
    registry = EventRegistry()
    assert bool(registry) is True
    assert len(registry) == 0
    registry.register(define_event("Counted"))
    assert len(registry) == 1


def test_an_empty_registry_given_to_the_redis_bus_is_the_one_it_decodes_with() -> None:
    empty = EventRegistry()
    assert RedisEventBus(event_registry=empty).registry is empty


def test_an_empty_registry_given_to_the_outbox_relay_is_the_one_it_decodes_with() -> None:
    empty = EventRegistry()
    relay = OutboxRelay(InMemoryEventBus(), InMemoryOutboxRepository(), registry=empty)
    assert relay.registry is empty


def test_concurrent_registration_and_lookup_lose_nothing(registry: EventRegistry) -> None:
    threads_count, per_thread = 16, 25
    classes = [
        [define_event(f"Concurrent{t}x{i}") for i in range(per_thread)]
        for t in range(threads_count)
    ]
    barrier = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def work(batch: list[type[DomainEvent]]) -> None:
        try:
            barrier.wait(timeout=10)
            for event_class in batch:
                registry.register(event_class)
                assert registry.get(event_class.event_type_name()) is event_class
                registry.list_types()
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(batch,)) for batch in classes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(registry) == threads_count * per_thread
    for batch in classes:
        for event_class in batch:
            assert registry.get(event_class.__name__) is event_class


# -- upcasting ----------------------------------------------------------------------------


def register_three_versions(registry: EventRegistry) -> type[DomainEvent]:
    """Version 1 had ``name``; v2 split it; v3 renamed ``first`` to ``given_name``."""

    @register_event(registry=registry)
    class PersonRegistered(DomainEvent):
        aggregate_type: str = "Person"
        event_version: int = 3
        given_name: str
        last_name: str

    return PersonRegistered


def stored_v1(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid4()),
        "event_type": "PersonRegistered",
        "event_version": 1,
        "occurred_at": "2024-05-01T10:00:00Z",
        "aggregate_id": str(uuid4()),
        "aggregate_type": "Person",
        "aggregate_version": 1,
        "correlation_id": str(uuid4()),
        "metadata": {},
        "name": "Ada Lovelace",
        **overrides,
    }


def test_an_old_event_is_upcast_through_the_whole_chain(registry: EventRegistry) -> None:
    person_class = register_three_versions(registry)

    @upcaster("PersonRegistered", from_version=1, registry=registry)
    def split_name(data: dict[str, Any]) -> dict[str, Any]:
        first, _, last = data.pop("name").partition(" ")
        return {**data, "first": first, "last_name": last}

    @upcaster("PersonRegistered", from_version=2, registry=registry)
    def rename_first(data: dict[str, Any]) -> dict[str, Any]:
        given_name = data.pop("first")
        return {**data, "given_name": given_name}

    event = registry.deserialize(stored_v1())
    assert isinstance(event, person_class)
    assert event.event_version == 3
    assert (event.given_name, event.last_name) == ("Ada", "Lovelace")  # type: ignore[attr-defined]
    assert registry.upcaster_versions("PersonRegistered") == [1, 2]
    assert default_registry.upcaster_versions("PersonRegistered") == []


def test_a_current_event_is_not_upcast(registry: EventRegistry) -> None:
    register_three_versions(registry)
    data = stored_v1(event_version=3, given_name="Grace", last_name="Hopper")
    del data["name"]
    assert registry.deserialize(data).event_version == 3


def test_a_missing_link_in_the_chain_is_an_upcast_error(registry: EventRegistry) -> None:
    register_three_versions(registry)

    @upcaster("PersonRegistered", from_version=1, registry=registry)
    def split_name(data: dict[str, Any]) -> dict[str, Any]:
        return data

    with pytest.raises(UpcastError, match="from version 2") as excinfo:
        registry.deserialize(stored_v1())
    assert excinfo.value.event_type == "PersonRegistered"


def test_a_failing_upcaster_names_the_event_type(registry: EventRegistry) -> None:
    register_three_versions(registry)

    @upcaster("PersonRegistered", from_version=1, registry=registry)
    def broken(data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("first")

    with pytest.raises(UpcastError) as excinfo:
        registry.deserialize(stored_v1())
    assert excinfo.value.event_type == "PersonRegistered"


def test_a_payload_that_no_longer_validates_names_its_event_type(registry: EventRegistry) -> None:
    registry.register(define_event("Measured", value=(int, ...)))
    data = stored_v1(event_type="Measured", aggregate_type="Thing", value="not a number")
    del data["name"]
    with pytest.raises(SerializationError) as excinfo:
        registry.deserialize(data)
    assert excinfo.value.event_type == "Measured"


def test_find_broken_upcaster_chains_names_the_missing_versions(registry: EventRegistry) -> None:
    register_three_versions(registry)
    upcaster("PersonRegistered", from_version=1, registry=registry)(lambda data: data)
    problems = find_broken_upcaster_chains(registry)
    assert len(problems) == 1
    assert "PersonRegistered" in problems[0]
    assert "version(s) 2" in problems[0]


def test_a_complete_chain_is_not_reported(registry: EventRegistry) -> None:
    register_three_versions(registry)
    upcaster("PersonRegistered", from_version=1, registry=registry)(lambda data: data)
    upcaster("PersonRegistered", from_version=2, registry=registry)(lambda data: data)
    assert find_broken_upcaster_chains(registry) == []


def test_an_upcaster_beyond_the_current_version_is_reported(registry: EventRegistry) -> None:
    register_three_versions(registry)
    for version in (1, 2, 3):
        upcaster("PersonRegistered", from_version=version, registry=registry)(lambda d: d)
    problems = find_broken_upcaster_chains(registry)
    assert problems == [
        "PersonRegistered: upcaster(s) from version(s) 3 but the current version is 3"
    ]


def test_two_different_upcasters_for_one_version_are_refused(registry: EventRegistry) -> None:
    register_three_versions(registry)

    @upcaster("PersonRegistered", from_version=1, registry=registry)
    def first(data: dict[str, Any]) -> dict[str, Any]:
        return data

    with pytest.raises(UpcastError, match="already registered"):

        @upcaster("PersonRegistered", from_version=1, registry=registry)
        def second(data: dict[str, Any]) -> dict[str, Any]:
            return data
