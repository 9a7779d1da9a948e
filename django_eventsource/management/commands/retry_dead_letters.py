"""``manage.py retry_dead_letters``: handle dead-lettered events again, sequence by sequence."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...exceptions import UnknownProjectionError
from ...projections.maintenance import retry_dead_letters
from ..exit_codes import PROBLEM
from ..progress import ProgressDisplay


class Command(BaseCommand):
    help = (
        "Retry dead-lettered projection events: each sequence is handled from its head, in "
        "order, up to the first event that still fails. Exits with status 3 when some "
        "stay failing, 1 when a requested id does not exist."
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
            help="Only the sequence of this dead letter id; repeat for several.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = int(options["verbosity"])
        display = ProgressDisplay(self.stdout, "Retrying", enabled=verbosity >= 1)
        try:
            report = retry_dead_letters(
                projection=options["projection"],
                ids=options["ids"],
                resolved_by="retry_dead_letters",
                progress=lambda done, total: display.update(done, total),
            )
        except UnknownProjectionError as exc:
            raise CommandError(str(exc)) from exc
        if display.done:
            display.finish()
        if verbosity >= 1:
            for dlq_id, error in sorted(report.errors.items()):
                self.stdout.write(self.style.ERROR(f"#{dlq_id}: {error}"))
            style = self.style.SUCCESS if not report.failed else self.style.WARNING
            waiting = f", {report.waiting} waiting behind them" if report.waiting else ""
            self.stdout.write(
                style(f"{report.resolved} resolved, {report.failed} still failing{waiting}.")
            )
        if report.missing:
            missing = ", ".join(f"#{pk}" for pk in report.missing)
            raise CommandError(f"No such dead letter: {missing} (not found).")
        if report.failed:
            # After the output: the report is printed, then the status says "look at it".
            raise SystemExit(PROBLEM)
