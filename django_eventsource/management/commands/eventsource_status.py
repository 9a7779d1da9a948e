"""``manage.py eventsource_status``: where every projection stands, and what holds readers back.

Exits with status 3 (``exit_codes.PROBLEM``) when it reports a problem, so that cron
jobs and monitoring can act on it; see ``docs/commands.md``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.core.serializers.json import DjangoJSONEncoder

from ...conf import conf
from ...health import HealthReport, get_health
from ...models import DeadLetter
from ..exit_codes import PROBLEM

#: Sequences of parked events listed one by one; the rest are summed up in one line.
SEQUENCES_SHOWN = 20


@dataclass(frozen=True)
class Problem:
    """One thing an operator must look at. ``kind`` is stable, for scripts."""

    kind: str
    message: str
    projection: str | None = None


def collect_problems(report: HealthReport) -> list[Problem]:
    """Every problem of ``report``, one kind after the other.

    Kinds: ``paused`` (a projection paused after ``EVENTSOURCE_PROJECTION_PAUSE_AFTER``
    consecutive failures), ``lag_events`` and ``lag_seconds`` (a projection past
    ``EVENTSOURCE_HEALTH_MAX_LAG_EVENTS`` / ``_SECONDS``), ``dead_letters`` (more failed
    dead letters than ``EVENTSOURCE_HEALTH_MAX_DEAD_LETTERS``), ``outbox_failed`` (outbox
    rows that ran out of attempts and wait for a retry).
    """
    problems: list[Problem] = [
        Problem(
            "paused",
            f"projection {p.name} is paused (last error: {p.last_error or '-'}); fix the "
            f"cause, then resume_projection {p.name}",
            p.name,
        )
        for p in report.projections
        if p.paused
    ]
    for p in report.projections:
        if p.lag_events > conf.HEALTH_MAX_LAG_EVENTS:
            problems.append(
                Problem(
                    "lag_events",
                    f"projection {p.name} is {p.lag_events} events behind "
                    f"(limit {conf.HEALTH_MAX_LAG_EVENTS})",
                    p.name,
                )
            )
        if p.lag_seconds > conf.HEALTH_MAX_LAG_SECONDS:
            problems.append(
                Problem(
                    "lag_seconds",
                    f"projection {p.name} is {p.lag_seconds:.0f}s behind "
                    f"(limit {conf.HEALTH_MAX_LAG_SECONDS:g}s)",
                    p.name,
                )
            )
    if report.dead_letters_failed > conf.HEALTH_MAX_DEAD_LETTERS:
        problems.append(
            Problem(
                "dead_letters",
                f"{report.dead_letters_failed} failed dead letter(s) "
                f"(limit {conf.HEALTH_MAX_DEAD_LETTERS}): see retry_dead_letters",
            )
        )
    if report.outbox_failed:
        problems.append(
            Problem(
                "outbox_failed",
                f"{report.outbox_failed} outbox row(s) failed and will not be published "
                "until retried (admin: Outbox messages, action 'Retry')",
            )
        )
    return problems


def shown_high_water_mark(report: HealthReport) -> int:
    """The safe high-water mark, never below a checkpoint.

    Checkpoints only advance up to a safe high-water mark; one measured a moment later
    (while a writer holds a position open) may read lower, which says nothing useful.
    """
    return max([report.safe_high_water_mark, *(p.position for p in report.projections)])


class Command(BaseCommand):
    help = (
        "Show each projection's position, lag (events and seconds) and dead letters, the "
        "outbox backlog, and open transactions holding catch-up readers back. Exits with "
        "status 3 when it reports a problem."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--format",
            choices=("text", "json"),
            default="text",
            help="text (default) for people, json for scripts.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = int(options["verbosity"])
        # A local operator's command: the blockers' SQL is what finds a forgotten session.
        report = get_health(include_queries=True)
        problems = collect_problems(report)
        if options["format"] == "json":
            data = report.as_dict()
            data["safe_high_water_mark"] = shown_high_water_mark(report)
            data["problems"] = [asdict(problem) for problem in problems]
            data["healthy"] = not problems
            data["status"] = "ok" if not problems else "unhealthy"
            self.stdout.write(json.dumps(data, cls=DjangoJSONEncoder, indent=2))
        else:
            if verbosity >= 1:
                self._report(report, verbosity)
            for problem in problems:
                self.stdout.write(self.style.ERROR(f"Problem: {problem.message}"))
            if verbosity >= 1 and not problems:
                self.stdout.write(self.style.SUCCESS("OK"))
        if problems:
            # After the output: the report is printed, then the status says "look at it".
            raise SystemExit(PROBLEM)

    def _report(self, report: HealthReport, verbosity: int) -> None:
        write = self.stdout.write
        write(
            f"Events: {report.global_position} stored, safe high-water mark "
            f"{shown_high_water_mark(report)}"
        )
        if report.projections:
            write(f"{'projection':<32} {'position':>10} {'lag':>8} {'lag (s)':>9} {'dead':>6}")
            for p in report.projections:
                line = (
                    f"{p.name:<32} {p.position:>10} {p.lag_events:>8} "
                    f"{p.lag_seconds:>9.1f} {p.dead_letters:>6}"
                )
                write(self.style.WARNING(line) if p.dead_letters else line)
        else:
            write("No projections configured (EVENTSOURCE_PROJECTIONS).")
        if report.dead_letters_failed or report.dead_letters_retrying or verbosity >= 2:
            write(
                f"Dead letters: {report.dead_letters_failed} failed, "
                f"{report.dead_letters_retrying} retrying"
            )
        if report.outbox_pending or report.outbox_failed or verbosity >= 2:
            oldest = (
                f", oldest pending {report.outbox_oldest_pending_seconds:.0f}s"
                if report.outbox_oldest_pending_seconds is not None
                else ""
            )
            write(f"Outbox: {report.outbox_pending} pending, {report.outbox_failed} failed{oldest}")
        if report.readers_held_back:
            write(self.style.WARNING("Readers held back by open transactions:"))
            for blocker in report.readers_held_back:
                seconds = float(blocker.get("duration_seconds") or 0)
                write(
                    self.style.WARNING(
                        f"  pid {blocker.get('pid')} ({blocker.get('application_name') or '-'}, "
                        f"{blocker.get('state')}) open {seconds:.0f}s: "
                        f"{str(blocker.get('query') or '')[:120]}"
                    )
                )
        elif verbosity >= 2:
            write("No readers held back.")
        write_paused_and_parked(self, report)


def write_paused_and_parked(command: BaseCommand, report: HealthReport) -> None:
    """The paused projections with their last error, and the sequences with parked events.

    For each open sequence with events waiting: its projection, key, head dead letter
    and how many events wait behind it (the first ``SEQUENCES_SHOWN``, largest first).
    """
    write, style = command.stdout.write, command.style
    for projection in report.projections:
        if projection.paused:
            write(
                style.ERROR(
                    f"Paused: {projection.name} (last error: {projection.last_error or '-'}); "
                    f"resume with: manage.py resume_projection {projection.name}"
                )
            )
    waiting = DeadLetter.objects.waiting_counts()
    if not waiting:
        return
    heads = {
        (row.projection_name, row.sequence_key): row.pk
        for row in DeadLetter.objects.heads()
        .exclude(sequence_key="")
        .only("id", "projection_name", "sequence_key")
    }
    ordered = sorted(waiting.items(), key=lambda item: (-item[1], item[0]))
    write(style.WARNING(f"Parked events: {sum(waiting.values())} in {len(waiting)} sequence(s)"))
    for (name, key), count in ordered[:SEQUENCES_SHOWN]:
        head = heads.get((name, key))
        behind = f"dead letter #{head}" if head is not None else "a resolved head (retry it)"
        write(style.WARNING(f"  {name} sequence {key}: {count} waiting behind {behind}"))
    if len(ordered) > SEQUENCES_SHOWN:
        write(style.WARNING(f"  … and {len(ordered) - SEQUENCES_SHOWN} more sequence(s)"))
