"""Projections used by the projection and runner tests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from asgiref.sync import sync_to_async
from django.db import connection
from django.db.models import F

from django_eventsource import (
    BatchProjection,
    DeclarativeProjection,
    DomainEvent,
    EventStore,
    ExpectedVersion,
    Projection,
    handles,
)
from django_eventsource.context import get_event_context
from django_eventsource.projections.fold import FoldProjection

from .domain import AccountOpened, MoneyDeposited, MoneyWithdrawn
from .models import AccountActivity, AccountSummary, HandledEvent

#: Deposits of these amounts make ``FlakyLedgerProjection`` fail (tests edit the set).
POISON_AMOUNTS: set[Decimal] = set()


def _journal(projection: str, event: object) -> None:
    ctx = get_event_context()
    HandledEvent.objects.create(
        projection=projection,
        event_id=event.event_id,  # type: ignore[attr-defined]
        causation_id=ctx.causation_id,
        correlation_id=ctx.correlation_id,
    )


class AccountSummaryProjection(DeclarativeProjection):
    """Balance and number of events per account, plus a journal of handled events."""

    @handles(AccountOpened)
    def on_opened(self, event: AccountOpened) -> None:
        AccountSummary.objects.create(
            account_id=event.aggregate_id,
            owner=event.owner,
            balance=event.opening_balance,
            events_seen=1,
        )
        _journal(self.name, event)

    @handles(MoneyDeposited)
    def on_deposited(self, event: MoneyDeposited) -> None:
        AccountSummary.objects.filter(account_id=event.aggregate_id).update(
            balance=F("balance") + event.amount, events_seen=F("events_seen") + 1
        )
        _journal(self.name, event)

    @handles(MoneyWithdrawn)
    def on_withdrawn(self, event: MoneyWithdrawn) -> None:
        AccountSummary.objects.filter(account_id=event.aggregate_id).update(
            balance=F("balance") - event.amount, events_seen=F("events_seen") + 1
        )
        _journal(self.name, event)

    def reset(self) -> None:
        AccountSummary.objects.all().delete()
        HandledEvent.objects.filter(projection=self.name).delete()


class TallyProjection(DeclarativeProjection):
    """Balance and event count per account in one UPDATE per event (the crash tests' load)."""

    @handles(AccountOpened)
    def on_opened(self, event: AccountOpened) -> None:
        AccountSummary.objects.create(
            account_id=event.aggregate_id, owner=event.owner, events_seen=1
        )

    @handles(MoneyDeposited)
    def on_deposited(self, event: MoneyDeposited) -> None:
        table = connection.ops.quote_name(AccountSummary._meta.db_table)
        account_id = AccountSummary._meta.pk.get_db_prep_value(event.aggregate_id, connection)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET balance = balance + %s, events_seen = events_seen + 1 "
                "WHERE account_id = %s",
                [str(event.amount), account_id],
            )

    def reset(self) -> None:
        AccountSummary.objects.all().delete()


class CountingProjection(Projection):
    """Counts every event it receives, in memory: no subscriptions, no writes."""

    count = 0

    def handle(self, event: DomainEvent) -> None:
        type(self).count += 1

    def reset(self) -> None:
        type(self).count = 0


class OptimisticCountingProjection(CountingProjection):
    """``CountingProjection`` with whole batches applied in one savepoint."""

    optimistic_batches = True


class OptimisticTallyProjection(TallyProjection):
    """``TallyProjection`` with whole batches applied in one savepoint."""

    optimistic_batches = True


class FlakyLedgerProjection(DeclarativeProjection):
    """Journals deposits, but fails after writing when the amount is in ``POISON_AMOUNTS``."""

    @handles(MoneyDeposited)
    def on_deposited(self, event: MoneyDeposited) -> None:
        _journal(self.name, event)
        if event.amount in POISON_AMOUNTS:
            raise ValueError(f"cannot book {event.amount}")

    def reset(self) -> None:
        HandledEvent.objects.filter(projection=self.name).delete()


class OptimisticLedgerProjection(FlakyLedgerProjection):
    """``FlakyLedgerProjection`` with whole batches applied in one savepoint."""

    optimistic_batches = True


class AsyncJournalProjection(DeclarativeProjection):
    """Journals account openings from an ``async def`` handler."""

    @handles(AccountOpened)
    async def on_opened(self, event: AccountOpened) -> None:
        await sync_to_async(_journal)(self.name, event)

    def reset(self) -> None:
        HandledEvent.objects.filter(projection=self.name).delete()


