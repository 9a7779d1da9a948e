"""``manage.py consume_events``: run the registered event handlers on the Redis bus."""

from __future__ import annotations

import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ..._runtime import stop_on_signals
from ...bus import build_redis_bus, get_event_bus
from ...bus.consumers import attach_handlers
from ...bus.redis import REDIS_AVAILABLE, RedisEventBus
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
        parser.add_argument(
            "--consumer", help="Consumer name (default: <host>:<pid>:<token>, one per process)."
        )
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
        if verbosity >= 1:
            cfg = bus.config
            until = "until the stream is drained" if options["once"] else "until Ctrl+C/SIGTERM"
            streams = (
                cfg.stream_name
                if cfg.partitions == 1
                else f"{cfg.stream_name}:0..{cfg.partitions - 1} (one partition at a time each)"
            )
            self.stdout.write(
                f"Consuming {streams} as {cfg.consumer_group}/{cfg.consumer_name} "
                f"with {subscriptions} subscription(s), {until}."
            )
        try:
            if options["once"]:
                handled = bus.recover_pending()
                while (batch := bus.consume_once(block_ms=None)) > 0:
                    handled += batch
                    if verbosity >= 2:
                        self.stdout.write(f"handled {handled} message(s)")
            else:
                _consume_until_signalled(bus)
        finally:
            bus.close()
        stats = bus.get_stats()
        if verbosity >= 1:
            self.stdout.write(
                self.style.SUCCESS(
                    f"acknowledged {stats.messages_acknowledged}, "
                    f"dead-lettered {stats.messages_dead_lettered}, "
                    f"handler errors {stats.handler_errors}, "
                    f"database retries {stats.database_retries}"
                )
            )

    def _bus(self, group: str | None, consumer: str | None) -> RedisEventBus:
        if conf.EVENT_BUS == "redis":
            if not REDIS_AVAILABLE:
                raise CommandError("consume_events needs the redis package.")
            return build_redis_bus(group, consumer)
        configured = get_event_bus()
        if isinstance(configured, RedisEventBus):
            # A dotted-path factory: keep its configuration, apply the overrides.
            return build_redis_bus(group, consumer, like=configured)
        raise CommandError(
            "consume_events reads the Redis Streams bus: set EVENTSOURCE_EVENT_BUS = 'redis'."
        )


def _consume_until_signalled(bus: RedisEventBus) -> None:
    """Run the consumer loop until SIGTERM or SIGINT."""
    stop_event = threading.Event()

    # A signal handler only sets an event; the thread turns it into stop_consuming().
    def stop_when_signalled() -> None:
        stop_event.wait()
        bus.stop_consuming()

    watcher = threading.Thread(target=stop_when_signalled, name="consume-events-stop", daemon=True)
    with stop_on_signals(stop_event):
        watcher.start()
        try:
            bus.start_consuming()
        finally:
            stop_event.set()  # ends the watcher when the loop stopped for another reason
