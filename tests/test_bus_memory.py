from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from django_eventsource import DomainEvent, InMemoryEventBus
from django_eventsource.bus.interface import AsyncEventHandler
from django_eventsource.bus.memory import InMemoryEventBusStats
from django_eventsource.exceptions import EventBusError
from tests.testapp.domain import AccountClosed, AccountOpened, MoneyDeposited

WAIT = 10.0  # generous upper bound for cross-thread waits; never slept through


def opened(account_id: UUID | None = None, owner: str = "Ada") -> AccountOpened:
    return AccountOpened(aggregate_id=account_id or uuid4(), owner=owner)


def deposited(amount: str = "10", version: int = 2) -> MoneyDeposited:
    return MoneyDeposited(aggregate_id=uuid4(), amount=Decimal(amount), aggregate_version=version)


def owner_of(event: DomainEvent) -> str:
    assert isinstance(event, AccountOpened)
    return event.owner


class Recorder:
    """A handler object with a sync ``handle``."""

    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    def handle(self, event: DomainEvent) -> None:
        self.events.append(event)


class AsyncRecorder(AsyncEventHandler):
    def __init__(self) -> None:
        self.events: list[DomainEvent] = []
        self.loops: list[asyncio.AbstractEventLoop] = []

    async def handle(self, event: DomainEvent) -> None:
        await asyncio.sleep(0)  # a real suspension point, as an I/O-bound handler has
        self.loops.append(asyncio.get_running_loop())
        self.events.append(event)


