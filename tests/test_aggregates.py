"""AggregateRoot and DeclarativeAggregate: versions, replay, uncommitted events, dispatch."""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from uuid import uuid4

import pytest
from pydantic import BaseModel

from django_eventsource import (
    AggregateRoot,
    DeclarativeAggregate,
    DomainEvent,
    EventVersionError,
    handles,
)
from django_eventsource.exceptions import InvalidEventError, UnhandledEventError
from tests.factories import (
    AccountClosedFactory,
    AccountOpenedFactory,
    MoneyDepositedFactory,
    account_history,
)
from tests.testapp.domain import (
    Account,
    AccountOpened,
    MoneyDeposited,
    MoneyWithdrawn,
)


class CounterState(BaseModel):
    total: int = 0


class CounterIncremented(DomainEvent):
    aggregate_type: str = "Counter"
    by: int = 1


class Counter(AggregateRoot[CounterState]):
    """A hand-written ``_apply``, as in the guide's first example."""

    aggregate_type = "Counter"

    def _get_initial_state(self) -> CounterState:
        return CounterState()

    def _apply(self, event: DomainEvent) -> None:
        if isinstance(event, CounterIncremented):
            self._state = CounterState(total=self._state.total + event.by)


class OpenOnlyAccount(DeclarativeAggregate[CounterState]):
    """Handles only ``AccountOpened``; ``MoneyDeposited`` is unhandled."""

    aggregate_type = "Account"

    def _get_initial_state(self) -> CounterState:
        return CounterState()

    @handles(AccountOpened)
    def _on_opened(self, event: AccountOpened) -> None:
        self._state = CounterState(total=1)


class WarningAccount(OpenOnlyAccount):
    unhandled_event_policy = "warn"


class IgnoringAccount(OpenOnlyAccount):
    unhandled_event_policy = "ignore"


# -- versions -----------------------------------------------------------------------------


def test_a_new_aggregate_starts_at_version_zero_with_its_initial_state() -> None:
    account = Account(uuid4())
    assert account.version == 0
    assert account.get_next_version() == 1
    assert account.state.balance == Decimal("0")
    assert not account.has_uncommitted_events


def test_applying_an_event_advances_the_version() -> None:
    counter = Counter(uuid4())
    counter.apply_event(CounterIncremented(aggregate_id=counter.aggregate_id, by=5))
    assert counter.version == 1
    assert counter.state.total == 5


@pytest.mark.parametrize("wrong_version", [2, 3])
def test_an_event_that_skips_a_version_is_refused(wrong_version: int) -> None:
    account = Account(uuid4())
    event = AccountOpenedFactory(aggregate_id=account.aggregate_id, aggregate_version=wrong_version)
    with pytest.raises(EventVersionError) as excinfo:
        account.apply_event(event)
    assert (excinfo.value.expected_version, excinfo.value.event_version) == (1, wrong_version)
    assert account.version == 0
    assert not account.has_uncommitted_events


def test_a_version_error_names_the_event_and_both_versions() -> None:
    account = Account(uuid4())
    event = AccountOpenedFactory(aggregate_id=account.aggregate_id, aggregate_version=4)
    with pytest.raises(EventVersionError) as excinfo:
        account.apply_event(event)
    error = excinfo.value
    assert (error.event_id, error.expected_version, error.actual_version) == (event.event_id, 1, 4)
    assert str(event.event_id) in str(error)
    assert "aggregate_version 4" in str(error)
    assert "expected version 1" in str(error)


def test_an_event_replayed_twice_is_refused() -> None:
    history = account_history(deposits=1)
    account = Account(history[0].aggregate_id)
    account.load_from_history(history)
    with pytest.raises(EventVersionError):
        account.apply_event(history[-1])
    assert account.version == 2


def test_an_event_of_another_aggregate_is_refused() -> None:
    account = Account(uuid4())
    with pytest.raises(InvalidEventError, match="belongs to aggregate"):
        account.apply_event(AccountOpenedFactory())
    assert account.version == 0


def test_a_non_uuid_aggregate_id_is_refused() -> None:
    with pytest.raises(InvalidEventError, match="aggregate_id must be a UUID"):
        Account("account-1")  # type: ignore[arg-type]


def test_an_aggregate_without_aggregate_type_cannot_be_created() -> None:
    class Nameless(AggregateRoot[CounterState]):
        def _get_initial_state(self) -> CounterState:
            return CounterState()

        def _apply(self, event: DomainEvent) -> None:
            pass

    with pytest.raises(TypeError, match="Nameless must set the aggregate_type"):
        Nameless(uuid4())


# -- replay and uncommitted events --------------------------------------------------------


