"""Handler declarations: the @handles helpers, handler base classes, the subscriber registry
and the signature check run when a declarative projection is defined."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from django_eventsource import DeclarativeProjection, DomainEvent, InMemoryEventBus, handles
from django_eventsource.events.handlers import (
    AsyncEventHandlerBase,
    EventHandlerBase,
    SubscriberRegistry,
    get_handled_event_type,
    get_handled_event_types,
    is_event_handler,
)
from tests.testapp.domain import AccountClosed, AccountOpened, MoneyDeposited, MoneyWithdrawn


class LargeDeposit(MoneyDeposited):
    """A subclass: subscribers of ``MoneyDeposited`` receive it too."""


def opened() -> AccountOpened:
    return AccountOpened(aggregate_id=uuid4(), owner="ann")


def deposited(amount: int = 1) -> MoneyDeposited:
    return MoneyDeposited(aggregate_id=uuid4(), amount=Decimal(amount))


@handles(AccountOpened)
def on_opened(event: AccountOpened) -> None: ...


@handles(MoneyDeposited, MoneyWithdrawn)
def on_money_moved(event: DomainEvent) -> None: ...


def not_a_handler(event: DomainEvent) -> None: ...


class Deposits(EventHandlerBase):
    event_types = (MoneyDeposited,)

    def __init__(self) -> None:
        self.seen: list[DomainEvent] = []

    def handle(self, event: DomainEvent) -> None:
        self.seen.append(event)


class Audit(EventHandlerBase):
    def handle(self, event: DomainEvent) -> None: ...


class AsyncOpenings(AsyncEventHandlerBase):
    event_types = [AccountOpened]  # type: ignore[assignment]  # a list is accepted too

    def __init__(self) -> None:
        self.seen: list[DomainEvent] = []

    async def handle(self, event: DomainEvent) -> None:
        await asyncio.sleep(0)
        self.seen.append(event)


# -- @handles helpers ----------------------------------------------------------------------


def test_a_function_marked_with_handles_is_an_event_handler() -> None:
    class Holder:
        @handles(AccountOpened)
        def on_opened(self, event: AccountOpened) -> None: ...

    assert is_event_handler(on_opened)
    assert is_event_handler(Holder().on_opened)
    assert not is_event_handler(not_a_handler)
    assert not is_event_handler(object())


def test_the_handled_event_type_of_a_handler_is_the_class_it_was_marked_with() -> None:
    assert get_handled_event_type(on_opened) is AccountOpened
    assert get_handled_event_type(not_a_handler) is None


def test_asking_for_the_one_handled_type_of_a_multi_event_handler_names_them_all() -> None:
    with pytest.raises(ValueError, match="MoneyDeposited, MoneyWithdrawn"):
        get_handled_event_type(on_money_moved)

    assert get_handled_event_types(on_money_moved) == (MoneyDeposited, MoneyWithdrawn)
    assert get_handled_event_types(not_a_handler) == ()


# -- handler base classes ------------------------------------------------------------------


def test_a_handler_can_handle_its_event_types_and_their_subclasses_only() -> None:
    handler = Deposits()

    assert handler.can_handle(deposited())
    assert handler.can_handle(LargeDeposit(aggregate_id=uuid4(), amount=Decimal(900)))
    assert not handler.can_handle(opened())
    assert handler.subscribed_to() == [MoneyDeposited]


def test_a_handler_without_event_types_can_handle_every_event() -> None:
    assert Audit().can_handle(opened())
    assert Audit().subscribed_to() == []


def test_an_async_handler_declares_its_event_types_like_a_sync_one() -> None:
    handler = AsyncOpenings()

    assert AsyncOpenings.event_types == (AccountOpened,)
    assert handler.can_handle(opened())
    assert not handler.can_handle(deposited())


def test_event_types_must_be_event_classes() -> None:
    with pytest.raises(TypeError, match=r"Wrong\.event_types must list DomainEvent subclasses"):

        class Wrong(EventHandlerBase):
            event_types = ("MoneyDeposited",)  # type: ignore[assignment]

            def handle(self, event: DomainEvent) -> None: ...


def test_a_handler_class_without_handle_cannot_be_instantiated() -> None:
    class Incomplete(EventHandlerBase):
        event_types = (MoneyDeposited,)

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # type: ignore[abstract]


def test_handlers_subscribe_to_a_bus_by_their_event_types() -> None:
    deposits, openings = Deposits(), AsyncOpenings()
    bus = InMemoryEventBus()
    bus.subscribe_all(deposits)
    bus.subscribe_all(openings)
    account, money = opened(), deposited()

    bus.publish([account, money])

    assert deposits.seen == [money]
    assert openings.seen == [account]


# -- SubscriberRegistry --------------------------------------------------------------------


def test_the_subscriber_registry_finds_subscribers_by_event_class_and_subclass() -> None:
    deposits, openings, audit = Deposits(), AsyncOpenings(), Audit()
    registry = SubscriberRegistry([deposits, openings, audit])

    assert registry.get_subscribers(MoneyDeposited) == [deposits, audit]
    assert registry.get_subscribers(LargeDeposit) == [deposits, audit]
    assert registry.get_subscribers(opened()) == [openings, audit]
    assert registry.get_subscribers(AccountClosed) == [audit]
    assert registry.get_event_types() == [MoneyDeposited, AccountOpened]


def test_the_subscriber_registry_asks_can_handle_for_an_event_instance() -> None:
    class BigDeposits(Deposits):
        def can_handle(self, event: DomainEvent) -> bool:
            return super().can_handle(event) and getattr(event, "amount", 0) >= 100

    big = BigDeposits()
    registry = SubscriberRegistry([big])

    assert registry.get_subscribers(deposited(500)) == [big]
    assert registry.get_subscribers(deposited(5)) == []
    assert registry.get_subscribers(MoneyDeposited) == [big]


def test_the_subscriber_registry_takes_any_event_subscriber_such_as_a_projection() -> None:
    class Openings(DeclarativeProjection):
        @handles(AccountOpened)
        def on_opened(self, event: AccountOpened) -> None: ...

        def reset(self) -> None: ...

    projection = Openings()
    registry = SubscriberRegistry()

    assert registry.register(projection) is projection
    assert registry.get_subscribers(AccountOpened) == [projection]
    with pytest.raises(TypeError, match="not an event subscriber"):
        registry.register(object())  # type: ignore[type-var]


def test_registering_a_subscriber_twice_files_it_once_and_unregister_reports_removal() -> None:
    deposits = Deposits()
    registry = SubscriberRegistry([deposits])
    registry.register(deposits)

    assert len(registry) == 1
    assert deposits in registry
    assert registry.unregister(deposits) is True
    assert registry.unregister(deposits) is False
    assert registry.get_subscribers(MoneyDeposited) == []
    assert registry.get_all_subscribers() == []


def test_the_guides_module_paths_offer_the_handler_helpers() -> None:
    from django_eventsource.projections import base, decorators, protocols

    assert protocols.EventHandlerBase is EventHandlerBase
    assert protocols.AsyncEventHandlerBase is AsyncEventHandlerBase
    assert protocols.SubscriberRegistry is SubscriberRegistry
    assert protocols.is_event_handler is decorators.is_event_handler is is_event_handler
    assert protocols.get_handled_event_type is decorators.get_handled_event_type
    assert base.EventHandlerBase is EventHandlerBase


# -- handler signatures, checked when a projection class is defined -----------------------


def test_a_handler_without_an_event_parameter_fails_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError) as excinfo:

        class Forgetful(DeclarativeProjection):
            @handles(AccountOpened)
            def on_opened(self) -> None: ...

            def reset(self) -> None: ...

    message = str(excinfo.value)
    assert "Forgetful.on_opened" in message
    assert "AccountOpened" in message
    assert "def on_opened(self, event)" in message


def test_a_handler_in_the_guides_connection_style_fails_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match=r"Ported\.on_deposit\(self, conn, event\) handles"):

        class Ported(DeclarativeProjection):
            @handles(MoneyDeposited, LargeDeposit)
            async def on_deposit(self, conn: Any, event: MoneyDeposited) -> None: ...

            def reset(self) -> None: ...


def test_an_override_of_an_inherited_handler_is_checked_too() -> None:
    class Base(DeclarativeProjection):
        @handles(AccountOpened)
        def on_opened(self, event: AccountOpened) -> None: ...

        def reset(self) -> None: ...

    with pytest.raises(TypeError, match=r"Child\.on_opened"):

        class Child(Base):
            def on_opened(self, event: AccountOpened, when: str) -> None:  # type: ignore[override]
                ...


def test_handlers_callable_with_one_event_are_accepted() -> None:
    class Flexible(DeclarativeProjection):
        @handles(AccountOpened)
        def on_opened(self, event: AccountOpened, note: str = "") -> None: ...

        @handles(MoneyDeposited)
        @staticmethod
        def on_deposited(event: MoneyDeposited) -> None: ...

        @handles(MoneyWithdrawn)
        def on_withdrawn(self, *events: DomainEvent) -> None: ...

        def reset(self) -> None: ...

    assert set(Flexible.get_handlers()) == {AccountOpened, MoneyDeposited, MoneyWithdrawn}
