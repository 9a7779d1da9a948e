"""``manage.py reset_projection NAME [--rebuild]``: empty a projection and replay it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...exceptions import ProjectionBusyError, UnknownProjectionError
from ...projections.maintenance import reset_projection


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
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="Do not ask for confirmation.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        verbosity = int(options["verbosity"])
        if options["interactive"]:
            answer = input(
                f"This deletes the read model of {name!r} and its checkpoint. "
                "Type 'yes' to continue: "
            )
            if answer.strip().lower() != "yes":
                raise CommandError("Reset cancelled.")

        def progress(message: str) -> None:
            if verbosity >= 1:
                self.stdout.write(message)

        try:
            summary = reset_projection(name, rebuild=options["rebuild"], progress=progress)
        except (UnknownProjectionError, ProjectionBusyError) as exc:
            raise CommandError(str(exc)) from exc
        if verbosity >= 1:
            if options["rebuild"]:
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
