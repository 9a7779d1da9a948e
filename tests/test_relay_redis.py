"""The outbox relay publishing to a real Redis, including while Redis is away."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from uuid import uuid4

import pytest
from django.test import override_settings

from django_eventsource import AggregateRepository, DjangoEventStore
from django_eventsource.bus import reset_event_bus
from django_eventsource.bus.redis import RedisEventBus, RedisEventBusConfig
from django_eventsource.models import OutboxMessage
from django_eventsource.outbox.relay import publish_outbox
from tests.services import ThrowawayRedis
from tests.testapp.domain import Account

pytestmark = [pytest.mark.own_sql, pytest.mark.redis, pytest.mark.django_db]


@pytest.fixture
def config(redis_url: str) -> Iterator[RedisEventBusConfig]:
    cfg = RedisEventBusConfig(redis_url=redis_url, stream_prefix=f"test-{uuid4().hex}")
    yield cfg
    bus = RedisEventBus(cfg)
    bus.client.delete(cfg.stream_name, cfg.dead_letter_stream)
    bus.close()


def _open_accounts(count: int, deposits: int) -> list[Account]:
    repo = AggregateRepository(DjangoEventStore(outbox_enabled=True), Account)
    accounts = []
    for _ in range(count):
        account = repo.create_new(uuid4())
        account.open("Ada")
        for n in range(deposits):
            account.deposit(Decimal(n + 1))
        repo.save(account)
        accounts.append(account)
    return accounts


@override_settings(EVENTSOURCE_OUTBOX_RETRY_BACKOFF=0, EVENTSOURCE_OUTBOX_RETRY_BACKOFF_MAX=0)
def test_saves_succeed_while_redis_is_away_and_everything_is_delivered_once_it_is_back(
    config: RedisEventBusConfig,
) -> None:
    accounts = _open_accounts(3, deposits=3)
    away = RedisEventBus(replace(config, redis_url="redis://127.0.0.1:1/0", connection_retries=0))

    report = publish_outbox(once=True, bus=away)

    assert report.published == 0 and report.retried == 12
    rows = OutboxMessage.objects.all()
    assert {(r.status, r.retry_count) for r in rows} == {("pending", 1)}
    assert all("unavailable" in r.last_error for r in rows)

    back = RedisEventBus(config)
    report = publish_outbox(once=True, bus=back)

    assert report.published == 12
    entries = back.client.xrange(config.stream_name)
    for account in accounts:
        versions = [
            int(f["aggregate_version"])
            for _, f in entries
            if f["aggregate_id"] == str(account.aggregate_id)
        ]
        assert versions == [1, 2, 3, 4]
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {"published"}
    away.close()
    back.close()


def test_the_relay_follows_changed_redis_settings_instead_of_the_bus_it_built_first(
    redis_url: str,
) -> None:
    first, second = f"test-{uuid4().hex}", f"test-{uuid4().hex}"
    try:
        with override_settings(
            EVENTSOURCE_EVENT_BUS="redis",
            EVENTSOURCE_REDIS_URL=redis_url,
            EVENTSOURCE_REDIS_STREAM_PREFIX=first,
        ):
            _open_accounts(1, deposits=0)
            assert publish_outbox(once=True).published == 1
            with override_settings(EVENTSOURCE_REDIS_STREAM_PREFIX=second):
                _open_accounts(1, deposits=1)
                assert publish_outbox(once=True).published == 2
            with override_settings(EVENTSOURCE_REDIS_URL="redis://127.0.0.1:1/0"):
                _open_accounts(1, deposits=0)
                report = publish_outbox(once=True)
            assert (report.published, report.retried) == (0, 1)
    finally:
        reset_event_bus()
        inspect = RedisEventBus(RedisEventBusConfig(redis_url=redis_url))
        lengths = [inspect.client.xlen(f"{prefix}:events") for prefix in (first, second)]
        inspect.client.delete(f"{first}:events", f"{second}:events")
        inspect.close()
    assert lengths == [1, 2]


@override_settings(EVENTSOURCE_OUTBOX_RETRY_BACKOFF=0, EVENTSOURCE_OUTBOX_RETRY_BACKOFF_MAX=0)
def test_rows_wait_through_a_redis_outage_of_many_attempts_and_go_out_in_order_after() -> None:
    if not ThrowawayRedis.available():
        pytest.fail("redis-server is needed to stop and start a Redis of the test's own")
    server = ThrowawayRedis()
    server.start()
    try:
        config = RedisEventBusConfig(
            redis_url=server.url, stream_prefix=f"test-{uuid4().hex}", connection_retries=0
        )
        bus = RedisEventBus(config)
        accounts = _open_accounts(2, deposits=2)
        server.stop()

        # Far more failed attempts than the old attempt limit (10) allowed: with the
        # give-up point a duration (an hour by default), every row is still waiting.
        for _ in range(25):
            report = publish_outbox(once=True, bus=bus)
            assert report.published == 0 and report.failed == 0
        assert set(OutboxMessage.objects.values_list("status", flat=True)) == {"pending"}
        assert min(OutboxMessage.objects.values_list("retry_count", flat=True)) >= 25

        server.start()
        report = publish_outbox(once=True, bus=bus)

        assert report.published == 6
        entries = bus.client.xrange(config.stream_name)
        for account in accounts:
            versions = [
                int(f["aggregate_version"])
                for _, f in entries
                if f["aggregate_id"] == str(account.aggregate_id)
            ]
            assert versions == [1, 2, 3]
        bus.close()
    finally:
        server.close()
