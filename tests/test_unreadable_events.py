"""Stored rows that no longer make an event: a typed error on reads, a dead letter in the runner.

Each kind of damage is written with raw SQL, as a bug, a manual fix or an older version of
an application might have left it. Some kinds cannot exist on PostgreSQL, whose column
types reject them; ``infinity`` is a timestamp only PostgreSQL can hold.
"""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest
from django.db import connection
from django.test import override_settings

from django_eventsource import AggregateRepository, DjangoEventStore
from django_eventsource.exceptions import SerializationError
from django_eventsource.models import DeadLetter
from django_eventsource.projections.runner import run_projections
from tests.testapp.domain import Account
from tests.testapp.models import AccountSummary
from tests.testapp.projections import SUMMARY, open_account

pytestmark = [pytest.mark.own_sql, pytest.mark.django_db]

#: column -> stored text, per kind of damage; ``None`` where the database cannot hold it.
DAMAGE: dict[str, dict[str, dict[str, str] | None]] = {
    "payload-array": {"sqlite": {"payload": "[1, 2]"}, "postgresql": {"payload": "[1, 2]"}},
    "payload-null": {"sqlite": {"payload": "null"}, "postgresql": {"payload": "null"}},
    "payload-string": {"sqlite": {"payload": '"hello"'}, "postgresql": {"payload": '"hello"'}},
    "payload-malformed": {"sqlite": {"payload": '{"amount": '}, "postgresql": None},
    "payload-invalid": {
        "sqlite": {"payload": '{"amount": "a lot"}'},
        "postgresql": {"payload": '{"amount": "a lot"}'},
    },
    "metadata-array": {"sqlite": {"metadata": "[1]"}, "postgresql": {"metadata": "[1]"}},
    "metadata-malformed": {"sqlite": {"metadata": "{"}, "postgresql": None},
    "event-id-not-a-uuid": {"sqlite": {"event_id": "not-a-uuid"}, "postgresql": None},
    "occurred-at-unreadable": {
        "sqlite": {"occurred_at": "yesterday"},
        "postgresql": {"occurred_at": "infinity"},
    },
    "recorded-at-unreadable": {
        "sqlite": {"recorded_at": "garbage"},
        "postgresql": {"recorded_at": "infinity"},
    },
}


def damage(kind: str) -> dict[str, str]:
    columns = DAMAGE[kind][connection.vendor]
    if columns is None:
        pytest.skip(f"{connection.vendor} cannot store this damage (its column type rejects it)")
    return columns


def store_damaged_deposit(account_id: UUID, columns: dict[str, str]) -> tuple[int, str]:
    """Insert version 2 of the account, a deposit, with ``columns`` overridden.

    Returns its position and its event id as stored.
    """
    as_uuid = (lambda u: u.hex) if connection.vendor == "sqlite" else str
    row = {
        "event_id": as_uuid(uuid4()),
        "aggregate_type": "Account",
        "aggregate_id": as_uuid(account_id),
        "aggregate_version": 2,
        "event_type": "MoneyDeposited",
        "event_version": 1,
        "correlation_id": as_uuid(uuid4()),
        "occurred_at": "2024-01-01 00:00:00",
        "payload": '{"amount": "1"}',
        "metadata": "{}",
        **columns,
    }
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            # Django declares CHECK (JSON_VALID(...)); damage happens around such checks.
            cursor.execute("PRAGMA ignore_check_constraints = ON")
        try:
            cursor.execute(
                f"INSERT INTO eventsource_event ({', '.join(row)}) "
                f"VALUES ({', '.join(['%s'] * len(row))}) RETURNING position",
                list(row.values()),
            )
            (position,) = cursor.fetchone()
        finally:
            if connection.vendor == "sqlite":
                cursor.execute("PRAGMA ignore_check_constraints = OFF")
    stored_id = row["event_id"]
    return int(position), str(UUID(stored_id)) if stored_id != "not-a-uuid" else stored_id


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_reading_a_damaged_row_raises_a_serialization_error_naming_its_position_and_id(
    kind: str,
) -> None:
    store = DjangoEventStore()
    before = open_account(store, "ann")
    position, event_id = store_damaged_deposit(before, damage(kind))
    open_account(store, "bob")
    read: list[UUID] = []

    with pytest.raises(SerializationError) as excinfo:
        for stored in store.read_all():
            read.append(stored.event.aggregate_id)

    assert f"at position {position}" in str(excinfo.value)
    assert event_id in str(excinfo.value)
    assert excinfo.value.event_type == "MoneyDeposited"
    assert read == [before]


@pytest.mark.parametrize("kind", [k for k in DAMAGE if k != "recorded-at-unreadable"])
def test_loading_an_aggregate_with_a_damaged_event_raises_a_serialization_error(
    kind: str,
) -> None:
    store = DjangoEventStore()
    account_id = open_account(store, "ann")
    position, event_id = store_damaged_deposit(account_id, damage(kind))

    with pytest.raises(SerializationError, match=f"at position {position}") as excinfo:
        AggregateRepository(store, Account).load(account_id)

    assert event_id in str(excinfo.value)


@pytest.mark.parametrize("kind", list(DAMAGE))
@override_settings(EVENTSOURCE_PROJECTIONS=[SUMMARY])
def test_the_runner_dead_letters_a_damaged_row_and_moves_on(kind: str) -> None:
    store = DjangoEventStore()
    before = open_account(store, "ann")
    position, event_id = store_damaged_deposit(before, damage(kind))
    after = open_account(store, "bob")

    run_projections(once=True)

    letter = DeadLetter.objects.get()
    assert letter.global_position == position
    assert letter.event_type == "MoneyDeposited"
    assert letter.event_data["event_id"] == event_id
    assert "SerializationError" in letter.error_message
    assert f"at position {position}" in letter.error_message
    assert set(AccountSummary.objects.values_list("account_id", flat=True)) == {before, after}
    assert run_projections(once=True).total_processed == 0