def test_load_from_history_rebuilds_state_without_uncommitted_events() -> None:
    agg_id = uuid4()
    history = [
        AccountOpenedFactory(aggregate_id=agg_id, owner="ada", opening_balance=Decimal("10")),
        MoneyDepositedFactory(aggregate_id=agg_id, aggregate_version=2, amount=Decimal("5")),
        MoneyDepositedFactory(aggregate_id=agg_id, aggregate_version=3, amount=Decimal("2.5")),
    ]
    account = Account(agg_id)
    account.load_from_history(history)
    assert account.state.owner == "ada"
    assert account.state.balance == Decimal("17.5")
    assert account.version == 3
    assert account.uncommitted_events == []


def test_new_events_are_tracked_until_marked_committed() -> None:
    account = Account(uuid4())
    account.open("ada", Decimal("10"))
    account.deposit(Decimal("5"))
    assert [type(e) for e in account.uncommitted_events] == [AccountOpened, MoneyDeposited]
    assert [e.aggregate_version for e in account.uncommitted_events] == [1, 2]
    assert account.has_uncommitted_events
    account.mark_events_as_committed()
    assert account.uncommitted_events == []
    assert not account.has_uncommitted_events
    assert account.version == 2
    assert account.state.balance == Decimal("15")


def test_uncommitted_events_cannot_be_altered_from_outside() -> None:
    account = Account(uuid4())
    account.open("ada")
    account.uncommitted_events.clear()
    assert len(account.uncommitted_events) == 1


def test_raise_event_fills_in_the_aggregate_envelope() -> None:
    account = Account(uuid4())
    account.open("ada")
    event = account.raise_event(MoneyDeposited, amount=Decimal("3"))
    assert event.aggregate_id == account.aggregate_id
    assert event.aggregate_type == "Account"
    assert event.aggregate_version == 2
    assert account.uncommitted_events[-1] is event
    assert account.state.balance == Decimal("3")


def test_a_failing_command_leaves_the_aggregate_unchanged() -> None:
    account = Account(uuid4())
    account.open("ada", Decimal("10"))
    with pytest.raises(ValueError, match="insufficient funds"):
        account.withdraw(Decimal("50"))
    assert account.version == 1
    assert len(account.uncommitted_events) == 1


# -- declarative dispatch -----------------------------------------------------------------


def test_declarative_handlers_are_chosen_by_event_class() -> None:
    history = account_history(deposits=1)
    agg_id = history[0].aggregate_id
    account = Account(agg_id)
    account.load_from_history(
        [*history, AccountClosedFactory(aggregate_id=agg_id, aggregate_version=3)]
    )
    assert account.state.closed
    assert account.state.balance == history[1].amount  # type: ignore[attr-defined]


def test_an_unhandled_event_raises_by_default() -> None:
    aggregate = OpenOnlyAccount(uuid4())
    aggregate.apply_event(AccountOpenedFactory(aggregate_id=aggregate.aggregate_id))
    deposit = MoneyDepositedFactory(aggregate_id=aggregate.aggregate_id, aggregate_version=2)
    with pytest.raises(UnhandledEventError, match="'MoneyDeposited'"):
        aggregate.apply_event(deposit)
    assert aggregate.version == 1


def test_the_warn_policy_warns_and_still_advances_the_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    aggregate = WarningAccount(uuid4())
    deposit = MoneyDepositedFactory(aggregate_id=aggregate.aggregate_id)
    with (
        caplog.at_level(logging.WARNING, logger="django_eventsource"),
        pytest.warns(UserWarning, match="no handler for MoneyDeposited"),
    ):
        aggregate.apply_event(deposit)
    assert aggregate.version == 1
    assert aggregate.state.total == 0
    assert "no handler for MoneyDeposited" in caplog.text


def test_the_ignore_policy_skips_unhandled_events_silently(
    recwarn: pytest.WarningsRecorder,
) -> None:
    aggregate = IgnoringAccount(uuid4())
    aggregate.apply_event(MoneyDepositedFactory(aggregate_id=aggregate.aggregate_id))
    assert aggregate.version == 1
    assert len(recwarn) == 0


def test_a_handler_for_a_base_class_receives_subclass_events() -> None:
    class SpecialDeposit(MoneyDeposited):
        pass

    account = Account(uuid4())
    account.open("ada")
    account.apply_event(
        SpecialDeposit(aggregate_id=account.aggregate_id, aggregate_version=2, amount=Decimal("4"))
    )
    assert account.state.balance == Decimal("4")


