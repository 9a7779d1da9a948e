"""The package root: framework-free names work without Django settings, and every name in
``__all__`` resolves once Django is configured."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from uuid import uuid4

import pytest

import django_eventsource
from django_eventsource import (
    AggregateNotFoundError,
    EventSourceError,
    EventTypeNotFoundError,
    EventVersionError,
    OptimisticLockError,
)
from django_eventsource.exceptions import (
    DuplicateEventIdError,
    InvalidEventError,
    SerializationError,
    UnhandledEventError,
    UpcastError,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter with no DJANGO_SETTINGS_MODULE: a plain-Python user of the
# event-sourcing core (events, in-memory store, aggregates, in-memory bus).
FRAMEWORK_FREE_SCRIPT = textwrap.dedent(
    """
    from decimal import Decimal
    from uuid import uuid4

    from pydantic import BaseModel

    import django_eventsource as es
    from django.conf import settings

    @es.register_event
    class Credited(es.DomainEvent):
        aggregate_type: str = "Wallet"
        amount: Decimal

    class WalletState(BaseModel):
        balance: Decimal = Decimal("0")

    class Wallet(es.DeclarativeAggregate[WalletState]):
        aggregate_type = "Wallet"

        def _get_initial_state(self):
            return WalletState()

        def credit(self, amount):
            self.raise_event(Credited, amount=amount)

        @es.handles(Credited)
        def _on_credited(self, event):
            self._state = WalletState(balance=self._state.balance + event.amount)

    received = []
    bus = es.InMemoryEventBus()
    bus.subscribe(Credited, received.append)
    store = es.InMemoryEventStore()
    repo = es.AggregateRepository(store, Wallet, event_publisher=bus)
    wallet = repo.create_new(uuid4())
    wallet.credit(Decimal("2.50"))
    wallet.credit(Decimal("1.25"))
    repo.save(wallet)
    loaded = repo.load(wallet.aggregate_id)
    stored = [s.event for s in store.read_all(es.ReadOptions())]
    restored = es.get_event_class("Credited").from_dict(stored[0].to_dict())
    bus.shutdown()
    assert loaded.state.balance == Decimal("3.75"), loaded.state
    assert [e.amount for e in received] == [Decimal("2.50"), Decimal("1.25")], received
    assert restored == stored[0]
    assert not settings.configured, "importing the core must not configure Django"
    print("framework-free OK")
    """
)


def run_without_django_settings(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_succeeds_without_django_settings() -> None:
    result = run_without_django_settings("import django_eventsource; print('imported')")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


def test_the_framework_free_core_works_without_django_settings() -> None:
    result = run_without_django_settings(FRAMEWORK_FREE_SCRIPT)
    assert result.returncode == 0, result.stderr
    assert "framework-free OK" in result.stdout


def test_the_guides_outbox_module_gives_the_in_memory_outbox_without_django_settings() -> None:
    result = run_without_django_settings(
        "from django.conf import settings\n"
        "from django_eventsource.repositories.outbox import (\n"
        "    InMemoryOutboxRepository, OutboxEntry, OutboxRepository, OutboxStats)\n"
        "assert not settings.configured\n"
        "print(InMemoryOutboxRepository().get_stats().pending_count)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_every_name_in_all_resolves_with_django_configured() -> None:
    missing: dict[str, str] = {}
    for name in django_eventsource.__all__:
        try:
            getattr(django_eventsource, name)
        except (AttributeError, ImportError) as exc:
            missing[name] = f"{type(exc).__name__}: {exc}"
    assert missing == {}


@pytest.mark.parametrize(
    "error",
    [
        OptimisticLockError(uuid4(), 3, 5),
        AggregateNotFoundError(uuid4(), "Account"),
        DuplicateEventIdError(uuid4(), "stream", 2),
        EventTypeNotFoundError("Missing", ["AccountOpened"]),
        UnhandledEventError("Account", "Missing"),
        InvalidEventError("bad input"),
        EventVersionError(uuid4(), 2, 5, event_id=uuid4()),
        SerializationError("no longer validates", event_type="AccountOpened"),
        UpcastError("no upcaster from version 2", event_type="AccountOpened"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_survive_pickling_with_their_attributes(error: EventSourceError) -> None:
    # Celery results, multiprocessing and the parallel test runner pickle exceptions.
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is type(error)
    assert str(restored) == str(error)
    assert vars(restored) == vars(error)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        django_eventsource.NoSuchThing  # noqa: B018
