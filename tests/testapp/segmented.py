"""A segmented projection for the segment tests: balance and event count per account.

Each handler checks the account's order: a deposit applies only when the row has seen
exactly ``aggregate_version - 1`` events, so an event handled twice, out of order or
lost makes a handler fail (and the event be dead-lettered), which the tests look for.

With ``EVENTSOURCE_TEST_GATE`` set (runner subprocesses), the first handler call waits
until that file exists, after leaving a file ``<gate>.<pid>`` saying "I am inside a
handler": the tests use it to see runners hold different units at the same time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from django.db import connection

from django_eventsource import DeclarativeProjection, DomainEvent, handles

from .domain import AccountOpened, MoneyDeposited
from .models import AccountSummary


class OrderBroken(Exception):
    """An account event arrived out of order (or twice)."""


def _wait_at_gate() -> None:
    gate = os.environ.get("EVENTSOURCE_TEST_GATE")
    if not gate or Path(gate).exists():
        return
    Path(f"{gate}.{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


class SegmentedTally(DeclarativeProjection):
    """Per-account tally split into four units (tests change ``segments``)."""

    segments = 4

    @handles(AccountOpened)
    def on_opened(self, event: AccountOpened) -> None:
        _wait_at_gate()
        if event.aggregate_version != 1:
            raise OrderBroken(event)
        AccountSummary.objects.create(
            account_id=event.aggregate_id, owner=event.owner, events_seen=1
        )

    @handles(MoneyDeposited)
    def on_deposited(self, event: MoneyDeposited) -> None:
        _wait_at_gate()
        self._apply(event, str(event.amount))

    def _apply(self, event: DomainEvent, amount: str) -> None:
        table = connection.ops.quote_name(AccountSummary._meta.db_table)
        account_id = AccountSummary._meta.pk.get_db_prep_value(event.aggregate_id, connection)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET balance = balance + %s, events_seen = events_seen + 1 "
                "WHERE account_id = %s AND events_seen = %s",
                [amount, account_id, event.aggregate_version - 1],
            )
            if cursor.rowcount != 1:
                raise OrderBroken(event)

    def reset(self) -> None:
        AccountSummary.objects.all().delete()


SEGMENTED = "tests.testapp.segmented.SegmentedTally"
