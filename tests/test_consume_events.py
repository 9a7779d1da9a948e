"""``consume_events`` and the handler registry, end to end on a real Redis."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from io import StringIO
from uuid import uuid4

import pytest
from django.core.management import CommandError, call_command
from django.db.models import F
from django.test import override_settings

from django_eventsource import AggregateRepository, DjangoEventStore, DomainEvent
from django_eventsource.bus import consumers, reset_event_bus
from django_eventsource.bus.redis import RedisEventBus, RedisEventBusConfig
from django_eventsource.outbox.relay import publish_outbox
from django_eventsource.tasks import recover_pending_events
from tests.testapp.domain import Account, AccountOpened, MoneyDeposited
from tests.testapp.models import AccountSummary, HandledEvent


def record_handled(event: DomainEvent) -> None:
    """A handler named in EVENTSOURCE_EVENT_HANDLERS: one row per delivery."""
    HandledEvent.objects.create(projection="consumer", event_id=event.event_id)


class BalanceSubscriber:
    """An EventSubscriber keeping a read model of balances, idempotent per version."""

    def subscribed_to(self) -> list[type[DomainEvent]]:
        return [AccountOpened, MoneyDeposited]

    def handle(self, event: DomainEvent) -> None:
        if isinstance(event, AccountOpened):
            AccountSummary.objects.get_or_create(
                account_id=event.aggregate_id,
                defaults={"owner": event.owner, "balance": event.opening_balance, "events_seen": 1},
            )
        elif isinstance(event, MoneyDeposited):
            AccountSummary.objects.filter(
                account_id=event.aggregate_id, events_seen=event.aggregate_version - 1
            ).update(balance=F("balance") + event.amount, events_seen=F("events_seen") + 1)


def redis_bus_with_its_own_group() -> RedisEventBus:
    """A dotted-path bus factory: the group is set in code, not in the settings."""
    return RedisEventBus(replace(RedisEventBusConfig.from_settings(), consumer_group="own-group"))


@pytest.fixture
def redis_settings(redis_url: str) -> Iterator[RedisEventBusConfig]:
    prefix = f"test-{uuid4().hex}"
    with override_settings(
        EVENTSOURCE_EVENT_BUS="redis",
        EVENTSOURCE_REDIS_URL=redis_url,
        EVENTSOURCE_REDIS_STREAM_PREFIX=prefix,
        EVENTSOURCE_REDIS_CONSUMER_GROUP="readers",
        EVENTSOURCE_EVENT_HANDLERS=[
            "tests.test_consume_events.BalanceSubscriber",
            "tests.test_consume_events.record_handled",
        ],
    ):
        config = RedisEventBusConfig.from_settings()
        yield config
        reset_event_bus()
        bus = RedisEventBus(config)
        bus.client.delete(config.stream_name, config.dead_letter_stream)
        bus.close()


@pytest.fixture(autouse=True)
def _no_code_registrations() -> Iterator[None]:
    consumers.unregister_all()
    yield
    consumers.unregister_all()


@pytest.mark.redis
@pytest.mark.django_db
def test_a_saved_aggregate_reaches_the_read_model_through_outbox_redis_and_consumer(
    redis_settings: RedisEventBusConfig,
) -> None:
    repo = AggregateRepository(DjangoEventStore(outbox_enabled=True), Account)
    account = repo.create_new(uuid4())
    account.open("Grace", opening_balance=Decimal("10"))
    account.deposit(Decimal("5"))
    repo.save(account)

    assert publish_outbox(once=True).published == 2
    out = StringIO()
    call_command("consume_events", once=True, stdout=out)

    summary = AccountSummary.objects.get(account_id=account.aggregate_id)
    assert (summary.owner, summary.balance, summary.events_seen) == ("Grace", Decimal("15"), 2)
    assert HandledEvent.objects.filter(projection="consumer").count() == 2
    # It says what it does before doing it, then what it did.
    first, *_, last = out.getvalue().splitlines()
    assert first.startswith(f"Consuming {redis_settings.stream_name} as ")
    assert first.endswith("until the stream is drained.")
    assert "acknowledged 2" in last


@pytest.mark.redis
@pytest.mark.django_db
def test_handlers_registered_in_code_run_beside_the_settings_ones(
    redis_settings: RedisEventBusConfig,
) -> None:
    opened: list[str] = []
    consumers.register_handler(AccountOpened, lambda e: opened.append(e.owner))
    bus = RedisEventBus(redis_settings)
    event = AccountOpened(aggregate_id=uuid4(), owner="Linus")
    bus.publish([event])
    bus.close()

    call_command("consume_events", once=True, group="other-group", consumer="c1", verbosity=0)

    assert opened == ["Linus"]
    assert HandledEvent.objects.filter(event_id=event.event_id).exists()


@pytest.mark.redis
@pytest.mark.django_db
def test_a_redis_bus_from_a_dotted_path_factory_keeps_its_configuration_in_the_command(
    redis_settings: RedisEventBusConfig,
) -> None:
    bus = RedisEventBus(redis_settings)
    event = AccountOpened(aggregate_id=uuid4(), owner="Edsger")
    bus.publish([event])
    bus.close()
    out = StringIO()

    with override_settings(
        EVENTSOURCE_EVENT_BUS="tests.test_consume_events.redis_bus_with_its_own_group"
    ):
        call_command("consume_events", once=True, consumer="c9", verbosity=2, stdout=out)
        reset_event_bus()

    assert f"Consuming {redis_settings.stream_name} as own-group/c9 " in out.getvalue()
    assert HandledEvent.objects.filter(event_id=event.event_id).exists()


@pytest.mark.redis
@pytest.mark.django_db
def test_the_recovery_task_processes_messages_a_dead_consumer_left_behind(
    redis_settings: RedisEventBusConfig,
) -> None:
    bus = RedisEventBus(redis_settings)
    event = AccountOpened(aggregate_id=uuid4(), owner="Barbara")
    bus.publish([event])
    bus.ensure_group()
    cfg = redis_settings
    bus.client.xreadgroup(cfg.consumer_group, "dead-consumer", {cfg.stream_name: ">"})
    bus.close()

    with override_settings(EVENTSOURCE_REDIS_CLAIM_IDLE_MS=0):
        result = recover_pending_events()

    assert result["handled"] == 1
    assert HandledEvent.objects.filter(event_id=event.event_id).count() == 1


@pytest.mark.redis
@pytest.mark.django_db
@pytest.mark.timeout(30)
def test_the_command_consumes_until_sigterm_then_restores_the_signal_handlers(
    redis_settings: RedisEventBusConfig,
) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed from the main thread")
    seen: list[DomainEvent] = []
    consumers.register_handler(AccountOpened, seen.append)
    bus = RedisEventBus(redis_settings)
    bus.publish([AccountOpened(aggregate_id=uuid4(), owner="Ada")])
    bus.close()
    previous = signal.getsignal(signal.SIGTERM)

    def terminate_once_handled() -> None:
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        # Without the command's handler, SIGTERM would end the test process itself.
        if signal.getsignal(signal.SIGTERM) is not previous:
            os.kill(os.getpid(), signal.SIGTERM)

    terminator = threading.Thread(target=terminate_once_handled)
    terminator.start()
    out = StringIO()
    try:
        call_command("consume_events", stdout=out)
    finally:
        terminator.join()

    assert len(seen) == 1
    assert "acknowledged 1" in out.getvalue()
    assert signal.getsignal(signal.SIGTERM) is previous


@override_settings(EVENTSOURCE_EVENT_BUS="memory")
def test_the_command_refuses_a_bus_that_is_not_redis() -> None:
    with pytest.raises(CommandError, match="EVENTSOURCE_EVENT_BUS = 'redis'"):
        call_command("consume_events", once=True)


@override_settings(EVENTSOURCE_EVENT_HANDLERS=["tests.test_consume_events.BalanceSubscriber"])
def test_subscriber_classes_in_the_setting_are_registered_for_their_event_types() -> None:
    handlers = consumers.registered_handlers()

    assert [key for key, _ in handlers] == ["AccountOpened", "MoneyDeposited"]
    assert all(isinstance(h, BalanceSubscriber) for _, h in handlers)


@override_settings(EVENTSOURCE_EVENT_HANDLERS=["tests.test_consume_events.missing"])
def test_a_handler_path_that_does_not_import_is_a_configuration_error() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="missing"):
        consumers.registered_handlers()
