"""``manage.py publish_outbox``: publish pending outbox rows to the event bus."""

from __future__ import annotations

import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ..._runtime import stop_on_signals
from ...bus import get_event_bus
from ...conf import conf
from ...exceptions import EventBusError
from ...models import OutboxMessage
from ...outbox.relay import RelayReport, publish_outbox
from ..progress import ProgressDisplay


class Command(BaseCommand):
    help = (
        "Publish pending outbox rows to the event bus (EVENTSOURCE_EVENT_BUS). Loops until "
        "SIGTERM/SIGINT unless --once is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="Publish what is due now, then exit."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="Rows claimed per batch (default: EVENTSOURCE_OUTBOX_BATCH_SIZE).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size: int | None = options["batch_size"]
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be a positive integer.")
        verbosity = int(options["verbosity"])
        try:
            bus = get_event_bus()
        except EventBusError as exc:
            raise CommandError(str(exc)) from exc
        if bus is None:
            raise CommandError(
                "publish_outbox has no event bus: set EVENTSOURCE_EVENT_BUS "
                "('memory', 'redis' or a dotted path)."
            )
        backlog = OutboxMessage.objects.pending().count()
        if verbosity >= 1:
            mode = "then exiting" if options["once"] else "then waiting for new rows"
            self.stdout.write(
                f"Publishing {backlog} pending outbox row(s) to {type(bus).__name__} "
                f"in batches of {batch_size or conf.OUTBOX_BATCH_SIZE}, {mode}."
            )
        display = ProgressDisplay(
            self.stdout,
            "Outbox backlog",
            total=backlog or None,
            unit="rows",
            enabled=verbosity == 1,
        )
        backlog_done = False

        def progress(report: RelayReport) -> None:
            nonlocal backlog_done
            if verbosity >= 2:
                self.stdout.write(_summary(report))
                return
            if backlog_done:
                return
            done = report.published + report.failed
            display.update(min(done, backlog) if backlog else done)
            if backlog and done >= backlog:
                backlog_done = True
                display.finish()

        try:
            with stop_on_signals(threading.Event()) as stop_event:
                report = publish_outbox(
                    once=options["once"],
                    batch_size=batch_size,
                    stop_event=stop_event,
                    bus=bus,
                    progress=progress,
                )
        except EventBusError as exc:
            raise CommandError(str(exc)) from exc
        if display.done and not backlog_done:
            display.finish()
        if verbosity >= 1:
            style = self.style.WARNING if report.failed else self.style.SUCCESS
            self.stdout.write(style(_summary(report)))


def _summary(report: RelayReport) -> str:
    return (
        f"published {report.published}, retried {report.retried}, "
        f"failed {report.failed}, cleaned {report.cleaned}"
    )
