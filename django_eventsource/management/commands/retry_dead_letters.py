"""``manage.py retry_dead_letters``: run dead-lettered events through their handler again."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...exceptions import UnknownProjectionError
from ...projections.maintenance import retry_dead_letters


class Command(BaseCommand):
    help = (
        "Retry dead-lettered projection events: successes are marked resolved, failures "
        "stay with the new error."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--projection", metavar="NAME", help="Only dead letters of this projection."
        )
        parser.add_argument(
            "--id",
            action="append",
            type=int,
            dest="ids",
            metavar="N",
            help="Only this dead letter id; repeat for several.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = retry_dead_letters(
                projection=options["projection"],
                ids=options["ids"],
                resolved_by="retry_dead_letters",
            )
        except UnknownProjectionError as exc:
            raise CommandError(str(exc)) from exc
        verbosity = int(options["verbosity"])
        if verbosity >= 2 or (verbosity >= 1 and report.errors):
            for dlq_id, error in sorted(report.errors.items()):
                self.stdout.write(self.style.ERROR(f"#{dlq_id}: {error}"))
        if verbosity >= 1:
            style = self.style.SUCCESS if not report.failed else self.style.WARNING
            self.stdout.write(style(f"{report.resolved} resolved, {report.failed} still failing."))
