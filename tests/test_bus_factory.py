"""The in-process bus built from settings runs the handlers registered for consumers."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from uuid import uuid4

import pytest

from django_eventsource import DomainEvent
from django_eventsource.bus import build_event_bus
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
