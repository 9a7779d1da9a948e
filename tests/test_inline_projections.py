"""Inline projections: applied in the save's transaction, or left to the runner."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from django.db import connection, transaction
from django.test import Client, override_settings
from django.utils import timezone

from django_eventsource import AggregateRepository, DjangoEventStore
from django_eventsource.models import Checkpoint, DeadLetter, EventRecord, OutboxMessage
from django_eventsource.projections.maintenance import (
    reset_projection,
    resume_projection,
    retry_dead_letters,
)
from django_eventsource.projections.runner import run_projections
from tests.testapp import projections as test_projections
from tests.testapp.domain import Account, AccountOpened, MoneyDeposited
from tests.testapp.models import AccountActivity, AccountSummary
from tests.testapp.projections import INLINE_ACTIVITY_UPSERT, INLINE_BATCH_TALLY, INLINE_TALLY

pytestmark = [pytest.mark.own_sql, pytest.mark.django_db, pytest.mark.usefixtures("poison")]

NAME = "InlineTallyProjection"


@pytest.fixture
def repository() -> AggregateRepository[Account]:
    return AggregateRepository(DjangoEventStore(), Account)


def open_and_deposit(
    repository: AggregateRepository[Account], *amounts: int, owner: str = "ann"
) -> UUID:
    account = repository.create_new(uuid4())
    account.open(owner)
    repository.save(account)
    deposit(repository, account.aggregate_id, *amounts)
    return account.aggregate_id


def deposit(repository: AggregateRepository[Account], account_id: UUID, *amounts: int) -> None:
    for amount in amounts:
        account = repository.load(account_id)
        account.deposit(Decimal(amount))
        repository.save(account)


def row(account_id: UUID) -> tuple[Decimal, int]:
    summary = AccountSummary.objects.get(account_id=account_id)
    return summary.balance, summary.events_seen


def expected_from_store() -> dict[UUID, tuple[Decimal, int]]:
    """What the tally must hold: deposits summed, openings and deposits counted."""
    state: dict[UUID, tuple[Decimal, int]] = {}
    for stored in DjangoEventStore().read_all():
        event = stored.event
        if not isinstance(event, AccountOpened | MoneyDeposited):
            continue
        balance, seen = state.get(event.aggregate_id, (Decimal(0), 0))
        if isinstance(event, MoneyDeposited):
            balance += event.amount
        state[event.aggregate_id] = (balance, seen + 1)
    return state


def tally() -> dict[UUID, tuple[Decimal, int]]:
    return {r.account_id: (r.balance, r.events_seen) for r in AccountSummary.objects.all()}


def checkpoint(name: str = NAME) -> int:
    return Checkpoint.objects.get(projection_name=name).position


@override_settings(EVENTSOURCE_PROJECTIONS=[INLINE_TALLY], ROOT_URLCONF="tests.urls_inline")
def test_a_view_reads_its_own_write_from_an_inline_read_model(
    repository: AggregateRepository[Account],
) -> None:
    account_id = open_and_deposit(repository, 10)

    response = Client().post(f"/accounts/{account_id}/deposit", {"amount": "32"})

    assert response.json() == {"balance": "42.00", "events_seen": 3}
    assert checkpoint() == DjangoEventStore().get_global_position()


@pytest.mark.parametrize("path", [INLINE_TALLY, INLINE_BATCH_TALLY])
def test_an_inline_projection_is_up_to_date_after_every_save(
    repository: AggregateRepository[Account], path: str
) -> None:
    with override_settings(EVENTSOURCE_PROJECTIONS=[path]):
        ann = open_and_deposit(repository, 5, 7)
        account = repository.load(ann)
        account.deposit(Decimal(1))
        account.deposit(Decimal(2))
        repository.save(account)  # two events in one append

        assert row(ann) == (Decimal(15), 5)
        assert run_projections(once=True).total_processed == 0


@override_settings(EVENTSOURCE_PROJECTIONS=[INLINE_TALLY], EVENTSOURCE_OUTBOX_ENABLED=True)
def test_a_raising_inline_projection_rolls_the_save_back(
    repository: AggregateRepository[Account], poison: set[Decimal]
) -> None:
    ann = open_and_deposit(repository, 5)
    events_before, outbox_before = EventRecord.objects.count(), OutboxMessage.objects.count()
    position_before = checkpoint()
    poison.add(Decimal(13))
    account = repository.load(ann)
    account.deposit(Decimal(13))

    with pytest.raises(ValueError, match="cannot book 13"):
        repository.save(account)

    assert EventRecord.objects.count() == events_before
    assert OutboxMessage.objects.count() == outbox_before
    assert row(ann) == (Decimal(5), 2)
    assert checkpoint() == position_before
    assert account.uncommitted_events  # nothing was marked as saved


@override_settings(EVENTSOURCE_PROJECTIONS=[INLINE_TALLY])
def test_events_of_no_interest_still_move_the_checkpoint_so_the_next_save_is_inline(
    repository: AggregateRepository[Account],
) -> None:
    ann = open_and_deposit(repository, 50)
    account = repository.load(ann)
    account.withdraw(Decimal(20))  # not subscribed to
    repository.save(account)
    assert checkpoint() == DjangoEventStore().get_global_position()

    deposit(repository, ann, 1)

    assert row(ann) == (Decimal(51), 3)


@override_settings(EVENTSOURCE_PROJECTIONS=[INLINE_TALLY])
def test_switching_inline_to_async_and_back_loses_and_doubles_nothing(
    repository: AggregateRepository[Account], monkeypatch: pytest.MonkeyPatch
) -> None:
    ann = open_and_deposit(repository, 1, 2)
    assert row(ann) == (Decimal(3), 3)

    # Async: saves leave the read model alone, the runner applies their events.
    monkeypatch.setattr(test_projections.InlineTallyProjection, "inline", False)
    deposit(repository, ann, 4)
    bob = open_and_deposit(repository, 8, owner="bob")
    assert row(ann) == (Decimal(3), 3)
    assert not AccountSummary.objects.filter(account_id=bob).exists()
    run_projections(once=True)
    deposit(repository, ann, 16)  # not yet applied when inline comes back

    # Inline again, but behind: the saves leave their events to the runner...
    monkeypatch.setattr(test_projections.InlineTallyProjection, "inline", True)
    deposit(repository, bob, 32)
    assert row(bob) == (Decimal(8), 2)
    # ...which catches up; from then on every save is applied inline.
    run_projections(once=True)
    deposit(repository, ann, 64)

    assert row(ann) == (Decimal(87), 6)
    assert tally() == expected_from_store()
    assert checkpoint() == DjangoEventStore().get_global_position()
    assert run_projections(once=True).total_processed == 0


@override_settings(EVENTSOURCE_PROJECTIONS=[INLINE_TALLY])
def test_a_save_waits_behind_its_aggregates_dead_letter_instead_of_jumping_it(
    repository: AggregateRepository[Account],
    monkeypatch: pytest.MonkeyPatch,
    poison: set[Decimal],
) -> None:
    ann = open_and_deposit(repository, 1)
    bob = open_and_deposit(repository, 2, owner="bob")
    # Written while the projection runs async; the runner dead-letters ann's deposit of 13.
    monkeypatch.setattr(test_projections.InlineTallyProjection, "inline", False)
    poison.add(Decimal(13))
    deposit(repository, ann, 13)
    assert run_projections(once=True).dead_lettered == 1
    monkeypatch.setattr(test_projections.InlineTallyProjection, "inline", True)
    poison.clear()  # the handler is fixed, the dead letter not yet retried

    deposit(repository, ann, 100)  # must not be applied before the 13
    deposit(repository, bob, 4)

    assert row(ann) == (Decimal(1), 2)
    assert checkpoint() < DjangoEventStore().get_global_position()
    run_projections(once=True)  # parks ann's 100 behind the 13, applies bob's 4
    assert row(ann) == (Decimal(1), 2) and row(bob) == (Decimal(6), 3)
    assert retry_dead_letters(NAME).resolved == 2
    assert row(ann) == (Decimal(114), 4)
    assert tally() == expected_from_store()
    deposit(repository, ann, 1000)  # the sequence is clear: inline again
    assert row(ann) == (Decimal(1114), 5)


@override_settings(EVENTSOURCE_PROJECTIONS=[INLINE_TALLY])
def test_a_paused_inline_projection_leaves_saves_to_the_runner(
    repository: AggregateRepository[Account],
) -> None:
    ann = open_and_deposit(repository, 1)
    Checkpoint.objects.filter(projection_name=NAME).update(paused_at=timezone.now())

    deposit(repository, ann, 5)

    assert row(ann) == (Decimal(1), 2)
    assert resume_projection(NAME)
    run_projections(once=True)
    assert row(ann) == (Decimal(6), 3)


@override_settings(EVENTSOURCE_PROJECTIONS=[INLINE_TALLY])
def test_a_rebuild_of_an_inline_projection_replays_everything_once(
    repository: AggregateRepository[Account],
) -> None:
    open_and_deposit(repository, 1, 2, 3)
    open_and_deposit(repository, 4, owner="bob")
    AccountSummary.objects.update(balance=0)

    reset_projection(NAME, rebuild=True)

    assert tally() == expected_from_store()


@override_settings(EVENTSOURCE_PROJECTIONS=[INLINE_TALLY])
def test_an_append_inside_the_callers_transaction_is_applied_with_it(
    repository: AggregateRepository[Account], poison: set[Decimal]
) -> None:
    ann = open_and_deposit(repository, 1)
    poison.add(Decimal(99))

    with pytest.raises(ValueError), transaction.atomic():
        deposit(repository, ann, 2)
        assert row(ann) == (Decimal(3), 3)
        deposit(repository, ann, 99)

    assert row(ann) == (Decimal(1), 2)
    assert tally() == expected_from_store()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@override_settings(EVENTSOURCE_PROJECTIONS=[INLINE_TALLY])
def test_a_save_racing_a_rolled_back_one_is_applied_exactly_once(
    repository: AggregateRepository[Account],
) -> None:
    ann = open_and_deposit(repository, 1)
    bob = open_and_deposit(repository, 2, owner="bob")
    claimed = threading.Event()
    finish = threading.Event()
    errors: list[BaseException] = []

    def first_writer() -> None:
        # Takes the next position and claims the checkpoint, then rolls back: a gap.
        try:
            with transaction.atomic():
                deposit(repository, ann, 100)
                claimed.set()
                finish.wait(30)
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            claimed.set()
            connection.close()

    writer = threading.Thread(target=first_writer)
    writer.start()
    try:
        assert claimed.wait(30)

        def second_writer() -> None:
            try:
                deposit(repository, bob, 10)  # waits on the checkpoint row
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                connection.close()

        second = threading.Thread(target=second_writer)
        second.start()
        finish.set()
        second.join(30)
    finally:
        finish.set()
        writer.join(30)
    assert not errors

    # Applied inline if the gap had settled by then, else left to the runner.
    run_projections(once=True)
    assert tally() == expected_from_store()
    assert row(bob) == (Decimal(12), 3)
    deposit(repository, bob, 5)
    assert row(bob) == (Decimal(17), 4)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@override_settings(EVENTSOURCE_PROJECTIONS=[INLINE_TALLY])
def test_concurrent_writers_with_an_inline_projection_apply_every_event_once(
    repository: AggregateRepository[Account],
) -> None:
    accounts = [open_and_deposit(repository, owner=f"owner{n}") for n in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(accounts))

    def writer(account_id: UUID) -> None:
        try:
            start.wait(30)
            deposit(repository, account_id, *range(1, 26))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(a,)) for a in accounts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors

    run_projections(once=True)  # whatever a lost race left behind

    assert tally() == expected_from_store()
    assert all(row(a) == (Decimal(325), 26) for a in accounts)
    assert checkpoint() == DjangoEventStore().get_global_position()


def _wait_for_a_blocked_session(deadline: float = 30.0) -> None:
    """Until another session of this database waits for a row lock."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return
        threading.Event().wait(0.01)  # poll interval
    raise AssertionError("no session ever waited for the checkpoint row")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@override_settings(EVENTSOURCE_PROJECTIONS=[INLINE_TALLY])
