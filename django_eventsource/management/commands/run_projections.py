"""``manage.py run_projections``: keep the configured projections up to date."""

from __future__ import annotations

import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ..._runtime import stop_on_signals
from ...exceptions import SegmentCountMismatchError, UnknownProjectionError
from ...projections.runner import run_projections


class Command(BaseCommand):
    help = (
        "Run the projections of EVENTSOURCE_PROJECTIONS: catch up from their checkpoints, "
        "then follow new events until SIGTERM/SIGINT (or stop after one pass with --once)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="Catch up once, then exit (no loop)."
        )
        parser.add_argument(
            "--projection",
            action="append",
            dest="projections",
            metavar="NAME",
            help="Run only this projection (name or dotted path); repeat for several.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            help="Events per batch and transaction (default EVENTSOURCE_PROJECTION_BATCH_SIZE).",
        )
        parser.add_argument(
            "--poll-interval",
            type=float,
            help="Seconds between polls when idle (default EVENTSOURCE_POLL_INTERVAL).",
        )
        parser.add_argument(
            "--max-units",
            type=int,
            help="Units of segmented projections to work on per pass (default: every free one).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size = options["batch_size"]
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        poll_interval = options["poll_interval"]
        if poll_interval is not None and poll_interval < 0:
            raise CommandError("--poll-interval cannot be negative")
        max_units = options["max_units"]
        if max_units is not None and max_units < 1:
            raise CommandError("--max-units must be at least 1")
        verbosity = int(options["verbosity"])
        stop_event = threading.Event()

        def progress(message: str) -> None:
            if verbosity >= 2:
                self.stdout.write(message)

        # SIGTERM/SIGINT request a stop; the current batch is finished first.
        try:
            with stop_on_signals(stop_event):
                if verbosity >= 1 and not options["once"]:
                    self.stdout.write("Running projections; press Ctrl+C to stop.")
                summary = run_projections(
                    options["projections"],
                    once=options["once"],
                    batch_size=batch_size,
                    poll_interval=poll_interval,
                    stop_event=stop_event,
                    progress=progress,
                    max_units=max_units,
                )
        except (UnknownProjectionError, SegmentCountMismatchError) as exc:
            raise CommandError(str(exc)) from exc
        if verbosity >= 1:
            for name, count in summary.processed.items():
                self.stdout.write(f"{name}: {count} events")
            if summary.dead_lettered:
                self.stdout.write(
                    self.style.WARNING(f"{summary.dead_lettered} events dead-lettered")
                )
            self.stdout.write(self.style.SUCCESS(f"Processed {summary.total_processed} events."))