class OpeningsProjection:
    """An ``EventSubscriber``: declares its event classes and handles them."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def subscribed_to(self) -> list[type[DomainEvent]]:
        return [AccountOpened, AccountClosed]

    def handle(self, event: DomainEvent) -> None:
        self.seen.append(event.event_type)


@pytest.fixture
def bus() -> Iterator[InMemoryEventBus]:
    bus = InMemoryEventBus()
    yield bus
    bus.shutdown(timeout=WAIT)


# -- delivery -------------------------------------------------------------------------


def test_a_function_handler_receives_events_of_its_type_only(bus: InMemoryEventBus) -> None:
    received: list[DomainEvent] = []
    bus.subscribe(AccountOpened, received.append)
    event = opened()

    bus.publish([event, deposited()])

    assert received == [event]


def test_a_handler_object_is_called_through_its_handle_method(bus: InMemoryEventBus) -> None:
    recorder = Recorder()
    bus.subscribe(MoneyDeposited, recorder)
    event = deposited()

    bus.publish([event])

    assert recorder.events == [event]


def test_an_async_function_handler_has_run_when_a_sync_publish_returns(
    bus: InMemoryEventBus,
) -> None:
    received: list[DomainEvent] = []

    async def on_opened(event: DomainEvent) -> None:
        await asyncio.sleep(0)
        received.append(event)

    bus.subscribe(AccountOpened, on_opened)
    event = opened()

    bus.publish([event])

    assert received == [event]


def test_an_async_handler_object_has_run_when_a_sync_publish_returns(
    bus: InMemoryEventBus,
) -> None:
    recorder = AsyncRecorder()
    bus.subscribe(AccountOpened, recorder)
    events = [opened(), opened()]

    bus.publish(events)

    assert recorder.events == events


def test_a_callable_object_with_an_async_call_is_awaited(bus: InMemoryEventBus) -> None:
    received: list[DomainEvent] = []

    class Notifier:
        async def __call__(self, event: DomainEvent) -> None:
            received.append(event)

    bus.subscribe(AccountOpened, Notifier())
    event = opened()

    bus.publish([event])

    assert received == [event]


def test_subscribing_by_type_name_matches_subscribing_by_class(bus: InMemoryEventBus) -> None:
    by_name: list[DomainEvent] = []
    bus.subscribe("AccountOpened", by_name.append)
    event = opened()

    bus.publish([event])

    assert by_name == [event]


def test_a_subclass_stored_under_another_name_is_not_delivered_to_the_parent_subscribers(
    bus: InMemoryEventBus,
) -> None:
    class AccountReopened(AccountOpened):
        event_type: str = "AccountReopened"

    parent: list[DomainEvent] = []
    child: list[DomainEvent] = []
    bus.subscribe(AccountOpened, parent.append)
    bus.subscribe(AccountReopened, child.append)
    reopened = AccountReopened(aggregate_id=uuid4(), owner="Ada")

    bus.publish([reopened])

    assert parent == []
    assert child == [reopened]


def test_wildcard_subscribers_receive_every_event(bus: InMemoryEventBus) -> None:
    everything: list[DomainEvent] = []
    bus.subscribe_to_all_events(everything.append)
    events = [opened(), deposited(), AccountClosed(aggregate_id=uuid4(), aggregate_version=3)]

    bus.publish(events)

    assert everything == events


def test_type_subscribers_run_in_subscription_order_before_wildcard_subscribers(
    bus: InMemoryEventBus,
) -> None:
    calls: list[str] = []
    bus.subscribe_to_all_events(lambda event: calls.append("wildcard"))
    bus.subscribe(AccountOpened, lambda event: calls.append("first"))
    bus.subscribe(AccountOpened, lambda event: calls.append("second"))

    bus.publish([opened()])

    assert calls == ["first", "second", "wildcard"]


def test_events_are_delivered_in_the_order_published(bus: InMemoryEventBus) -> None:
    owners: list[str] = []
    bus.subscribe(AccountOpened, lambda event: owners.append(owner_of(event)))
    names = [f"owner-{i}" for i in range(20)]

    bus.publish([opened(owner=name) for name in names])

    assert owners == names


def test_subscribe_all_subscribes_an_event_subscriber_to_each_declared_class(
    bus: InMemoryEventBus,
) -> None:
    projection = OpeningsProjection()
    bus.subscribe_all(projection)

    bus.publish([opened(), deposited(), AccountClosed(aggregate_id=uuid4(), aggregate_version=2)])

    assert projection.seen == ["AccountOpened", "AccountClosed"]


def test_subscribing_the_same_handler_twice_delivers_once(bus: InMemoryEventBus) -> None:
    recorder = Recorder()
    bus.subscribe(AccountOpened, recorder)
    bus.subscribe(AccountOpened, recorder)
    bus.subscribe_to_all_events(recorder.handle)
    bus.subscribe_to_all_events(recorder.handle)

    bus.publish([opened()])

    assert len(recorder.events) == 2  # once as typed subscriber, once as wildcard


def test_a_handler_that_is_neither_callable_nor_has_handle_is_rejected_at_subscribe(
    bus: InMemoryEventBus,
) -> None:
    with pytest.raises(TypeError, match="handle"):
        bus.subscribe(AccountOpened, object())  # type: ignore[arg-type]


def test_an_event_type_that_is_not_an_event_class_is_rejected(bus: InMemoryEventBus) -> None:
    with pytest.raises(TypeError, match="DomainEvent"):
        bus.subscribe(int, print)  # type: ignore[arg-type]


# -- unsubscribing --------------------------------------------------------------------


def test_an_unsubscribed_handler_is_no_longer_called(bus: InMemoryEventBus) -> None:
    recorder = Recorder()
    bus.subscribe(AccountOpened, recorder)

    assert bus.unsubscribe(AccountOpened, recorder) is True
    bus.publish([opened()])

    assert recorder.events == []
    assert bus.unsubscribe(AccountOpened, recorder) is False


def test_a_bound_method_can_be_unsubscribed_with_an_equal_bound_method(
    bus: InMemoryEventBus,
) -> None:
    recorder = Recorder()
    bus.subscribe_to_all_events(recorder.handle)

    assert bus.unsubscribe_from_all_events(recorder.handle) is True
    bus.publish([opened()])

    assert recorder.events == []
    assert bus.unsubscribe_from_all_events(recorder.handle) is False


def test_clear_subscribers_removes_typed_and_wildcard_subscriptions(
    bus: InMemoryEventBus,
) -> None:
    recorder = Recorder()
    bus.subscribe(AccountOpened, recorder)
    bus.subscribe_to_all_events(recorder.handle)
    assert bus.get_subscriber_count() == 2

    bus.clear_subscribers()
    bus.publish([opened()])

    assert recorder.events == []
    assert bus.get_subscriber_count() == 0


def test_the_wildcard_subscriber_count_counts_only_handlers_of_every_event(
    bus: InMemoryEventBus,
) -> None:
    audit, metrics = Recorder(), Recorder()
    bus.subscribe(AccountOpened, Recorder())
    bus.subscribe_to_all_events(audit)
    bus.subscribe_to_all_events(audit)  # no further effect
    bus.subscribe_to_all_events(metrics)

    assert bus.get_wildcard_subscriber_count() == 2
    assert bus.get_subscriber_count(AccountOpened) == 1
    assert bus.get_subscriber_count() == 3

    bus.unsubscribe_from_all_events(audit)
    assert bus.get_wildcard_subscriber_count() == 1
    bus.clear_subscribers()
    assert bus.get_wildcard_subscriber_count() == 0


# -- error isolation ------------------------------------------------------------------


def test_a_failing_handler_does_not_stop_the_others_and_is_logged_and_counted(
    bus: InMemoryEventBus, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(event: DomainEvent) -> None:
        raise RuntimeError("projection table missing")

    async def explode_async(event: DomainEvent) -> None:
        raise ValueError("remote service down")

    before: list[DomainEvent] = []
    after: list[DomainEvent] = []
    bus.subscribe(AccountOpened, before.append)
    bus.subscribe(AccountOpened, explode)
    bus.subscribe(AccountOpened, explode_async)
    bus.subscribe_to_all_events(after.append)
    events = [opened(), opened()]

    with caplog.at_level(logging.ERROR, logger="django_eventsource"):
        bus.publish(events)

    assert before == events
    assert after == events
    assert bus.stats.handler_errors == 4
    assert bus.stats.handlers_invoked == 8
    failures = [r for r in caplog.records if r.name == "django_eventsource"]
    assert len(failures) == 4
    message = failures[0].getMessage()
    assert str(events[0].event_id) in message
    assert "explode" in message
    assert failures[0].exc_info is not None


# -- async publishing -----------------------------------------------------------------


def test_apublish_awaits_async_handlers_on_the_callers_loop_and_runs_sync_ones(
    bus: InMemoryEventBus,
) -> None:
    async_recorder = AsyncRecorder()
    sync_threads: list[int] = []
    bus.subscribe(AccountOpened, async_recorder)
    bus.subscribe(AccountOpened, lambda event: sync_threads.append(threading.get_ident()))
    events = [opened(), opened()]

    async def main() -> asyncio.AbstractEventLoop:
        await bus.apublish(events)
        return asyncio.get_running_loop()

    caller_loop = asyncio.run(main())

    assert async_recorder.events == events
    assert async_recorder.loops == [caller_loop, caller_loop]
    assert len(sync_threads) == 2
    assert threading.get_ident() not in sync_threads  # the loop thread was not blocked


def test_apublish_isolates_failing_handlers_too(bus: InMemoryEventBus) -> None:
    async def explode(event: DomainEvent) -> None:
        raise RuntimeError("boom")

    received: list[DomainEvent] = []
    bus.subscribe(AccountOpened, explode)
    bus.subscribe(AccountOpened, received.append)
    event = opened()

    asyncio.run(bus.apublish([event]))

    assert received == [event]
    assert bus.stats.handler_errors == 1


class Timeline:
    """Async handlers that log when they start and finish, one await apart."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def handler(self, name: str, fail: bool = False) -> Callable[[DomainEvent], Awaitable[None]]:
        async def handle(event: DomainEvent) -> None:
            self.log.append(f"{owner_of(event)}: {name} starts")
            await asyncio.sleep(0)  # where an I/O-bound handler would wait on the network
            if fail:
                self.log.append(f"{owner_of(event)}: {name} fails")
                raise RuntimeError(f"{name} is down")
            await asyncio.sleep(0)
            self.log.append(f"{owner_of(event)}: {name} ends")

        handle.__qualname__ = name
        return handle


