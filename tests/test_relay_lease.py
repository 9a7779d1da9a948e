"""Relay claims are leases: renewed while the relay lives, back within seconds after it dies.

A ``manage.py publish_outbox`` subprocess claims rows and then hangs in the bus; while it
lives its heartbeat keeps the claim, after ``kill -9`` another relay publishes the rows
once the lease (1 s here) has run out, not after ``EVENTSOURCE_OUTBOX_CLAIM_TIMEOUT``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from django_eventsource import DomainEvent, InMemoryEventBus
from django_eventsource.models import OutboxMessage
from django_eventsource.outbox import InMemoryOutboxRepository
from django_eventsource.outbox.django import DjangoOutboxRepository
from django_eventsource.outbox.relay import OutboxRelay, publish_outbox
from tests.factories import account_history
from tests.test_relay import RecordingBus, _save

ROOT = Path(__file__).resolve().parent.parent


class StuckBus(InMemoryEventBus):
    """A bus whose publish never returns (a relay hung in a bus call)."""

    def publish(self, events: Sequence[DomainEvent], background: bool = False) -> None:
        threading.Event().wait()


def _until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _claims() -> list[tuple[str, datetime]]:
    rows = OutboxMessage.objects.order_by("id").values_list("claimed_by", "claimed_at")
    return [(holder, at) for holder, at in rows if at is not None]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_killed_relays_rows_come_back_after_the_lease_not_the_claim_timeout() -> None:
    events = account_history(deposits=4)
    _save(events)
    lease = 1.0
    relay_settings = {
        "EVENTSOURCE_EVENT_BUS": "tests.test_relay_lease.StuckBus",
        "EVENTSOURCE_OUTBOX_CLAIM_LEASE": lease,
        "EVENTSOURCE_OUTBOX_CLAIM_TIMEOUT": 300.0,
    }
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "EVENTSOURCE_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "EVENTSOURCE_TEST_SETTINGS": json.dumps(relay_settings),
    }
    relay = subprocess.Popen(
        [sys.executable, "manage.py", "publish_outbox", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _until(lambda: len(_claims()) == 5, "the relay's claim")
        first_claim = min(at for _, at in _claims())
        # Alive but hung: its heartbeat moves the claim on, and nobody takes the rows.
        _until(
            lambda: min(at for _, at in _claims()) > first_claim + timedelta(seconds=2 * lease),
            "two leases' worth of renewals",
        )
        with override_settings(**relay_settings):
            assert publish_outbox(once=True, bus=RecordingBus()).published == 0
    finally:
        relay.send_signal(signal.SIGKILL)
        relay.wait()

    killed_at = time.monotonic()
    bus = RecordingBus()
    with override_settings(**relay_settings):
        _until(
            lambda: publish_outbox(once=True, bus=bus) is not None and len(bus.published) == 5,
            "another relay to take the rows over",
            timeout=60.0,
        )
    # Far below the 300 s claim timeout: the lease decides.
    assert time.monotonic() - killed_at < 60.0
    assert [e.event_id for e in bus.published] == [e.event_id for e in events]
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {"published"}


@pytest.mark.django_db
def test_renewal_stops_once_the_claim_timeout_has_passed() -> None:
    repository = InMemoryOutboxRepository()
    for event in account_history(deposits=1):
        repository.add_event(event)
    relay = OutboxRelay(InMemoryEventBus(), repository, name="relay-a")
    claimed = repository.claim_due("relay-a", 10, now=timezone.now(), claim_timeout=10)
    relay._hold(claimed)
    try:
        with override_settings(EVENTSOURCE_OUTBOX_CLAIM_TIMEOUT=300):
            assert relay.renew_claims() == 2
        # A claim held longer than the claim timeout (a relay stuck in a bus call) is
        # no longer renewed: the lease runs out and another relay takes the rows.
        with override_settings(EVENTSOURCE_OUTBOX_CLAIM_TIMEOUT=0):
            assert relay.renew_claims() == 0
    finally:
        relay.finish()


@pytest.mark.django_db
def test_only_the_holder_renews_and_only_pending_rows() -> None:
    _save(account_history(deposits=2))
    repository = DjangoOutboxRepository()
    past = timezone.now() - timedelta(minutes=5)
    claimed = repository.claim_due("relay-a", 10, now=past, claim_timeout=10)
    ids = [entry.id for entry in claimed]
    repository.mark_published_many(ids[:1], now=past)
    now = timezone.now()

    assert repository.renew_claims(ids, "relay-b", now=now) == 0
    assert repository.renew_claims(ids, "relay-a", now=now) == 2
    renewed = OutboxMessage.objects.filter(claimed_at=now).values_list("id", flat=True)
    assert sorted(renewed) == ids[1:]


@pytest.mark.django_db
@pytest.mark.parametrize("store", ["django", "memory"])
def test_a_look_ahead_claim_gives_up_after_its_scan_limit(store: str) -> None:
    hot, cold = account_history(deposits=9), account_history(deposits=0)
    repository = DjangoOutboxRepository() if store == "django" else InMemoryOutboxRepository()
    if store == "django":
        _save(hot)
        _save(cold)
    else:
        for event in [*hot, *cold]:
            repository.add_event(event)
    now = timezone.now()
    # The first version is in flight: the other nine rows of its aggregate wait for it.
    assert len(repository.claim_due("relay-a", 1, now=now, claim_timeout=60)) == 1

    bounded = repository.claim_due("relay-a", 10, now=now, claim_timeout=60, scan_limit=9)
    assert bounded == []
    unbounded = repository.claim_due("relay-a", 10, now=now, claim_timeout=60)
    assert [entry.event_id for entry in unbounded] == [cold[0].event_id]
