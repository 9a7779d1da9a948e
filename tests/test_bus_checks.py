"""The bus factory (``get_event_bus``) and the bus system checks E010-E012."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_eventsource import InMemoryEventBus, RedisEventBus
from django_eventsource.bus import get_event_bus, reset_event_bus
from django_eventsource.bus import redis as redis_bus
from django_eventsource.checks import check_bus_backend


def make_memory_bus() -> InMemoryEventBus:
    """A factory named by dotted path in the tests below."""
    return InMemoryEventBus()


def make_not_a_bus() -> object:
    return object()


@pytest.fixture(autouse=True)
def _fresh_bus() -> Iterator[None]:
    reset_event_bus()
    yield
    reset_event_bus()


def _ids(**settings: object) -> list[str]:
    with override_settings(**{f"EVENTSOURCE_{k}": v for k, v in settings.items()}):
        return [message.id or "" for message in check_bus_backend()]


@override_settings(EVENTSOURCE_EVENT_BUS=None)
def test_no_bus_is_configured_by_default() -> None:
    assert get_event_bus() is None


@override_settings(EVENTSOURCE_EVENT_BUS="memory")
def test_the_memory_bus_is_built_once_per_process() -> None:
    bus = get_event_bus()

    assert isinstance(bus, InMemoryEventBus)
    assert get_event_bus() is bus


def test_the_redis_bus_takes_its_configuration_from_settings() -> None:
    with override_settings(
        EVENTSOURCE_EVENT_BUS="redis",
        EVENTSOURCE_REDIS_URL="redis://cache.internal:6380/2",
        EVENTSOURCE_REDIS_STREAM_PREFIX="shop",
        EVENTSOURCE_REDIS_MAX_RETRIES=7,
    ):
        bus = get_event_bus()

    assert isinstance(bus, RedisEventBus)
    assert bus.config.redis_url == "redis://cache.internal:6380/2"
    assert (bus.config.stream_name, bus.config.dead_letter_stream) == ("shop:events", "shop:dlq")
    assert bus.config.max_retries == 7


@override_settings(EVENTSOURCE_EVENT_BUS="tests.test_bus_checks.make_memory_bus")
def test_a_dotted_path_names_a_bus_factory() -> None:
    assert isinstance(get_event_bus(), InMemoryEventBus)


@override_settings(EVENTSOURCE_EVENT_BUS="tests.test_bus_checks.make_not_a_bus")
def test_a_factory_returning_something_else_is_a_configuration_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="not an EventBus"):
        get_event_bus()


def test_known_buses_pass_the_checks() -> None:
    assert _ids(EVENT_BUS=None) == []
    assert _ids(EVENT_BUS="memory") == []
    assert _ids(EVENT_BUS="redis", REDIS_URL="rediss://example:6380/0") == []
    assert _ids(EVENT_BUS="tests.test_bus_checks.make_memory_bus") == []


NOT_A_BUS = 42


def test_a_dotted_path_to_something_other_than_a_bus_or_factory_is_e010() -> None:
    assert _ids(EVENT_BUS="tests.test_bus_checks.NOT_A_BUS") == ["django_eventsource.E010"]
    assert _ids(EVENT_BUS="collections.OrderedDict") == ["django_eventsource.E010"]
    assert _ids(EVENT_BUS="tests.nowhere.make_bus") == []  # E004: does not import


def test_the_redis_bus_without_the_redis_package_is_e011(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_bus, "REDIS_AVAILABLE", False)

    assert _ids(EVENT_BUS="redis") == ["django_eventsource.E011"]


def test_a_redis_url_with_another_scheme_is_e012() -> None:
    assert _ids(EVENT_BUS="redis", REDIS_URL="http://localhost:6379") == ["django_eventsource.E012"]
    assert _ids(EVENT_BUS="redis", REDIS_URL="unix:///run/redis.sock") == []


@pytest.mark.django_db  # manage.py check may ask the database about its features
@override_settings(EVENTSOURCE_EVENT_BUS="redis", EVENTSOURCE_REDIS_URL="localhost:6379")
def test_manage_py_check_fails_on_a_bad_redis_url() -> None:
    with pytest.raises(SystemCheckError, match="E012"):
        call_command("check")
