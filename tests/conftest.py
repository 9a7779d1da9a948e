"""Shared fixtures and the service policy.

Tests marked ``postgres`` run only when the suite runs on PostgreSQL. Tests marked
``redis`` need a Redis server: without one they are skipped, unless
``EVENTSOURCE_REQUIRE_SERVICES=1`` (CI), where a missing server fails them. The same
goes for the throwaway PostgreSQL cluster of the fault tests.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.db import connection

from django_eventsource import DjangoEventStore
from tests.browser import headless_chromium
from tests.services import ThrowawayPostgres, postgres_tools_available

REQUIRE_SERVICES = os.environ.get("EVENTSOURCE_REQUIRE_SERVICES") == "1"


def _redis_reachable() -> bool:
    url = urlparse(settings.REDIS_URL)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), timeout=2):
            return True
    except OSError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_postgres = connection.vendor == "postgresql"
    redis_up: bool | None = None
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(pytest.mark.skip(reason="PostgreSQL-only test (suite runs on SQLite)"))
        if "redis" in item.keywords:
            if redis_up is None:
                redis_up = _redis_reachable()
            if not redis_up and not REQUIRE_SERVICES:
                reason = f"Redis not reachable at {settings.REDIS_URL}"
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def redis_url() -> str:
    """The Redis URL for tests; fails (CI) or skips when the server does not answer."""
    if not _redis_reachable():
        if REQUIRE_SERVICES:
            pytest.fail(f"Redis is required but not reachable at {settings.REDIS_URL}")
        pytest.skip(f"Redis not reachable at {settings.REDIS_URL}")
    return str(settings.REDIS_URL)


@pytest.fixture
def store() -> DjangoEventStore:
    return DjangoEventStore()


@pytest.fixture
def poison() -> Iterator[set[Decimal]]:
    """The amounts the test app's projections refuse (``POISON_AMOUNTS``), empty before
    and after the test."""
    from tests.testapp import projections

    projections.POISON_AMOUNTS.clear()
    yield projections.POISON_AMOUNTS
    projections.POISON_AMOUNTS.clear()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium (``tests/browser.py``); fails (CI) or skips when not installed."""
    with headless_chromium() as driver:
        yield driver


@pytest.fixture
def make_bus(config: Any) -> Iterator[Callable[..., Any]]:
    """Redis buses on the module's ``config`` fixture, with fields replaced; closed after."""
    from django_eventsource.bus.redis import RedisEventBus

    buses: list[RedisEventBus] = []

    def make(**overrides: Any) -> RedisEventBus:
        bus = RedisEventBus(replace(config, **overrides))
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.close()


@pytest.fixture(scope="session")
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL cluster of this test process, which tests may stop and start."""
    if not postgres_tools_available():
        reason = "a throwaway PostgreSQL cluster needs pg_createcluster (postgresql-common)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason}; EVENTSOURCE_REQUIRE_SERVICES=1 requires it")
        pytest.skip(reason)
    cluster = ThrowawayPostgres.create()
    try:
        yield cluster
    finally:
        cluster.drop()


@pytest.fixture(autouse=True)
def _isolated_event_context() -> Iterator[None]:
    from django_eventsource.context import EventContext, _current

    token = _current.set(EventContext())
    yield
    _current.reset(token)
