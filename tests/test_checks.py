"""System checks: each id fires for a bad setting and stays quiet for good ones."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.test import override_settings

from django_eventsource import (
    DeclarativeProjection,
    DomainEvent,
    Projection,
    checks,
    default_registry,
    handles,
    upcaster,
)
from django_eventsource.checks import (
    check_event_bus,
    check_numeric_settings,
    check_projection_handlers,
    check_projections,
    check_sqlite_writers,
    check_upcasters,
)
from tests.testapp import projections as testapp_projections
from tests.testapp.domain import AccountClosed, AccountOpened

# ``manage.py check`` runs the model checks against every database since Django 6.1.3;
# on SQLite the JSONField check then asks the database whether it supports JSON.
pytestmark = pytest.mark.django_db


def ids(messages: list[Any]) -> list[str]:
    return [message.id for message in messages]


def test_the_default_settings_pass_every_check() -> None:
    assert check_projections() == []
    assert check_upcasters() == []
    assert check_numeric_settings() == []
    assert check_event_bus() == []
    assert check_projection_handlers() == []
    assert check_sqlite_writers() == []
    call_command("check", fail_level="WARNING")


# -- E001 projections ---------------------------------------------------------------------


@override_settings(EVENTSOURCE_PROJECTIONS=["tests.testapp.domain.Account"])
def test_importable_projection_paths_pass() -> None:
    assert check_projections() == []


@pytest.mark.parametrize(
    "value",
    [
        ["tests.testapp.domain.NoSuchProjection"],
        ["not_a_module_at_all.Projection"],
        "tests.testapp.domain.Account",
        [object],
    ],
    ids=["missing-class", "missing-module", "not-a-list", "not-a-string"],
)
def test_a_bad_projections_setting_is_e001(value: object) -> None:
    with override_settings(EVENTSOURCE_PROJECTIONS=value):
        messages = check_projections()
        assert ids(messages) == ["django_eventsource.E001"]
        assert messages[0].hint
        with pytest.raises(SystemCheckError, match=r"django_eventsource\.E001"):
            call_command("check")


def test_e001_names_the_entry_that_fails() -> None:
    with override_settings(
        EVENTSOURCE_PROJECTIONS=["tests.testapp.domain.Account", "tests.testapp.domain.Nope"]
    ):
        (message,) = check_projections()
    assert "'tests.testapp.domain.Nope'" in message.msg


# -- E002 upcasters -----------------------------------------------------------------------


@pytest.fixture
def broken_upcaster_chain() -> Iterator[None]:
    class CheckedChainEvent(DomainEvent):
        aggregate_type: str = "Thing"
        event_version: int = 3

    default_registry.register(CheckedChainEvent)
    upcaster("CheckedChainEvent", from_version=1)(lambda data: data)
    yield
    default_registry.unregister("CheckedChainEvent")


@pytest.mark.usefixtures("broken_upcaster_chain")
def test_a_broken_upcaster_chain_is_e002() -> None:
    (message,) = check_upcasters()
    assert message.id == "django_eventsource.E002"
    assert "CheckedChainEvent" in message.msg
    with pytest.raises(SystemCheckError, match=r"django_eventsource\.E002"):
        call_command("check")


def test_e002_clears_once_the_chain_is_complete(broken_upcaster_chain: None) -> None:
    upcaster("CheckedChainEvent", from_version=2)(lambda data: data)
    assert check_upcasters() == []


# -- E003 numeric settings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("EVENTSOURCE_PROJECTION_BATCH_SIZE", 0),
        ("EVENTSOURCE_PROJECTION_BATCH_SIZE", "500"),
        ("EVENTSOURCE_REBUILD_BATCH_SIZE", 0),
        ("EVENTSOURCE_OUTBOX_BATCH_SIZE", -1),
        ("EVENTSOURCE_MAX_RETRIES", True),
        ("EVENTSOURCE_OUTBOX_MAX_ATTEMPTS", 2.5),
        ("EVENTSOURCE_POLL_INTERVAL", -0.1),
        ("EVENTSOURCE_RETRY_BACKOFF", "fast"),
        ("EVENTSOURCE_RETRY_BACKOFF_MAX", -1),
        ("EVENTSOURCE_OUTBOX_CLAIM_TIMEOUT", None),
        ("EVENTSOURCE_OUTBOX_GIVE_UP_AFTER", -60),
    ],
)
def test_an_out_of_range_number_is_e003(setting: str, value: object) -> None:
    with override_settings(**{setting: value}):
        messages = check_numeric_settings()
        assert ids(messages) == ["django_eventsource.E003"]
        assert setting in messages[0].msg
        assert "default" in (messages[0].hint or "")
        with pytest.raises(SystemCheckError, match=r"django_eventsource\.E003"):
            call_command("check")


@override_settings(
    EVENTSOURCE_PROJECTION_BATCH_SIZE=1,
    EVENTSOURCE_MAX_RETRIES=10,
    EVENTSOURCE_POLL_INTERVAL=0,
    EVENTSOURCE_RETRY_BACKOFF=2,
    EVENTSOURCE_OUTBOX_GIVE_UP_AFTER=0,
    EVENTSOURCE_OUTBOX_MAX_ATTEMPTS=None,
)
def test_in_range_numbers_pass() -> None:
    assert check_numeric_settings() == []


# -- W001 outbox without a bus ------------------------------------------------------------


@override_settings(EVENTSOURCE_OUTBOX_ENABLED=True, EVENTSOURCE_EVENT_BUS=None)
def test_an_outbox_without_a_bus_is_w001() -> None:
    assert ids(check_numeric_settings()) == ["django_eventsource.W001"]
    call_command("check")  # a warning alone does not fail the default level
    with pytest.raises(SystemCheckError, match=r"django_eventsource\.W001"):
        call_command("check", fail_level="WARNING")


@override_settings(EVENTSOURCE_OUTBOX_ENABLED=True, EVENTSOURCE_EVENT_BUS="memory")
def test_an_outbox_with_a_bus_passes() -> None:
    assert check_numeric_settings() == []


# -- W003 SQLite writers ------------------------------------------------------------------


class _Database:
    """What the check reads of a connection: its vendor and settings."""

    def __init__(self, vendor: str, options: dict[str, Any]) -> None:
        self.vendor = vendor
        self.settings_dict = {"OPTIONS": options}


@pytest.mark.parametrize(
    ("options", "missing"),
    [
        ({}, ["transaction_mode", "timeout"]),
        ({"timeout": 20}, ["transaction_mode"]),
        ({"transaction_mode": "DEFERRED", "timeout": 20}, ["transaction_mode"]),
        ({"transaction_mode": "IMMEDIATE"}, ["timeout"]),
        ({"transaction_mode": "IMMEDIATE", "timeout": 0}, ["timeout"]),
    ],
)
def test_sqlite_without_immediate_transactions_and_a_busy_timeout_is_w003(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], missing: list[str]
) -> None:
    monkeypatch.setattr(checks, "connections", {"default": _Database("sqlite", options)})

    (message,) = check_sqlite_writers()

    assert message.id == "django_eventsource.W003"
    assert "'default'" in message.msg and "database is locked" in message.msg
    assert all(name in message.msg for name in missing)
    assert "'transaction_mode': 'IMMEDIATE'" in message.hint


def test_sqlite_with_immediate_transactions_and_a_busy_timeout_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = {"transaction_mode": "immediate", "timeout": 5}
    monkeypatch.setattr(checks, "connections", {"default": _Database("sqlite", options)})

    assert check_sqlite_writers() == []


def test_other_databases_are_not_checked_for_sqlite_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(checks, "connections", {"default": _Database("postgresql", {})})

    assert check_sqlite_writers() == []


def test_manage_py_check_reports_w003_for_the_configured_sqlite_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("the suite's database is not SQLite")
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", {})

    call_command("check")  # a warning alone does not fail the default level
    with pytest.raises(SystemCheckError, match=r"django_eventsource\.W003"):
        call_command("check", fail_level="WARNING")


# -- E004 event bus -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [None, "memory", "redis", "django_eventsource.bus.memory.InMemoryEventBus"]
)
def test_known_event_bus_values_pass(value: object) -> None:
    with override_settings(EVENTSOURCE_EVENT_BUS=value):
        assert check_event_bus() == []


@pytest.mark.parametrize("value", ["rabbit", "myproject.buses.NoSuchBus", 42])
def test_an_unusable_event_bus_is_e004(value: object) -> None:
    with override_settings(EVENTSOURCE_EVENT_BUS=value):
        messages = check_event_bus()
        assert ids(messages) == ["django_eventsource.E004"]
        with pytest.raises(SystemCheckError, match=r"django_eventsource\.E004"):
            call_command("check")


# -- E020 / W020 projection handlers -------------------------------------------------------


class ParcelScanned(DomainEvent):
    """Never registered: the runner could not read it back."""

    aggregate_type: str = "Parcel"


class ParcelTracking(DeclarativeProjection):
    @handles(ParcelScanned)
    def on_scanned(self, event: ParcelScanned) -> None: ...

    def reset(self) -> None: ...


class ParcelCounter(Projection):
    def subscribed_to(self) -> list[type[DomainEvent]]:
        return [ParcelScanned]

    def handle(self, event: DomainEvent) -> None: ...

    def reset(self) -> None: ...


class AnyEventJournal(DeclarativeProjection):
    """Handles the base class: matched by every registered event class."""

    @handles(DomainEvent)
    def on_any(self, event: DomainEvent) -> None: ...

    def reset(self) -> None: ...


class ClosingsForgotten(DeclarativeProjection):
    @handles(AccountOpened)
    def on_opened(self, event: AccountOpened) -> None: ...

    def subscribed_to(self) -> list[type[DomainEvent]]:
        return [*super().subscribed_to(), AccountClosed]

    def reset(self) -> None: ...


def test_the_projections_of_the_test_app_pass_the_handler_checks() -> None:
    paths = [
        getattr(testapp_projections, name)
        for name in ("SUMMARY", "COUNTING", "TALLY", "FLAKY", "OPTIMISTIC", "ASYNC_JOURNAL")
    ]
    with override_settings(EVENTSOURCE_PROJECTIONS=[*paths, "tests.test_checks.AnyEventJournal"]):
        assert check_projection_handlers() == []


def test_events_registered_by_importing_the_projections_module_count_as_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "late_shipping.py").write_text(
        textwrap.dedent(
            """
            from django_eventsource import DeclarativeProjection, DomainEvent, handles
            from django_eventsource import register_event

            @register_event
            class LateParcelShipped(DomainEvent):
                aggregate_type: str = "Parcel"

            class LateShipping(DeclarativeProjection):
                @handles(LateParcelShipped)
                def on_shipped(self, event):
                    pass

                def reset(self):
                    pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "late_shipping", raising=False)
    try:
        with override_settings(EVENTSOURCE_PROJECTIONS=["late_shipping.LateShipping"]):
            assert check_projection_handlers() == []
    finally:
        default_registry.unregister("LateParcelShipped")
        sys.modules.pop("late_shipping", None)