EVENT_BY_EVENT = [
    "first: email starts",
    "first: webhook starts",
    "first: email ends",
    "first: webhook ends",
    "second: email starts",
    "second: webhook starts",
    "second: email ends",
    "second: webhook ends",
]


def test_apublish_runs_the_async_handlers_of_an_event_together_and_events_one_by_one(
    bus: InMemoryEventBus,
) -> None:
    timeline = Timeline()
    bus.subscribe(AccountOpened, timeline.handler("email"))
    bus.subscribe_to_all_events(timeline.handler("webhook"))

    asyncio.run(bus.apublish([opened(owner="first"), opened(owner="second")]))

    assert timeline.log == EVENT_BY_EVENT
    assert bus.stats.handlers_invoked == 4


def test_a_sync_publish_runs_the_async_handlers_of_an_event_together_too(
    bus: InMemoryEventBus,
) -> None:
    timeline = Timeline()
    bus.subscribe(AccountOpened, timeline.handler("email"))
    bus.subscribe_to_all_events(timeline.handler("webhook"))

    bus.publish([opened(owner="first"), opened(owner="second")])

    assert timeline.log == EVENT_BY_EVENT


def test_an_async_handler_failing_mid_flight_stops_none_of_the_others_under_apublish(
    bus: InMemoryEventBus, caplog: pytest.LogCaptureFixture
) -> None:
    timeline = Timeline()
    synced: list[str] = []
    bus.subscribe(AccountOpened, timeline.handler("email"))
    bus.subscribe(AccountOpened, lambda event: synced.append("ledger"))
    bus.subscribe(AccountOpened, timeline.handler("webhook", fail=True))
    bus.subscribe(AccountOpened, lambda event: synced.append("cache"))

    with caplog.at_level(logging.ERROR, logger="django_eventsource"):
        asyncio.run(bus.apublish([opened(owner="only")]))

    assert timeline.log == [
        "only: email starts",
        "only: webhook starts",
        "only: webhook fails",
        "only: email ends",
    ]
    assert synced == ["ledger", "cache"]  # sync handlers still run in subscription order
    assert (bus.stats.handlers_invoked, bus.stats.handler_errors) == (4, 1)
    [failure] = [r for r in caplog.records if r.name == "django_eventsource"]
    assert "webhook" in failure.getMessage() and failure.exc_info is not None


