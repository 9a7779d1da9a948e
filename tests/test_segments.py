"""Segmented projections in one process: buckets, units, claims, reset and resize."""

from __future__ import annotations

import random
from collections.abc import Iterator
from decimal import Decimal
from io import StringIO
from uuid import uuid4

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from django_eventsource import DjangoEventStore, DomainEvent, ExpectedVersion, InMemoryEventStore
from django_eventsource.exceptions import (
    InvalidReadOptionsError,
    ProjectionBusyError,
    SegmentCountMismatchError,
)
from django_eventsource.models import Checkpoint, DeadLetter, EventRecord
from django_eventsource.partitioning import EVENT_BUCKETS, event_bucket
from django_eventsource.projections.maintenance import reset_projection
from django_eventsource.projections.runner import checkpoint_db, run_projections
from django_eventsource.projections.segments import (
    bucket_range,
    holding,
    load_units,
    resize_projection,
    unit_name,
)
from django_eventsource.stores.interface import ReadOptions
from tests.test_projection_crash import replay
from tests.testapp.domain import AccountOpened, MoneyDeposited
from tests.testapp.models import AccountSummary
from tests.testapp.segmented import SEGMENTED, SegmentedTally

pytestmark = [pytest.mark.own_sql, pytest.mark.django_db]

NAME = "SegmentedTally"


@pytest.fixture(autouse=True)
def segmented(settings: object) -> Iterator[None]:
    with override_settings(EVENTSOURCE_PROJECTIONS=[SEGMENTED]):
        yield
    SegmentedTally.segments = 4


def append_accounts(store: DjangoEventStore, accounts: int, deposits: int) -> None:
    """Accounts of one opening and ``deposits`` deposits, appended in interleaved order."""
    streams = []
    for _ in range(accounts):
        account = uuid4()
        events: list[DomainEvent] = [
            AccountOpened(aggregate_id=account, owner="x", aggregate_version=1)
        ]
        events += [
            MoneyDeposited(
                aggregate_id=account,
                amount=Decimal(random.randint(1, 100)),
                aggregate_version=version,
            )
            for version in range(2, deposits + 2)
        ]
        streams.append(events)
    # Interleave the streams so that every unit has work spread along the positions.
    for step in range(deposits + 1):
        for events in streams:
            store.append_events(
                events[step].aggregate_id,
                "Account",
                [events[step]],
                ExpectedVersion.NO_STREAM if step == 0 else step,
            )


def assert_exact(store: DjangoEventStore) -> None:
    """The read model is the store's replay, and no event failed its order check."""
    assert not DeadLetter.objects.exists()
    read_model = {r.account_id: (r.balance, r.events_seen) for r in AccountSummary.objects.all()}
    assert read_model == replay(store)


def unit_positions() -> dict[str, int]:
    rows = Checkpoint.objects.filter(projection_name__startswith=f"{NAME}")
    return dict(rows.filter(position__gt=0).values_list("projection_name", "position"))


# -- buckets -------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 16, 255, 256])
def test_the_units_of_any_count_cover_every_bucket_once(count: int) -> None:
    covered = [b for i in range(count) for b in range(*bucket_range(i, count))]
    assert covered == list(range(EVENT_BUCKETS))


def test_every_appended_event_stores_the_bucket_of_its_aggregate() -> None:
    store = DjangoEventStore()
    append_accounts(store, accounts=20, deposits=2)
    rows = list(EventRecord.objects.values_list("aggregate_id", "bucket"))
    assert len(rows) == 60
    assert all(bucket == event_bucket(aggregate) for aggregate, bucket in rows)
    assert len({bucket for _, bucket in rows}) > 1


@pytest.mark.parametrize("kind", ["django", "memory"])
def test_reading_by_bucket_ranges_splits_the_events_without_loss_or_overlap(kind: str) -> None:
    store: DjangoEventStore | InMemoryEventStore
    if kind == "django":
        store = DjangoEventStore()
        append_accounts(store, accounts=30, deposits=3)
    else:
        store = InMemoryEventStore()
        for _ in range(30):
            account = uuid4()
            store.append_events(
                account,
                "Account",
                [AccountOpened(aggregate_id=account, owner="x", aggregate_version=1)],
                ExpectedVersion.NO_STREAM,
            )
    everything = [s.global_position for s in store.read_all()]
    parts = []
    for index in range(3):
        low, high = bucket_range(index, 3)
        part = list(store.read_all(ReadOptions(buckets=(low, high))))
        assert all(low <= event_bucket(s.event.aggregate_id) < high for s in part)
        parts.append([s.global_position for s in part])
    assert sorted(p for part in parts for p in part) == everything
    assert all(part == sorted(part) for part in parts)


@pytest.mark.parametrize("buckets", [(0, 0), (5, 3), (-1, 4), (0, 257), (1,), [0, 4], (0.0, 1)])
def test_bad_bucket_ranges_are_rejected(buckets: object) -> None:
    with pytest.raises(InvalidReadOptionsError, match="buckets"):
        ReadOptions(buckets=buckets)  # type: ignore[arg-type]