def test_a_handler_of_an_unregistered_event_class_is_e020() -> None:
    with override_settings(EVENTSOURCE_PROJECTIONS=["tests.test_checks.ParcelTracking"]):
        (message,) = check_projection_handlers()
        assert message.id == "django_eventsource.E020"
        assert "tests.test_checks.ParcelTracking.on_scanned" in message.msg
        assert "ParcelScanned" in message.msg
        assert "@register_event" in (message.hint or "")
        with pytest.raises(SystemCheckError, match=r"django_eventsource\.E020"):
            call_command("check")


def test_e020_clears_once_the_event_class_is_registered() -> None:
    default_registry.register(ParcelScanned)
    try:
        with override_settings(EVENTSOURCE_PROJECTIONS=["tests.test_checks.ParcelTracking"]):
            assert check_projection_handlers() == []
    finally:
        default_registry.unregister("ParcelScanned")


def test_a_subscription_to_an_unregistered_event_class_is_e020_for_any_projection() -> None:
    with override_settings(EVENTSOURCE_PROJECTIONS=["tests.test_checks.ParcelCounter"]):
        (message,) = check_projection_handlers()
    assert message.id == "django_eventsource.E020"
    assert "ParcelCounter.subscribed_to()" in message.msg


def test_a_subscribed_event_class_without_a_handler_is_w020() -> None:
    with override_settings(EVENTSOURCE_PROJECTIONS=["tests.test_checks.ClosingsForgotten"]):
        (message,) = check_projection_handlers()
        assert message.id == "django_eventsource.W020"
        assert "tests.test_checks.ClosingsForgotten" in message.msg
        assert "AccountClosed" in message.msg
        call_command("check")  # a warning alone does not fail the default level
        with pytest.raises(SystemCheckError, match=r"django_eventsource\.W020"):
            call_command("check", fail_level="WARNING")


@override_settings(EVENTSOURCE_PROJECTIONS=["tests.testapp.domain.Account", "no.such.Path"])
def test_entries_that_are_not_projection_classes_are_left_to_e001() -> None:
    assert check_projection_handlers() == []
