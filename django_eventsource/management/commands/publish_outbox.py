"""``manage.py publish_outbox``: publish pending outbox rows to the event bus."""

from __future__ import annotations

import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ..._runtime import stop_on_signals
from ...exceptions import EventBusError
from ...outbox.relay import RelayReport, publish_outbox


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

        def progress(report: RelayReport) -> None:
            if verbosity >= 2:
                self.stdout.write(_summary(report))

        try:
            with stop_on_signals(threading.Event()) as stop_event:
                report = publish_outbox(
                    once=options["once"],
                    batch_size=batch_size,
                    stop_event=stop_event,
                    progress=progress,
                )
        except EventBusError as exc:
            raise CommandError(str(exc)) from exc
        if verbosity >= 1:
            style = self.style.WARNING if report.failed else self.style.SUCCESS
            self.stdout.write(style(_summary(report)))


def _summary(report: RelayReport) -> str:
    return (
        f"published {report.published}, retried {report.retried}, "
        f"failed {report.failed}, cleaned {report.cleaned}"
    )