# -- running units ------------------------------------------------------------------------


def test_a_segmented_projection_builds_the_same_read_model_as_one_unit() -> None:
    store = DjangoEventStore()
    append_accounts(store, accounts=40, deposits=5)

    summary = run_projections(once=True, batch_size=7)

    assert set(summary.processed) == {unit_name(NAME, i, 4) for i in range(4)}
    assert sum(summary.processed.values()) == EventRecord.objects.count()
    assert all(count > 0 for count in summary.processed.values())
    assert_exact(store)
    reference = {r.account_id: (r.balance, r.events_seen) for r in AccountSummary.objects.all()}

    SegmentedTally.segments = 1
    reset_projection(NAME, rebuild=True)
    assert {r.account_id: (r.balance, r.events_seen) for r in AccountSummary.objects.all()} == (
        reference
    )
    assert set(unit_positions()) == {NAME}


def test_units_can_be_run_by_name_and_each_reads_only_its_own_events() -> None:
    store = DjangoEventStore()
    append_accounts(store, accounts=20, deposits=2)
    unit = unit_name(NAME, 2, 4)
    low, high = bucket_range(2, 4)
    own = EventRecord.objects.filter(bucket__gte=low, bucket__lt=high).count()

    summary = run_projections([unit], once=True)

    assert summary.processed == {unit: own}
    assert set(unit_positions()) == {unit}
    with pytest.raises(SegmentCountMismatchError, match="segments = 4"):
        load_units([unit_name(NAME, 0, 2)])


def test_max_units_limits_the_units_worked_on_per_pass_and_leaves_the_rest() -> None:
    store = DjangoEventStore()
    append_accounts(store, accounts=40, deposits=2)

    first = run_projections(once=True, max_units=1)
    assert sum(1 for count in first.processed.values() if count) == 1
    second = run_projections(once=True, max_units=2)
    assert sum(1 for count in second.processed.values() if count) == 2
    assert not set(k for k, v in first.processed.items() if v) & set(
        k for k, v in second.processed.items() if v
    )
    run_projections(once=True)
    assert_exact(store)


def test_a_unit_held_by_another_runner_is_skipped_and_the_others_run() -> None:
    store = DjangoEventStore()
    append_accounts(store, accounts=40, deposits=2)
    held = unit_name(NAME, 1, 4)
    with holding([held], checkpoint_db()):
        summary = run_projections(once=True)
    assert summary.processed[held] == 0
    assert all(count > 0 for name, count in summary.processed.items() if name != held)

    run_projections(once=True)
    assert_exact(store)


def test_units_are_given_back_when_caught_up() -> None:
    store = DjangoEventStore()
    append_accounts(store, accounts=10, deposits=1)
    run_projections(once=True)
    # Another runner can take every unit at once: none stayed with the first one.
    with holding([unit_name(NAME, i, 4) for i in range(4)], checkpoint_db()):
        pass


# -- changing the segment count ------------------------------------------------------------


def test_the_runner_refuses_checkpoints_of_another_segment_count() -> None:
    store = DjangoEventStore()
    append_accounts(store, accounts=10, deposits=1)
    run_projections(once=True)
    before = unit_positions()
    append_accounts(store, accounts=5, deposits=1)

    SegmentedTally.segments = 2
    with pytest.raises(SegmentCountMismatchError, match="resize_projection SegmentedTally"):
        run_projections(once=True)
    assert unit_positions() == before
    with pytest.raises(CommandError, match="segments = 4"):
        call_command("run_projections", "--once", verbosity=0)


@pytest.mark.parametrize(("old", "new"), [(2, 4), (4, 2), (1, 3), (4, 1)])
def test_resizing_keeps_every_event_handled_exactly_once(old: int, new: int) -> None:
    store = DjangoEventStore()
    SegmentedTally.segments = old
    append_accounts(store, accounts=30, deposits=3)
    # Leave some units behind the others, with more events after them.
    run_projections(once=True, max_units=1, batch_size=5)
    append_accounts(store, accounts=10, deposits=2)
    assert not DeadLetter.objects.exists()

    SegmentedTally.segments = new
    out = StringIO()
    call_command("resize_projection", NAME, stdout=out)
    assert f"from {old} to {new} segment(s)" in out.getvalue()
    positions = unit_positions()
    expected = {NAME} if new == 1 else {unit_name(NAME, i, new) for i in range(new)}
    assert set(positions) == expected
    assert len(set(positions.values())) == 1

    append_accounts(store, accounts=10, deposits=2)
    run_projections(once=True, batch_size=9)
    assert_exact(store)


def test_resizing_without_a_change_or_while_a_unit_runs_does_nothing() -> None:
    store = DjangoEventStore()
    append_accounts(store, accounts=10, deposits=1)
    run_projections(once=True)
    before = unit_positions()

    assert resize_projection(NAME).drained == 0
    SegmentedTally.segments = 2
    with holding([unit_name(NAME, 3, 4)], checkpoint_db()), pytest.raises(ProjectionBusyError):
        resize_projection(NAME)
    assert unit_positions() == before


