"""The in-process bus built from settings runs the handlers registered for consumers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from uuid import uuid4

import pytest
from django.test import override_settings

from django_eventsource import DomainEvent, EventRegistry, RedisEventBus, RedisEventBusConfig
from django_eventsource.bus import build_event_bus, build_redis_bus
from django_eventsource.bus.consumers import _registry, register_handler
from tests.testapp.domain import MoneyDeposited


@pytest.fixture
def clean_registry() -> Iterator[None]:
    saved = list(_registry)
    _registry.clear()
    yield
    _registry[:] = saved


def test_memory_bus_delivers_to_handlers_registered_for_consumers(clean_registry: None) -> None:
    received: list[DomainEvent] = []
    register_handler(MoneyDeposited, received.append)
    event = MoneyDeposited(aggregate_id=uuid4(), amount=Decimal("3"))

    bus = build_event_bus("memory")
    assert bus is not None
    bus.publish([event])

    assert received == [event]


@override_settings(
    EVENTSOURCE_REDIS_URL="redis://cache.internal:6380/2",
    EVENTSOURCE_REDIS_STREAM_PREFIX="shop",
    EVENTSOURCE_REDIS_CONSUMER_GROUP="workers",
)
def test_the_redis_bus_factory_reads_the_settings_and_takes_consumer_overrides() -> None:
    configured = build_redis_bus()
    billing = build_redis_bus("billing", "billing-1")

    assert (configured.config.redis_url, configured.config.stream_name) == (
        "redis://cache.internal:6380/2",
        "shop:events",
    )
    assert configured.config.consumer_group == "workers"
    assert (billing.config.consumer_group, billing.config.consumer_name) == (
        "billing",
        "billing-1",
    )
    assert billing.config.stream_name == "shop:events"


def test_the_redis_bus_factory_copies_a_bus_built_in_code_with_its_registry() -> None:
    registry = EventRegistry()
    registry.register(MoneyDeposited)
    original = RedisEventBus(
        RedisEventBusConfig(stream_prefix="custom", consumer_group="g", block_ms=250), registry
    )

    copy = build_redis_bus(consumer_name="c2", like=original)

    assert copy is not original
    assert copy.config == replace(original.config, consumer_name="c2")
    assert copy.registry is registry