def test_a_save_waiting_for_a_batch_that_dead_letters_its_aggregate_parks_behind_it(
    repository: AggregateRepository[Account],
) -> None:
    # A runner's batch holds the checkpoint row, dead-letters one of ann's events and
    # moves the checkpoint to just before the save's event, which meanwhile waits for
    # the row. Whether the claim then goes through against the committed row (its
    # dead-letter check having seen the database as it was before the batch) or falls
    # back to a fresh read, the save must not apply ann's event ahead of the dead letter.
    ann = open_and_deposit(repository, 1)
    behind = checkpoint() - 1
    Checkpoint.objects.filter(projection_name=NAME).update(position=behind)
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def batch() -> None:
        try:
            with transaction.atomic():
                row_ = Checkpoint.objects.select_for_update().get(projection_name=NAME)
                with connection.cursor() as cursor:
                    cursor.execute("SELECT last_value FROM eventsource_event_position_seq")
                    next_position = cursor.fetchone()[0] + 1
                row_.position = next_position - 1
                row_.save(update_fields=["position"])
                DeadLetter.objects.create(
                    event_id=uuid4(),
                    projection_name=NAME,
                    event_type="MoneyDeposited",
                    event_data={},
                    error_message="failed in the batch",
                    sequence_key=str(ann),
                    global_position=behind,
                )
                holding.set()
                assert release.wait(30)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            holding.set()
            connection.close()

    def save() -> None:
        try:
            deposit(repository, ann, 50)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    runner = threading.Thread(target=batch)
    runner.start()
    writer = threading.Thread(target=save)
    try:
        assert holding.wait(30)
        writer.start()
        _wait_for_a_blocked_session()
    finally:
        release.set()
        runner.join(30)
        if writer.is_alive() or writer.ident is not None:
            writer.join(30)
    assert not errors

    assert row(ann) == (Decimal(1), 2)  # the 50 was not applied
    # Left to the runner (or parked by the save itself): behind the dead letter.
    run_projections(once=True)
    assert row(ann) == (Decimal(1), 2)
    parked = DeadLetter.objects.get(projection_name=NAME, parked=True)
    assert parked.sequence_key == str(ann)
    assert parked.global_position == checkpoint()