def test_reset_of_a_segmented_projection_rebuilds_every_unit() -> None:
    store = DjangoEventStore()
    append_accounts(store, accounts=20, deposits=2)
    run_projections(once=True)
    AccountSummary.objects.update(balance=0)

    summary = reset_projection(NAME, rebuild=True)

    assert summary.total_processed == EventRecord.objects.count()
    assert_exact(store)
    assert len(unit_positions()) == 4


@pytest.mark.parametrize(("old", "new"), [(2, 4), (4, 2)])
def test_events_appended_while_resizing_are_handled_once_by_the_new_units(
    old: int, new: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DjangoEventStore()
    SegmentedTally.segments = old
    append_accounts(store, accounts=20, deposits=2)
    run_projections(once=True, max_units=1)
    original = SegmentedTally.on_deposited
    appended = []

    def append_once(self: SegmentedTally, event: MoneyDeposited) -> None:
        # A writer that commits while the old units are being drained.
        if not appended:
            appended.append(True)
            append_accounts(store, accounts=20, deposits=1)
        original(self, event)

    monkeypatch.setattr(SegmentedTally, "on_deposited", append_once)
    SegmentedTally.segments = new
    report = resize_projection(NAME)
    assert appended
    assert report.position < store.get_global_position()
    monkeypatch.setattr(SegmentedTally, "on_deposited", original)

    run_projections(once=True)
    assert_exact(store)


def test_the_migration_backfills_the_buckets_of_existing_events() -> None:
    import importlib
    from types import SimpleNamespace

    from django.apps import apps
    from django.db import connection

    migration = importlib.import_module("django_eventsource.migrations.0006_event_bucket")
    append_accounts(DjangoEventStore(), accounts=30, deposits=1)
    EventRecord.objects.update(bucket=0)  # rows as they were before the column existed

    # The function reads only the editor's connection (SQLite refuses a real editor here).
    migration.backfill_buckets(apps, SimpleNamespace(connection=connection))

    rows = list(EventRecord.objects.values_list("aggregate_id", "bucket"))
    assert all(bucket == event_bucket(aggregate) for aggregate, bucket in rows)
    assert any(bucket for _, bucket in rows)


def test_an_unreadable_event_is_dead_lettered_by_its_own_unit_only() -> None:
    from django.utils import timezone

    store = DjangoEventStore()
    append_accounts(store, accounts=20, deposits=1)
    account = uuid4()
    EventRecord.objects.create(  # written by an older version of the application
        event_id=uuid4(),
        aggregate_type="Account",
        aggregate_id=account,
        aggregate_version=1,
        event_type="MoneyDeposited",
        correlation_id=uuid4(),
        occurred_at=timezone.now(),
        payload={"amount": "a lot"},
    )
    append_accounts(store, accounts=20, deposits=1)

    run_projections(once=True)

    letter = DeadLetter.objects.get()
    owner = next(i for i in range(4) if event_bucket(account) in range(*bucket_range(i, 4)))
    assert letter.projection_name == unit_name(NAME, owner, 4)
    assert letter.event_data["payload"] == {"amount": "a lot"}
    letter.delete()
    EventRecord.objects.filter(aggregate_id=account).delete()  # so the store replays
    assert_exact(store)


def test_a_units_dead_letter_is_retried_with_its_projection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django_eventsource.projections.maintenance import retry_dead_letters

    store = DjangoEventStore()
    append_accounts(store, accounts=1, deposits=0)
    original = SegmentedTally.on_opened
    monkeypatch.setattr(SegmentedTally, "on_opened", lambda self, event: 1 / 0)
    run_projections(once=True)
    assert DeadLetter.objects.get().projection_name.startswith(f"{NAME}#")
    monkeypatch.setattr(SegmentedTally, "on_opened", original)

    report = retry_dead_letters(projection=NAME)

    assert (report.resolved, report.failed) == (1, 0)
    assert not DeadLetter.objects.open().exists()
    assert AccountSummary.objects.count() == 1


def test_quiet_units_keep_up_with_the_store_in_the_health_report() -> None:
    from django_eventsource.health import get_health

    store = DjangoEventStore()
    append_accounts(store, accounts=20, deposits=1)
    run_projections(once=True)
    # New events of one account only: three units have nothing to do, yet are not behind.
    account = EventRecord.objects.values_list("aggregate_id", flat=True).first()
    store.append_events(
        account,
        "Account",
        [MoneyDeposited(aggregate_id=account, amount=Decimal(3), aggregate_version=3)],
        2,
    )
    run_projections(once=True)

    report = {p.name: p for p in get_health().projections}
    assert set(report) == {unit_name(NAME, i, 4) for i in range(4)}
    assert all(p.lag_events == 0 for p in report.values())
    assert_exact(store)
