"""Health and lag figures for monitoring: per projection, dead letters, outbox, held-back readers.

``get_health()`` gathers them in a handful of indexed queries; ``views.health`` serves them
as JSON with HTTP 503 when a threshold is crossed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.module_loading import import_string

from .conf import conf
from .models import Checkpoint, DeadLetter, OutboxMessage
from .projections.coordinator import ProjectionHealth
from .stores.django import DjangoEventStore


@dataclass
class HealthReport:
    """Everything ``get_health()`` measured; ``as_dict()`` is the health view's JSON body.

    ``problems`` lists, in words, every threshold that is crossed; ``healthy`` is true
    when there is none. ``readers_held_back`` lists the database sessions whose open
    transactions keep catch-up readers below ``global_position`` (PostgreSQL only; the
    start of each one's current ``query`` only when asked for) and
    ``readers_held_back_seconds`` is how long the oldest of them has been open.
    ``dead_letters_parked`` counts the events waiting behind dead letters of their
    sequence, and ``paused_projections`` names the paused projections (each a problem).
    """

    healthy: bool
    checked_at: datetime
    global_position: int
    safe_high_water_mark: int
    projections: list[ProjectionHealth] = field(default_factory=list)
    dead_letters_failed: int = 0
    dead_letters_retrying: int = 0
    dead_letters_parked: int = 0
    paused_projections: list[str] = field(default_factory=list)
    outbox_pending: int = 0
    outbox_failed: int = 0
    outbox_oldest_pending_seconds: float | None = None
    readers_held_back: list[dict[str, Any]] = field(default_factory=list)
    readers_held_back_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes still to encode) with ``status``: "ok"/"unhealthy"."""
        data = asdict(self)
        data["status"] = "ok" if self.healthy else "unhealthy"
        return data


def first_line(error: str, limit: int = 200) -> str:
    """The first line of an error message, cut to ``limit`` characters ("-" when empty)."""
    line = error.strip().splitlines()[0] if error.strip() else "-"
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _projection_names() -> list[str]:
    """The names of the configured projections, without failing on a broken entry."""
    names: list[str] = []
    for path in conf.PROJECTIONS:
        try:
            cls = import_string(path)
        except ImportError:
            names.append(path.rsplit(".", 1)[-1])
            continue
        declared = getattr(cls, "name", None)
        if not isinstance(declared, str):
            # ``name`` is usually a property: ask an instance.
            try:
                declared = cls().name
            except Exception:
                declared = None
        name = declared if isinstance(declared, str) else cls.__name__
        # A segmented projection's checkpoints are its units' (projections/segments.py).
        segments = getattr(cls, "segments", 1)
        if isinstance(segments, int) and segments > 1:
            names.extend(f"{name}#{index}/{segments}" for index in range(segments))
        else:
            names.append(name)
    return names


def get_health(*, include_queries: bool = False) -> HealthReport:
    """Collect the current health figures and evaluate the thresholds.

    ``include_queries`` adds the start of each reader-blocking session's current SQL to
    ``readers_held_back``. Off by default: that text belongs to other sessions and may
    carry literal values (personal data, tokens).
    """
    now = timezone.now()
    store = DjangoEventStore()
    global_position = store.get_global_position()
    hwm = store.safe_high_water_mark()
    report = HealthReport(
        healthy=True, checked_at=now, global_position=global_position, safe_high_water_mark=hwm
    )

    checkpoints = {c.projection_name: c for c in Checkpoint.objects.with_lag()}
    failed = DeadLetter.objects.failed().per_projection()
    dead_by_projection = {row["projection_name"]: row["failures"] for row in failed}
    parked_by_projection: dict[str, int] = {}
    for (projection_name, _key), waiting in DeadLetter.objects.waiting_counts().items():
        parked_by_projection[projection_name] = (
            parked_by_projection.get(projection_name, 0) + waiting
        )
    names = list(dict.fromkeys([*_projection_names(), *checkpoints, *dead_by_projection]))
    for name in names:
        # A configured projection that never ran is behind by every stored event.
        checkpoint = checkpoints.get(name) or Checkpoint.objects.not_started(name)
        lag_events = checkpoint.lag_events
        lag_seconds = checkpoint.lag_seconds(now)
        report.projections.append(
            ProjectionHealth(
                name=name,
                position=checkpoint.position,
                lag_events=lag_events,
                lag_seconds=round(lag_seconds, 3),
                dead_letters=dead_by_projection.get(name, 0),
                last_processed_at=checkpoint.last_processed_at,
                parked=parked_by_projection.get(name, 0),
                paused=checkpoint.paused,
                last_error=first_line(checkpoint.last_error) if checkpoint.last_error else "",
            )
        )
        if checkpoint.paused:
            report.paused_projections.append(name)
            report.problems.append(
                f"projection {name} is paused after {checkpoint.failure_streak} consecutive "
                f"failed events (last error: {first_line(checkpoint.last_error)}); "
                f"resume it with resume_projection {name}"
            )
        if lag_events > conf.HEALTH_MAX_LAG_EVENTS:
            report.problems.append(
                f"projection {name} is {lag_events} events behind "
                f"(limit {conf.HEALTH_MAX_LAG_EVENTS})"
            )
        if lag_seconds > conf.HEALTH_MAX_LAG_SECONDS:
            report.problems.append(
                f"projection {name} is {lag_seconds:.0f}s behind "
                f"(limit {conf.HEALTH_MAX_LAG_SECONDS}s)"
            )

    dlq = DeadLetter.objects.status_summary()
    report.dead_letters_failed = dlq["failed"]
    report.dead_letters_retrying = dlq["retrying"]
    report.dead_letters_parked = dlq["parked"]
    if report.dead_letters_failed > conf.HEALTH_MAX_DEAD_LETTERS:
        report.problems.append(
            f"{report.dead_letters_failed} dead letter(s) (limit {conf.HEALTH_MAX_DEAD_LETTERS})"
        )

    outbox = OutboxMessage.objects.status_summary()
    report.outbox_pending = outbox["pending"]
    report.outbox_failed = outbox["failed"]
    if outbox["oldest_pending"] is not None:
        oldest_pending = now - outbox["oldest_pending"]
        report.outbox_oldest_pending_seconds = round(oldest_pending.total_seconds(), 3)

    for blocker in store.get_reader_blockers():
        described = asdict(blocker)
        if not include_queries:
            del described["query"]
        report.readers_held_back.append(described)
        report.readers_held_back_seconds = max(
            report.readers_held_back_seconds, round(blocker.duration_seconds, 3)
        )

    report.healthy = not report.problems
    return report


__all__ = ["HealthReport", "ProjectionHealth", "get_health"]