@override_settings(EVENTSOURCE_PROJECTIONS=[INLINE_TALLY])
def test_a_claim_made_against_a_row_moved_meanwhile_parks_what_is_now_blocked(
    repository: AggregateRepository[Account],
) -> None:
    # What the save does when its claim went through against a checkpoint row another
    # transaction moved while the save waited: the blocked sequences are read again and
    # their events parked, the others applied.
    from django_eventsource.projections.inline import _admitted

    ann = open_and_deposit(repository, 1)
    bob = open_and_deposit(repository, 2, owner="bob")
    DeadLetter.objects.create(
        event_id=uuid4(),
        projection_name=NAME,
        event_type="MoneyDeposited",
        sequence_key=str(ann),
        global_position=1,
    )
    events = [
        MoneyDeposited(aggregate_id=ann, amount=Decimal(5), aggregate_version=3),
        MoneyDeposited(aggregate_id=bob, amount=Decimal(6), aggregate_version=3),
    ]
    projection = test_projections.InlineTallyProjection()
    positions = {events[0].event_id: 101, events[1].event_id: 102}

    admitted = _admitted(projection, connection.alias, events, positions)

    assert admitted == [events[1]]
    parked = DeadLetter.objects.get(projection_name=NAME, parked=True)
    assert (parked.event_id, parked.global_position) == (events[0].event_id, 101)


@override_settings(
    EVENTSOURCE_PROJECTIONS=[INLINE_TALLY, INLINE_ACTIVITY_UPSERT], EVENTSOURCE_OUTBOX_ENABLED=False
)
def test_two_inline_projections_each_claim_their_checkpoint_in_one_save(
    repository: AggregateRepository[Account],
) -> None:
    ann = open_and_deposit(repository, 1, 2)

    assert row(ann) == (Decimal(3), 3)
    activity = AccountActivity.objects.get(account_id=ann)
    assert (activity.events, activity.total) == (3, Decimal(3))
    head = DjangoEventStore().get_global_position()
    assert checkpoint() == head
    assert checkpoint("InlineActivityUpsert") == head