class BatchTallyProjection(BatchProjection):
    """``TallyProjection`` as a batch: one read and one multi-row upsert per page.

    Deposits of an amount in ``POISON_AMOUNTS`` make the batch fail.
    """

    def subscribed_to(self) -> list[type[DomainEvent]]:
        return [AccountOpened, MoneyDeposited]

    def handle_batch(self, events: list[DomainEvent]) -> None:
        ids = {event.aggregate_id for event in events}
        rows = {row.account_id: row for row in AccountSummary.objects.filter(account_id__in=ids)}
        for event in events:
            row = rows.get(event.aggregate_id)
            if row is None:
                row = rows[event.aggregate_id] = AccountSummary(
                    account_id=event.aggregate_id, balance=Decimal(0), events_seen=0
                )
            if isinstance(event, AccountOpened):
                row.owner = event.owner
            elif isinstance(event, MoneyDeposited):
                if event.amount in POISON_AMOUNTS:
                    raise ValueError(f"cannot book {event.amount}")
                row.balance += event.amount
            row.events_seen += 1
        AccountSummary.objects.bulk_create(
            list(rows.values()),
            update_conflicts=True,
            unique_fields=["account_id"],
            update_fields=["owner", "balance", "events_seen"],
        )

    def reset(self) -> None:
        AccountSummary.objects.all().delete()


class BatchLedgerProjection(BatchProjection):
    """Journals every deposit of the batch, then fails if one is in ``POISON_AMOUNTS``.

    The journal is written before the failure, so a rolled-back attempt that was not
    undone would show up as a repeated event id.
    """

    batches: list[int] = []

    def subscribed_to(self) -> list[type[DomainEvent]]:
        return [MoneyDeposited]

    def handle_batch(self, events: list[DomainEvent]) -> None:
        type(self).batches.append(len(events))
        HandledEvent.objects.bulk_create(
            [HandledEvent(projection=self.name, event_id=event.event_id) for event in events]
        )
        for event in events:
            if isinstance(event, MoneyDeposited) and event.amount in POISON_AMOUNTS:
                raise ValueError(f"cannot book {event.amount}")

    def reset(self) -> None:
        HandledEvent.objects.filter(projection=self.name).delete()


class InlineTallyProjection(TallyProjection):
    """``TallyProjection`` applied in the transaction of each append.

    A deposit of an amount in ``POISON_AMOUNTS`` raises, after its write.
    """

    inline = True

    @handles(MoneyDeposited)
    def on_deposited(self, event: MoneyDeposited) -> None:
        super().on_deposited(event)
        if event.amount in POISON_AMOUNTS:
            raise ValueError(f"cannot book {event.amount}")


class InlineBatchTallyProjection(BatchTallyProjection):
    """``BatchTallyProjection`` applied in the transaction of each append."""

    inline = True


class ActivityProjection(DeclarativeProjection):
    """``AccountActivity`` one event at a time: a row per opening, an UPDATE per deposit."""

    @handles(AccountOpened)
    def on_opened(self, event: AccountOpened) -> None:
        AccountActivity.objects.create(
            account_id=event.aggregate_id, events=1, last_seen=event.occurred_at
        )

    @handles(MoneyDeposited)
    def on_deposited(self, event: MoneyDeposited) -> None:
        AccountActivity.objects.filter(account_id=event.aggregate_id).update(
            events=F("events") + 1, total=F("total") + event.amount, last_seen=event.occurred_at
        )

    def reset(self) -> None:
        AccountActivity.objects.all().delete()


class InlineActivityProjection(ActivityProjection):
    """``ActivityProjection`` applied in the transaction of each append."""

    inline = True


class InlineActivityUpsert(DeclarativeProjection):
    """``AccountActivity`` in the save's transaction, one SQL upsert per event.

    The ``INSERT … ON CONFLICT DO UPDATE`` a read model that adds to its row is written
    with: one statement whether or not the row exists yet.
    """

    inline = True

    @handles(AccountOpened)
    def on_opened(self, event: AccountOpened) -> None:
        self._upsert(event, Decimal(0))

    @handles(MoneyDeposited)
    def on_deposited(self, event: MoneyDeposited) -> None:
        self._upsert(event, event.amount)

    def _upsert(self, event: DomainEvent, amount: Decimal) -> None:
        table = connection.ops.quote_name(AccountActivity._meta.db_table)
        account_id = AccountActivity._meta.pk.get_db_prep_value(  # type: ignore[union-attr]
            event.aggregate_id, connection
        )
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (account_id, events, total, last_seen) "
                "VALUES (%s, 1, %s, %s) ON CONFLICT (account_id) DO UPDATE SET "
                f"events = {table}.events + 1, total = {table}.total + excluded.total, "
                "last_seen = excluded.last_seen",
                [
                    account_id,
                    connection.ops.adapt_decimalfield_value(amount, 20, 2),
                    connection.ops.adapt_datetimefield_value(event.occurred_at),
                ],
            )

    def reset(self) -> None:
        AccountActivity.objects.all().delete()


