"""Projection checkpoints with their lag; reset behind a confirmation page."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from ..exceptions import EventSourceError
from ..models import Checkpoint, CheckpointQuerySet
from ..projections.maintenance import reset_projection
from ._common import ReadOnlyAdminMixin

if TYPE_CHECKING:
    _CheckpointAdminBase = admin.ModelAdmin[Checkpoint]
else:
    _CheckpointAdminBase = admin.ModelAdmin


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdminMixin, _CheckpointAdminBase):
    """Projection checkpoints with their lag; reset behind a confirmation page."""

    list_display = (
        "projection_name",
        "position",
        "lag_events",
        "lag_seconds",
        "events_processed",
        "last_processed_at",
    )
    search_fields = ("projection_name",)
    actions = ("reset_projections",)
    readonly_fields = ("lag_events", "lag_seconds")

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
