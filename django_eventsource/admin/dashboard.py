"""The event-source dashboard: where every projection stands, dead letters and the outbox.

One page an operator opens first: per projection its position, lag, status and failed
dead letters, then the outbox backlog and its failed rows, each with a link to the list
that shows them. It costs two queries whatever the number of events: the checkpoints
with their lag and dead-letter counts (index lookups in subqueries), and the outbox
summary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.db.models import Count, IntegerField, Min, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext as _

from ..conf import conf
from ..health import _projection_names
from ..models import Checkpoint, DeadLetter, EventRecord, OutboxMessage
from ._common import ADMIN_STYLESHEET

if TYPE_CHECKING:
    from django.contrib.admin import AdminSite

RUNNING = "running"
BEHIND = "behind"
PAUSED = "paused"


def projection_status(checkpoint: Checkpoint, now: datetime | None = None) -> str:
    """One word for a projection's state, from a ``with_lag()`` checkpoint.

    ``paused`` after ``EVENTSOURCE_PROJECTION_PAUSE_AFTER`` consecutive failures
    (until resumed), ``behind`` when its lag passes ``EVENTSOURCE_HEALTH_MAX_LAG_EVENTS``
    or ``EVENTSOURCE_HEALTH_MAX_LAG_SECONDS`` (the health thresholds), ``running``
    otherwise. The one place to add another state.
    """
    if checkpoint.paused:
        return PAUSED
    if (
        checkpoint.lag_events > conf.HEALTH_MAX_LAG_EVENTS
        or checkpoint.lag_seconds(now) > conf.HEALTH_MAX_LAG_SECONDS
    ):
        return BEHIND
    return RUNNING


@dataclass(frozen=True)
class ProjectionRow:
    name: str
    position: int
    lag_events: int
    lag_seconds: float
    status: str
    dead_letters: int
    last_processed_at: datetime | None
    checkpoint_url: str | None
    dead_letters_url: str


def dashboard_rows(now: datetime, url: Callable[[str], str]) -> list[ProjectionRow]:
    """The configured projections and any with a checkpoint, in one query."""
    failed = (
        DeadLetter.objects.failed()
        .filter(projection_name=OuterRef("projection_name"))
        .order_by()
        .values("projection_name")
        .annotate(n=Count("id"))
        .values("n")
    )
    checkpoints = {
        c.projection_name: c
        for c in Checkpoint.objects.with_lag().annotate(
            failed_dead_letters=Coalesce(Subquery(failed, output_field=IntegerField()), 0)
        )
    }
    names = list(dict.fromkeys([*_projection_names(), *checkpoints]))
    head: tuple[int, Any] | None = None
    rows: list[ProjectionRow] = []
    for name in names:
        checkpoint = checkpoints.get(name)
        if checkpoint is None:
            # Never ran: behind by every stored event. The head is read once, and only
            # when there is no checkpoint to take it from.
            checkpoint = Checkpoint(projection_name=name)
            if head is None:
                known = next(iter(checkpoints.values()), None)
                if known is not None:
                    head = (known.head_position, known.head_event_id)
                else:
                    newest = EventRecord.objects.order_by("-position")
                    head = newest.values_list("position", "event_id").first() or (0, None)
            checkpoint.head_position, checkpoint.head_event_id = head
            first = EventRecord.objects.order_by("position")
            checkpoint.oldest_unread_at = (
                first.values_list("recorded_at", flat=True).first() if head[0] else None
            )
            checkpoint.failed_dead_letters = 0  # type: ignore[attr-defined]
            checkpoint_url = None
        else:
            checkpoint_url = url("checkpoint") + "?" + urlencode({"q": name})
        rows.append(
            ProjectionRow(
                name=name,
                position=checkpoint.position,
                lag_events=checkpoint.lag_events,
                lag_seconds=checkpoint.lag_seconds(now),
                status=projection_status(checkpoint, now),
                dead_letters=checkpoint.failed_dead_letters,  # type: ignore[attr-defined]
                last_processed_at=checkpoint.last_processed_at,
                checkpoint_url=checkpoint_url,
                dead_letters_url=url("deadletter")
                + "?"
                + urlencode({"projection_name__exact": name, "status__exact": "failed"}),
            )
        )
    return rows


def outbox_summary() -> dict[str, Any]:
    """Pending and failed rows and the oldest pending row's age, in one query.

    Unlike ``status_summary()`` it never counts published rows (days of them, before
    ``EVENTSOURCE_OUTBOX_RETENTION_DAYS`` deletes them): the status index finds the few
    rows that matter.
    """
    status = OutboxMessage.Status
    pending = Q(status=status.PENDING)
    return OutboxMessage.objects.filter(status__in=[status.PENDING, status.FAILED]).aggregate(
        pending=Count("id", filter=pending),
        failed=Count("id", filter=Q(status=status.FAILED)),
        oldest_pending=Min("created_at", filter=pending),
    )


def dashboard_view(site: AdminSite) -> Callable[[HttpRequest], HttpResponse]:
    """The dashboard page of ``site`` (mounted by the events admin at ``dashboard/``)."""

    def url(model: str) -> str:
        return reverse(f"admin:django_eventsource_{model}_changelist", current_app=site.name)

    def view(request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("django_eventsource.view_checkpoint"):
            raise PermissionDenied
        now = timezone.now()
        projections = dashboard_rows(now, url)
        outbox = outbox_summary()
        oldest = outbox["oldest_pending"]
        context = {
            **site.each_context(request),
            "title": _("Event sourcing dashboard"),
            "projections": projections,
            "dead_letters_total": sum(p.dead_letters for p in projections),
            "outbox_pending": outbox["pending"],
            "outbox_failed": outbox["failed"],
            "outbox_oldest_seconds": (now - oldest).total_seconds() if oldest else None,
            "outbox_pending_url": url("outboxmessage") + "?status__exact=pending",
            "outbox_failed_url": url("outboxmessage") + "?status__exact=failed",
            "dead_letters_url": url("deadletter") + "?status__exact=failed",
            "events_url": url("eventrecord"),
            "checkpoints_url": url("checkpoint"),
            "stylesheet": ADMIN_STYLESHEET,
            "max_lag_events": conf.HEALTH_MAX_LAG_EVENTS,
            "max_lag_seconds": conf.HEALTH_MAX_LAG_SECONDS,
        }
        request.current_app = site.name
        return TemplateResponse(request, "admin/django_eventsource/dashboard.html", context)

    return view


__all__ = ["BEHIND", "PAUSED", "RUNNING", "ProjectionRow", "dashboard_view", "projection_status"]