class BatchActivityProjection(BatchProjection):
    """``AccountActivity`` a page at a time: the page folded in memory, then one read of
    the page's rows and one multi-row upsert."""

    def subscribed_to(self) -> list[type[DomainEvent]]:
        return [AccountOpened, MoneyDeposited]

    def handle_batch(self, events: list[DomainEvent]) -> None:
        folded: dict[UUID, list[Any]] = {}
        for event in events:
            entry = folded.get(event.aggregate_id)
            if entry is None:
                entry = folded[event.aggregate_id] = [0, Decimal(0), None]
            entry[0] += 1
            if isinstance(event, MoneyDeposited):
                entry[1] += event.amount
            entry[2] = event.occurred_at
        rows = AccountActivity.objects.in_bulk(list(folded))
        for account_id, (count, amount, seen) in folded.items():
            row = rows.get(account_id)
            if row is None:
                rows[account_id] = AccountActivity(
                    account_id=account_id, events=count, total=amount, last_seen=seen
                )
            else:
                row.events += count
                row.total += amount
                row.last_seen = seen
        AccountActivity.objects.bulk_create(
            list(rows.values()),
            update_conflicts=True,
            unique_fields=["account_id"],
            update_fields=["events", "total", "last_seen"],
        )

    def reset(self) -> None:
        AccountActivity.objects.all().delete()


class FoldActivityProjection(FoldProjection):
    """``AccountActivity`` in the declarative fold form."""

    model = AccountActivity
    key_field = "account_id"

    @handles(AccountOpened)
    def on_opened(self, row: AccountActivity, event: AccountOpened) -> None:
        row.events += 1
        row.last_seen = event.occurred_at

    @handles(MoneyDeposited)
    def on_deposited(self, row: AccountActivity, event: MoneyDeposited) -> None:
        if event.amount in POISON_AMOUNTS:
            raise ValueError(f"cannot book {event.amount}")
        row.events += 1
        row.total += event.amount
        row.last_seen = event.occurred_at


def open_account(
    store: EventStore, owner: str = "ann", deposits: tuple[str | int, ...] = ()
) -> UUID:
    """Append an ``AccountOpened`` and one ``MoneyDeposited`` per amount; returns the id."""
    account_id = uuid4()
    events: list[DomainEvent] = [
        AccountOpened(aggregate_id=account_id, owner=owner, aggregate_version=1)
    ]
    for version, amount in enumerate(deposits, start=2):
        events.append(
            MoneyDeposited(
                aggregate_id=account_id, amount=Decimal(amount), aggregate_version=version
            )
        )
    store.append_events(account_id, "Account", events, ExpectedVersion.NO_STREAM)
    return account_id


SUMMARY = "tests.testapp.projections.AccountSummaryProjection"
COUNTING = "tests.testapp.projections.CountingProjection"
TALLY = "tests.testapp.projections.TallyProjection"
FLAKY = "tests.testapp.projections.FlakyLedgerProjection"
OPTIMISTIC = "tests.testapp.projections.OptimisticLedgerProjection"
ASYNC_JOURNAL = "tests.testapp.projections.AsyncJournalProjection"
BATCH_TALLY = "tests.testapp.projections.BatchTallyProjection"
BATCH_LEDGER = "tests.testapp.projections.BatchLedgerProjection"
INLINE_TALLY = "tests.testapp.projections.InlineTallyProjection"
INLINE_BATCH_TALLY = "tests.testapp.projections.InlineBatchTallyProjection"
ACTIVITY = "tests.testapp.projections.ActivityProjection"
INLINE_ACTIVITY_UPSERT = "tests.testapp.projections.InlineActivityUpsert"
BATCH_ACTIVITY = "tests.testapp.projections.BatchActivityProjection"
FOLD_ACTIVITY = "tests.testapp.projections.FoldActivityProjection"
