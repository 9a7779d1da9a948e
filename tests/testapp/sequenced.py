"""Projections of the sequenced dead-letter tests: each fails the way a real read model does."""

from __future__ import annotations

import os
import time
from pathlib import Path
from uuid import UUID

from django.db.models import F, Value
from django.db.models.functions import Concat

from django_eventsource import DeclarativeProjection, handles

from .domain import AccountOpened, MoneyDeposited
from .models import AccountSummary, HandledEvent


class TaskBoard(DeclarativeProjection):
    """The report's read model: a title column too narrow for some titles.

    While ``narrow_column`` is set, an owner ("title") longer than 200 characters fails
    like an insert into a ``varchar(200)`` column; a deposit ("completion") updates the
    row, so without its row it silently changes nothing.
    """

    narrow_column = True

    @handles(AccountOpened)
    def on_opened(self, event: AccountOpened) -> None:
        if TaskBoard.narrow_column and len(event.owner) > 200:
            raise ValueError("value too long for type character varying(200)")
        AccountSummary.objects.create(account_id=event.aggregate_id, owner=event.owner)

    @handles(MoneyDeposited)
    def on_deposited(self, event: MoneyDeposited) -> None:
        AccountSummary.objects.filter(account_id=event.aggregate_id).update(
            balance=F("balance") + event.amount, events_seen=F("events_seen") + 1
        )

    def reset(self) -> None:
        AccountSummary.objects.all().delete()


class OrderedLedger(DeclarativeProjection):
    """Records, per account, the versions it handled in order (``owner`` is "1,2,3,").

    Fails, after writing, on the ``(aggregate id, version)`` pairs in ``failing``: a lost,
    doubled or reordered event shows up as a difference from a replay of the store.
    """

    failing: set[tuple[UUID, int]] = set()

    @handles(AccountOpened)
    def on_opened(self, event: AccountOpened) -> None:
        AccountSummary.objects.create(account_id=event.aggregate_id, owner="1,", events_seen=1)
        self._maybe_fail(event.aggregate_id, event.aggregate_version)

    @handles(MoneyDeposited)
    def on_deposited(self, event: MoneyDeposited) -> None:
        AccountSummary.objects.filter(account_id=event.aggregate_id).update(
            owner=Concat(F("owner"), Value(f"{event.aggregate_version},")),
            balance=F("balance") + event.amount,
            events_seen=F("events_seen") + 1,
        )
        self._maybe_fail(event.aggregate_id, event.aggregate_version)

    def _maybe_fail(self, aggregate_id: UUID, version: int) -> None:
        if (aggregate_id, version) in OrderedLedger.failing:
            raise RuntimeError(f"cannot record version {version} of {aggregate_id}")

    def reset(self) -> None:
        AccountSummary.objects.all().delete()


class MissingCatalogue(DeclarativeProjection):
    """Fails on every opening while ``broken`` is set (a missing catalogue entry)."""

    broken = True

    @handles(AccountOpened)
    def on_opened(self, event: AccountOpened) -> None:
        if MissingCatalogue.broken:
            raise LookupError(f"catalogue entry {event.owner!r} is missing")
        HandledEvent.objects.create(projection=self.name, event_id=event.event_id)

    def reset(self) -> None:
        HandledEvent.objects.filter(projection=self.name).delete()


class SlowJournal(DeclarativeProjection):
    """Journals every deposit, sleeping ``SEQUENCED_SLEEP`` seconds per event first.

    After each event it writes how many it handled in this process to the file named by
    ``SEQUENCED_MARKER``, so a test knows the runner is in the middle of a batch.
    """

    handled_here = 0

    @handles(MoneyDeposited)
    def on_deposited(self, event: MoneyDeposited) -> None:
        time.sleep(float(os.environ.get("SEQUENCED_SLEEP", "0")))
        HandledEvent.objects.create(projection=self.name, event_id=event.event_id)
        SlowJournal.handled_here += 1
        marker = os.environ.get("SEQUENCED_MARKER")
        if marker:
            Path(marker).write_text(str(SlowJournal.handled_here))

    def reset(self) -> None:
        HandledEvent.objects.filter(projection=self.name).delete()


TASK_BOARD = "tests.testapp.sequenced.TaskBoard"
ORDERED = "tests.testapp.sequenced.OrderedLedger"
MISSING = "tests.testapp.sequenced.MissingCatalogue"
SLOW = "tests.testapp.sequenced.SlowJournal"
