"""``manage.py run_projections``: keep the configured projections up to date.

Exits with status 3 (``exit_codes.PROBLEM``) after ``--once`` when events were
dead-lettered; see ``docs/commands.md``.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ..._runtime import stop_on_signals
from ...exceptions import SegmentCountMismatchError, UnknownProjectionError
from ...models import Checkpoint, EventRecord
from ...projections.runner import load_projections, run_projections
from ..exit_codes import PROBLEM
from ..progress import ProgressDisplay

# The runner reports each batch as "<projection>: ... position <n> ...".
_BATCH_LINE = re.compile(r"^(?P<name>.+?): .*\bposition (?P<position>\d+)")


class CatchUpProgress:
    """Turns the runner's per-batch lines into one progress display of the catch-up.

    The total is the positions between each projection's checkpoint and the newest
    event when the command starts; events appended meanwhile are not counted in it.
    """

    def __init__(self, display: ProgressDisplay, start: dict[str, int], head: int) -> None:
        self.display = display
        self.start = start
        self.head = head
        self.reached = dict(start)
        self.finished = False

    def __call__(self, line: str) -> None:
        match = _BATCH_LINE.match(line)
        if self.finished or match is None or match["name"] not in self.reached:
            return
        self.reached[match["name"]] = min(int(match["position"]), self.head)
        done = sum(self.reached[name] - self.start[name] for name in self.start)
        self.display.update(done)
        if self.display.total is not None and done >= self.display.total:
            self.finish()

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.display.finish()


class Command(BaseCommand):
    help = (
        "Run the projections of EVENTSOURCE_PROJECTIONS: catch up from their checkpoints, "
        "then follow new events until SIGTERM/SIGINT (or stop after one pass with --once). "
        "With --once, exits with status 3 when events were dead-lettered."
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
        once = bool(options["once"])
        stop_event = threading.Event()
        try:
            names = [p.name for p in load_projections(options["projections"])]
        except UnknownProjectionError as exc:
            raise CommandError(str(exc)) from exc

        start, head = _starting_positions(names)
        behind = sum(head - position for position in start.values())
        display = ProgressDisplay(
            self.stdout, "Catching up", total=behind or None, enabled=verbosity == 1
        )
        catch_up = CatchUpProgress(display, start, head)

        def progress(message: str) -> None:
            if verbosity >= 2:
                self.stdout.write(message)
            else:
                catch_up(message)

        if verbosity >= 1:
            listed = ", ".join(names) or "none"
            what = "Catching up" if once else "Running"
            self.stdout.write(
                f"{what} {len(names)} projection(s) ({listed}); "
                f"{behind} event position(s) behind the newest event."
            )
            if not once:
                self.stdout.write("Following new events after the catch-up; press Ctrl+C to stop.")
        # SIGTERM/SIGINT request a stop; the current batch is finished first.
        try:
            with stop_on_signals(stop_event):
                summary = run_projections(
                    options["projections"],
                    once=once,
                    batch_size=batch_size,
                    poll_interval=poll_interval,
                    stop_event=stop_event,
                    progress=progress,
                    max_units=max_units,
                )
        except (UnknownProjectionError, SegmentCountMismatchError) as exc:
            raise CommandError(str(exc)) from exc
        if display.done:
            catch_up.finish()  # a no-op when the catch-up already finished it
        if verbosity >= 1:
            for name, count in summary.processed.items():
                self.stdout.write(f"{name}: {count} events")
            for name in summary.skipped:
                self.stdout.write(
                    self.style.WARNING(
                        f"{name}: skipped, another runner holds it (it keeps it up to date)."
                    )
                )
            if summary.dead_lettered:
                self.stdout.write(
                    self.style.WARNING(
                        f"{summary.dead_lettered} events dead-lettered: see the admin's dead "
                        "letters or retry_dead_letters."
                    )
                )
            if summary.parked:
                self.stdout.write(
                    self.style.WARNING(
                        f"{summary.parked} events parked behind dead letters of their sequence."
                    )
                )
            for name in summary.paused:
                self.stdout.write(
                    self.style.ERROR(
                        f"{name}: paused after repeated failures; fix the cause, then "
                        f"resume_projection {name}."
                    )
                )
            self.stdout.write(self.style.SUCCESS(f"Processed {summary.total_processed} events."))
        if once and (summary.dead_lettered or summary.paused):
            raise SystemExit(PROBLEM)


def _starting_positions(names: list[str]) -> tuple[dict[str, int], int]:
    """Each projection's checkpoint position (0 if it never ran), and the newest position."""
    head = EventRecord.objects.order_by("-position").values_list("position", flat=True).first()
    stored = dict(
        Checkpoint.objects.filter(projection_name__in=names).values_list(
            "projection_name", "position"
        )
    )
    head = head or 0
    return {name: min(stored.get(name, 0), head) for name in names}, head