def test_sync_publish_called_inside_a_running_loop_still_runs_async_handlers(
    bus: InMemoryEventBus,
) -> None:
    recorder = AsyncRecorder()
    bus.subscribe(AccountOpened, recorder)
    event = opened()

    async def async_view() -> None:
        bus.publish([event])  # sync API used from async code
        assert recorder.events == [event]

    asyncio.run(async_view())

    assert recorder.events == [event]


# -- background mode and shutdown -----------------------------------------------------


def test_background_publish_returns_before_handlers_finish_and_shutdown_waits_for_them(
    bus: InMemoryEventBus,
) -> None:
    gate = threading.Event()
    started = threading.Event()
    owners: list[str] = []

    def slow_handler(event: DomainEvent) -> None:
        started.set()
        gate.wait(WAIT)
        owners.append(owner_of(event))

    bus.subscribe(AccountOpened, slow_handler)

    bus.publish([opened(owner="a"), opened(owner="b")], background=True)
    bus.publish([opened(owner="c")], background=True)

    assert started.wait(WAIT)
    assert owners == []  # publish returned while the handler was still blocked
    assert bus.stats.background_pending == 3

    gate.set()
    bus.shutdown(timeout=WAIT)

    assert owners == ["a", "b", "c"]
    assert bus.stats == InMemoryEventBusStats(
        events_published=3,
        handlers_invoked=3,
        handler_errors=0,
        background_pending=0,
        background_tasks_created=2,
        background_tasks_completed=2,
    )


def test_background_mode_runs_async_handlers(bus: InMemoryEventBus) -> None:
    recorder = AsyncRecorder()
    bus.subscribe(AccountOpened, recorder)
    events = [opened(), opened()]

    bus.publish(events, background=True)
    bus.shutdown(timeout=WAIT)

    assert recorder.events == events


def test_a_failing_background_handler_does_not_stop_the_worker(bus: InMemoryEventBus) -> None:
    def explode(event: DomainEvent) -> None:
        raise RuntimeError("boom")

    received: list[DomainEvent] = []
    bus.subscribe(AccountOpened, explode)
    bus.subscribe(AccountOpened, received.append)
    events = [opened(), opened()]

    bus.publish(events[:1], background=True)
    bus.publish(events[1:], background=True)
    bus.shutdown(timeout=WAIT)

    assert received == events
    assert bus.stats.handler_errors == 2


def test_background_tasks_are_counted_until_they_complete_or_fail(bus: InMemoryEventBus) -> None:
    gate = threading.Event()
    started = threading.Event()

    def handler(event: DomainEvent) -> None:
        started.set()
        gate.wait(WAIT)
        if owner_of(event) == "bad":
            raise RuntimeError("mail server down")

    bus.subscribe(AccountOpened, handler)
    assert bus.get_background_task_count() == 0

    bus.publish([opened(owner="a"), opened(owner="b")], background=True)
    bus.publish([opened(owner="c"), opened(owner="bad")], background=True)
    assert started.wait(WAIT)

    assert bus.get_background_task_count() == 2  # one being delivered, one queued
    assert bus.stats.background_tasks_created == 2
    assert bus.stats.background_tasks_completed == 0

    gate.set()
    bus.shutdown(timeout=WAIT)

    stats = bus.get_stats()
    assert (
        stats.background_tasks_created,
        stats.background_tasks_completed,
        stats.background_tasks_failed,
        stats.background_tasks_dropped,
    ) == (2, 1, 1, 0)
    assert stats.handler_errors == 1
    assert bus.get_background_task_count() == 0