def test_a_subclass_inherits_and_extends_handlers() -> None:
    class AuditedAccount(Account):
        withdrawals: int = 0

        @handles(MoneyWithdrawn)
        def _count_withdrawal(self, event: MoneyWithdrawn) -> None:
            self.withdrawals += 1

    account = AuditedAccount(uuid4())
    account.open("ada", Decimal("10"))
    account.withdraw(Decimal("4"))
    assert account.withdrawals == 1
    assert account.state.owner == "ada"


def test_handles_refuses_non_event_classes() -> None:
    with pytest.raises(TypeError, match="DomainEvent subclasses"):
        handles(int)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="at least one"):
        handles()


def test_an_async_handler_on_an_aggregate_is_refused_at_class_definition() -> None:
    with pytest.raises(TypeError, match="_on_opened is async"):

        class AsyncAccount(DeclarativeAggregate[CounterState]):
            aggregate_type = "Account"

            def _get_initial_state(self) -> CounterState:
                return CounterState()

            @handles(AccountOpened)
            async def _on_opened(self, event: AccountOpened) -> None:
                self._state = CounterState(total=1)


# -- turning off the version check --------------------------------------------------------


def lenient_counter_class() -> type[Counter]:
    """A new ``Counter`` subclass (each warns for itself) that skips the version check."""

    class LenientCounter(Counter):
        validate_versions = False

    return LenientCounter


def test_an_aggregate_without_version_validation_applies_any_aggregate_version() -> None:
    counter = lenient_counter_class()(uuid4())
    for version in (5, 3):
        counter.apply_event(
            CounterIncremented(aggregate_id=counter.aggregate_id, aggregate_version=version)
        )
    assert counter.state.total == 2
    assert counter.version == 3
    assert [e.aggregate_version for e in counter.uncommitted_events] == [5, 3]
    # Only the version check is off: another aggregate's event is still refused.
    with pytest.raises(InvalidEventError, match="belongs to aggregate"):
        counter.apply_event(CounterIncremented(aggregate_id=uuid4()))


def test_turning_off_version_validation_logs_one_warning_per_class(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first_class, second_class = lenient_counter_class(), lenient_counter_class()
    with caplog.at_level(logging.WARNING, logger="django_eventsource"):
        for aggregate_class in (first_class, first_class, second_class):
            counter = aggregate_class(uuid4())
            for version in (1, 2):
                counter.apply_event(
                    CounterIncremented(aggregate_id=counter.aggregate_id, aggregate_version=version)
                )
    warnings = [r for r in caplog.records if "validate_versions = False" in r.getMessage()]
    assert len(warnings) == 2
    assert all("LenientCounter" in r.getMessage() for r in warnings)


def test_the_validation_warning_is_logged_once_when_threads_race_to_apply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    aggregate_class = lenient_counter_class()
    start = threading.Barrier(8)

    def apply_one() -> None:
        counter = aggregate_class(uuid4())
        start.wait()
        counter.apply_event(CounterIncremented(aggregate_id=counter.aggregate_id))

    with caplog.at_level(logging.WARNING, logger="django_eventsource"):
        threads = [threading.Thread(target=apply_one) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    warnings = [r for r in caplog.records if "validate_versions = False" in r.getMessage()]
    assert len(warnings) == 1


# -- clearing, identity and repr ----------------------------------------------------------


def test_clear_uncommitted_events_returns_the_events_it_cleared() -> None:
    account = Account(uuid4())
    account.open("ada", Decimal("10"))
    account.deposit(Decimal("5"))
    pending = account.uncommitted_events
    cleared = account.clear_uncommitted_events()
    assert cleared == pending
    assert not account.has_uncommitted_events
    assert account.clear_uncommitted_events() == []
    assert (account.version, account.state.balance) == (2, Decimal("15"))


def test_aggregates_are_equal_by_type_and_id_whatever_their_version() -> None:
    history = account_history(deposits=2)
    agg_id = history[0].aggregate_id
    fresh, loaded = Account(agg_id), Account(agg_id)
    loaded.load_from_history(history)
    assert fresh == loaded
    assert hash(fresh) == hash(loaded)
    assert len({fresh, loaded, Counter(agg_id), Account(uuid4())}) == 3
    assert Account(agg_id) != Counter(agg_id)
    assert Account(agg_id) != agg_id


def test_repr_shows_the_aggregate_type_id_and_version() -> None:
    class TallyAggregate(Counter):
        aggregate_type = "Tally"

    tally = TallyAggregate(uuid4())
    tally.apply_event(CounterIncremented(aggregate_id=tally.aggregate_id))
    tally.apply_event(CounterIncremented(aggregate_id=tally.aggregate_id, aggregate_version=2))
    assert repr(tally) == f"<TallyAggregate Tally:{tally.aggregate_id} version=2>"
