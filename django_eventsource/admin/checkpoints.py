"""Projection checkpoints with their lag and pause; resume, and reset behind a confirmation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from ..exceptions import EventSourceError
from ..health import first_line
from ..models import Checkpoint, CheckpointQuerySet
from ..projections.maintenance import reset_projection, resume_projection
from ._common import ReadOnlyAdminMixin

if TYPE_CHECKING:
    _CheckpointAdminBase = admin.ModelAdmin[Checkpoint]
else:
    _CheckpointAdminBase = admin.ModelAdmin


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdminMixin, _CheckpointAdminBase):
    """Projection checkpoints with their lag and pause; resume, reset behind a confirmation."""

    list_display = (
        "projection_name",
        "state",
        "position",
        "lag_events",
        "lag_seconds",
        "events_processed",
        "last_processed_at",
        "last_error_first_line",
    )
    search_fields = ("projection_name",)
    actions = ("resume_projections", "reset_projections")
    readonly_fields = ("state", "lag_events", "lag_seconds")

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra = {
            **(extra_context or {}),
            "title": _("View %(name)s") % {"name": self.model._meta.verbose_name},
        }
        return super().changeform_view(request, object_id, form_url, extra)

    @admin.display(description=_("state"))
    def state(self, obj: Checkpoint) -> str:
        return str(_("paused") if obj.paused else _("running"))

    @admin.display(description=_("last error"))
    def last_error_first_line(self, obj: Checkpoint) -> str:
        return first_line(obj.last_error, 120) if obj.last_error else ""

    @admin.action(description=_("Resume selected paused projections"), permissions=["change"])
    def resume_projections(self, request: HttpRequest, queryset: QuerySet[Checkpoint]) -> None:
        resumed: list[str] = []
        for name in queryset.filter(paused_at__isnull=False).values_list(
            "projection_name", flat=True
        ):
            try:
                if resume_projection(name):
                    resumed.append(name)
            except EventSourceError as exc:
                self.message_user(
                    request,
                    _("Could not resume %(name)s: %(error)s") % {"name": name, "error": exc},
                    messages.ERROR,
                )
        if resumed:
            self.message_user(
                request,
                _("Resumed %(names)s; the runner continues from their checkpoints.")
                % {"names": ", ".join(resumed)},
                messages.SUCCESS,
            )
        else:
            self.message_user(request, _("No paused projection selected."), messages.WARNING)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Checkpoint]:
        # One query for the whole page: with_lag() reads the lag in subqueries.
        return cast(CheckpointQuerySet, super().get_queryset(request)).with_lag()

    @admin.display(description=_("lag (events)"))
    def lag_events(self, obj: Checkpoint) -> int:
        return obj.lag_events

    @admin.display(description=_("lag (seconds)"))
    def lag_seconds(self, obj: Checkpoint) -> str:
        if obj.oldest_unread_at is None:
            return "0"
        return f"{obj.lag_seconds():.1f}"

    @admin.action(description=_("Reset selected projections"), permissions=["change"])
    def reset_projections(
        self, request: HttpRequest, queryset: QuerySet[Checkpoint]
    ) -> TemplateResponse | None:
        names = list(queryset.values_list("projection_name", flat=True))
        if request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": _("Reset projections?"),
                "opts": self.model._meta,
                "names": names,
                "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                "action": "reset_projections",
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "changelist_url": reverse(
                    "admin:django_eventsource_checkpoint_changelist",
                    current_app=self.admin_site.name,
                ),
            }
            request.current_app = self.admin_site.name
            return TemplateResponse(
                request, "admin/django_eventsource/checkpoint/reset_confirmation.html", context
            )

        done: list[str] = []
        for name in names:
            try:
                reset_projection(name)
            except EventSourceError as exc:  # unknown or busy projection: say so, go on
                self.message_user(
                    request,
                    _("Could not reset %(name)s: %(error)s") % {"name": name, "error": exc},
                    messages.ERROR,
                )
            else:
                done.append(name)
        if done:
            self.message_user(
                request,
                _("Reset %(names)s; the runner rebuilds them from position 0.")
                % {"names": ", ".join(done)},
                messages.SUCCESS,
            )
        return None
