"""``manage.py consume_events``: run the registered event handlers on the Redis bus."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ..._runtime import stop_on_signals
from ...bus import get_event_bus
from ...bus.consumers import attach_handlers
from ...bus.redis import REDIS_AVAILABLE, RedisEventBus, RedisEventBusConfig
from ...conf import conf


class Command(BaseCommand):
    help = (
        "Consume events from the Redis Streams bus with the handlers registered in "
        "django_eventsource.bus.consumers and EVENTSOURCE_EVENT_HANDLERS. Loops until "
        "SIGTERM/SIGINT unless --once is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--group", help="Consumer group (default: EVENTSOURCE_REDIS_CONSUMER_GROUP)."
        )
        parser.add_argument("--consumer", help="Consumer name (default: <host>-<pid>).")
        parser.add_argument(
            "--once",
            action="store_true",
            help="Recover idle pending messages and process what is waiting, then exit.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        bus = self._bus(options["group"], options["consumer"])
        subscriptions = attach_handlers(bus)
        verbosity = int(options["verbosity"])
        if subscriptions == 0:
            self.stderr.write(
                self.style.WARNING(
                    "No event handlers registered: messages will be acknowledged unprocessed."
                )
            )
        if verbosity >= 2:
            cfg = bus.config
            self.stdout.write(
                f"Consuming {cfg.stream_name} as {cfg.consumer_group}/{cfg.consumer_name} "
                f"with {subscriptions} subscription(s)"
            )
        try:
            if options["once"]:
                handled = bus.recover_pending()
                while (batch := bus.consume_once(block_ms=None)) > 0:
                    handled += batch
                    if verbosity >= 2:
                        self.stdout.write(f"handled {handled} message(s)")
            else:
                stop_event = threading.Event()

                def stop_when_signalled() -> None:
                    stop_event.wait()
                    bus.stop_consuming()

                watcher = threading.Thread(
                    target=stop_when_signalled,
                    name="consume-events-stop",
                    daemon=True,
                )
                watcher.start()
                with stop_on_signals(stop_event):
                    try:
                        bus.start_consuming()
                    finally:
                        stop_event.set()
        finally:
            bus.close()
        stats = bus.get_stats()
        if verbosity >= 1:
            self.stdout.write(
                self.style.SUCCESS(
                    f"acknowledged {stats.messages_acknowledged}, "
                    f"dead-lettered {stats.messages_dead_lettered}, "
                    f"handler errors {stats.handler_errors}"
                )
            )

    def _bus(self, group: str | None, consumer: str | None) -> RedisEventBus:
        if conf.EVENT_BUS == "redis":
            if not REDIS_AVAILABLE:
                raise CommandError("consume_events needs the redis package.")
            return RedisEventBus(
                RedisEventBusConfig.from_settings(consumer_group=group, consumer_name=consumer)
            )
        configured = get_event_bus()
        if isinstance(configured, RedisEventBus):
            # A dotted-path factory: keep its configuration, apply the overrides.
            config = configured.config
            config = replace(
                config,
                consumer_group=group or config.consumer_group,
                consumer_name=consumer or config.consumer_name,
            )
            return RedisEventBus(config, configured.registry)
        raise CommandError(
            "consume_events reads the Redis Streams bus: set EVENTSOURCE_EVENT_BUS = 'redis'."
        )
