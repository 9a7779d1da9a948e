"""``manage.py reset_projection NAME [--rebuild]``: empty a projection and replay it."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...exceptions import ProjectionBusyError, UnknownProjectionError
from ...projections.maintenance import reset_projection
from ...projections.runner import load_projections
from ..progress import ProgressDisplay


class Command(BaseCommand):
    help = (
        "Reset a projection: call its reset(), clear its checkpoint and, with --rebuild, "
        "replay every event from position 0."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Projection name (or dotted path).")
        parser.add_argument(
            "--rebuild", action="store_true", help="Replay all events after the reset."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="Events per rebuild batch (default: EVENTSOURCE_REBUILD_BATCH_SIZE).",
        )
        parser.add_argument(
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="Do not ask for confirmation.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        verbosity = int(options["verbosity"])
        batch_size: int | None = options["batch_size"]
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        try:
            load_projections([name])  # an unknown name fails before any question
        except UnknownProjectionError as exc:
            raise CommandError(str(exc)) from exc
        if options["interactive"]:
            self.confirm(name)

        display = ProgressDisplay(self.stdout, f"Rebuilding {name}", enabled=verbosity >= 1)

        def on_progress(replayed: int, total: int) -> None:
            display.update(replayed, total=max(total, replayed))

        try:
            summary = reset_projection(
                name,
                rebuild=options["rebuild"],
                batch_size=batch_size,
                on_progress=on_progress,
            )
        except (UnknownProjectionError, ProjectionBusyError) as exc:
            raise CommandError(str(exc)) from exc
        if verbosity >= 1:
            if options["rebuild"]:
                display.finish()
                self.stdout.write(
                    self.style.SUCCESS(
                        f"Rebuilt {name}: replayed {summary.total_processed} events"
                        + (
                            f", {summary.dead_lettered} dead-lettered."
                            if summary.dead_lettered
                            else "."
                        )
                    )
                )
            else:
                self.stdout.write(self.style.SUCCESS(f"Reset {name}; it restarts from position 0."))

    def confirm(self, name: str) -> None:
        """Ask before deleting; without a terminal to ask on, refuse."""
        if not _stdin_is_terminal():
            raise CommandError(
                "reset_projection asks for confirmation, but standard input is not a "
                "terminal. Pass --no-input to reset without asking."
            )
        try:
            answer = input(
                f"This deletes the read model of {name!r} and its checkpoint. "
                "Type 'yes' to continue: "
            )
        except EOFError:
            answer = ""
        if answer.strip().lower() != "yes":
            raise CommandError("Reset cancelled.")


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):  # closed or detached
        return False
