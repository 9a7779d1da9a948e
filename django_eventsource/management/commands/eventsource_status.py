"""``manage.py eventsource_status``: where every projection stands, and what holds readers back."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from ...health import HealthReport, get_health
from ...models import DeadLetter

#: Sequences listed one by one; the rest are summed up in one line.
SEQUENCES_SHOWN = 20


class Command(BaseCommand):
    help = (
        "Show each projection's position, lag (events and seconds) and dead letters, the "
        "outbox backlog, and open transactions holding catch-up readers back."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = int(options["verbosity"])
        # A local operator's command: the blockers' SQL is what finds a forgotten session.
        report = get_health(include_queries=True)
        write = self.stdout.write
        write(
            f"Events: {report.global_position} stored, safe high-water mark "
            f"{report.safe_high_water_mark}"
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
        for problem in report.problems:
            write(self.style.ERROR(f"Problem: {problem}"))
        if verbosity >= 1 and not report.problems:
            write(self.style.SUCCESS("OK"))


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
