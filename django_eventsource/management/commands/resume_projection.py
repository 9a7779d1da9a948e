"""``manage.py resume_projection NAME``: let the runner take a paused projection again."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...exceptions import UnknownProjectionError
from ...projections.maintenance import resume_projection


class Command(BaseCommand):
    help = (
        "Resume a projection paused after EVENTSOURCE_PROJECTION_PAUSE_AFTER consecutive "
        "failed events; the runner continues from its checkpoint."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The projection's name or dotted path.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            resumed = resume_projection(options["name"])
        except UnknownProjectionError as exc:
            raise CommandError(str(exc)) from exc
        if int(options["verbosity"]) >= 1:
            if resumed:
                self.stdout.write(
                    self.style.SUCCESS(
                        f"Resumed {options['name']}; the runner continues from its checkpoint."
                    )
                )
            else:
                self.stdout.write(f"{options['name']} was not paused.")
