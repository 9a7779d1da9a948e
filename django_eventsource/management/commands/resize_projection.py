"""``manage.py resize_projection NAME``: move a projection's checkpoints to its ``segments``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...exceptions import ProjectionBusyError, SegmentCountMismatchError, UnknownProjectionError
from ...projections.segments import resize_projection


class Command(BaseCommand):
    help = (
        "After changing a projection's `segments`: bring its old units up to one common "
        "position and start the new units there, so every event is handled exactly once. "
        "Its runners must be stopped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Projection name (or dotted path).")
        parser.add_argument(
            "--batch-size",
            type=int,
            help="Events per batch while draining the old units "
            "(default EVENTSOURCE_PROJECTION_BATCH_SIZE).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size = options["batch_size"]
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        try:
            report = resize_projection(options["name"], batch_size=batch_size)
        except (UnknownProjectionError, ProjectionBusyError, SegmentCountMismatchError) as exc:
            raise CommandError(str(exc)) from exc
        if int(options["verbosity"]) < 1:
            return
        if report.old_segments == report.new_segments:
            self.stdout.write(
                f"{report.projection} already has {report.new_segments} segment(s); nothing to do."
            )
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Resized {report.projection} from {report.old_segments} to "
                f"{report.new_segments} segment(s) at position {report.position} "
                f"({report.drained} events handled on the way)."
            )
        )