def test_shutdown_gives_up_after_its_timeout_and_drops_the_queued_events(
    bus: InMemoryEventBus, caplog: pytest.LogCaptureFixture
) -> None:
    gate = threading.Event()
    started = threading.Event()
    owners: list[str] = []

    def blocking_handler(event: DomainEvent) -> None:
        started.set()
        gate.wait(WAIT)
        owners.append(owner_of(event))

    bus.subscribe(AccountOpened, blocking_handler)
    bus.publish([opened(owner="in-flight")], background=True)
    bus.publish([opened(owner="queued")], background=True)
    assert started.wait(WAIT)

    with caplog.at_level(logging.WARNING, logger="django_eventsource"):
        bus.shutdown(timeout=0.01)

    assert "2 background event(s) pending" in caplog.text
    gate.set()
    bus.shutdown(timeout=WAIT)  # a second call waits for the worker to finish
    assert owners == ["in-flight"]
    stats = bus.get_stats()
    assert (stats.background_tasks_completed, stats.background_tasks_dropped) == (1, 1)
    assert bus.get_background_task_count() == 0


@pytest.mark.parametrize("background", [False, True])
def test_publishing_after_shutdown_is_an_error(bus: InMemoryEventBus, background: bool) -> None:
    recorder = Recorder()
    bus.subscribe(AccountOpened, recorder)
    bus.shutdown()

    with pytest.raises(EventBusError, match="shut down"):
        bus.publish([opened()], background=background)
    with pytest.raises(EventBusError, match="shut down"):
        asyncio.run(bus.apublish([opened()], background=background))

    assert recorder.events == []
    assert bus.is_shut_down


def test_ashutdown_waits_for_background_work(bus: InMemoryEventBus) -> None:
    recorder = Recorder()
    bus.subscribe(AccountOpened, recorder)
    events = [opened() for _ in range(5)]

    async def main() -> None:
        await bus.apublish(events, background=True)
        await bus.ashutdown(timeout=WAIT)

    asyncio.run(main())

    assert recorder.events == events


# -- stats ----------------------------------------------------------------------------


def test_stats_count_published_events_and_handler_calls(bus: InMemoryEventBus) -> None:
    bus.subscribe(AccountOpened, Recorder())
    bus.subscribe_to_all_events(Recorder())

    bus.publish([opened(), deposited()])

    assert bus.get_stats() == InMemoryEventBusStats(
        events_published=2, handlers_invoked=3, handler_errors=0, background_pending=0
    )


# -- thread safety --------------------------------------------------------------------


def test_concurrent_subscribe_and_publish_lose_no_subscription_and_no_delivery() -> None:
    bus = InMemoryEventBus()
    threads_per_role = 4
    per_thread = 50
    barrier = threading.Barrier(threads_per_role * 2)
    lock = threading.Lock()
    delivered: list[UUID] = []
    errors: list[BaseException] = []

    def record(event: DomainEvent) -> None:
        with lock:
            delivered.append(event.event_id)

    bus.subscribe_to_all_events(record)
    published: list[UUID] = []

    def subscriber_thread() -> None:
        barrier.wait(WAIT)
        for _ in range(per_thread):
            handler: Callable[[DomainEvent], None] = lambda event: None  # noqa: E731
            bus.subscribe(AccountOpened, handler)

    def publisher_thread() -> None:
        barrier.wait(WAIT)
        for _ in range(per_thread):
            event = opened()
            with lock:
                published.append(event.event_id)
            bus.publish([event])

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(subscriber_thread)) for _ in range(threads_per_role)]
    threads += [threading.Thread(target=guarded(publisher_thread)) for _ in range(threads_per_role)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)

    assert errors == []
    assert bus.get_subscriber_count(AccountOpened) == threads_per_role * per_thread
    assert sorted(delivered) == sorted(published)
    assert bus.stats.handler_errors == 0
    bus.shutdown()


def test_a_handler_may_subscribe_and_publish_from_inside_a_delivery(
    bus: InMemoryEventBus,
) -> None:
    closed: list[DomainEvent] = []

    def on_opened(event: DomainEvent) -> None:
        bus.subscribe(AccountClosed, closed.append)
        bus.publish([AccountClosed(aggregate_id=event.aggregate_id, aggregate_version=2)])

    bus.subscribe(AccountOpened, on_opened)

    bus.publish([opened()])

    assert len(closed) == 1
    assert bus.stats.handler_errors == 0
