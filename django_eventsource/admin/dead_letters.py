"""Dead letters: inspect, retry, resolve and clean up failed projection events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..models import DeadLetter, DeadLetterQuerySet
from ..projections.maintenance import retry_dead_letters
from ._common import ReadOnlyAdminMixin, preformatted, pretty_json

if TYPE_CHECKING:
    _DeadLetterAdminBase = admin.ModelAdmin[DeadLetter]
else:
    _DeadLetterAdminBase = admin.ModelAdmin


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdminMixin, _DeadLetterAdminBase):
    """Events a projection could not handle: inspect, retry, resolve, clean up."""

    list_display = (
        "id",
        "projection_name",
        "event_type",
        "status",
        "retry_count",
        "last_failed_at",
    )
    list_filter = ("status", "projection_name")
    search_fields = ("=event_id",)
    ordering = ("-id",)
    actions = ("retry_selected", "mark_resolved", "delete_resolved")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "projection_name",
                    "event_type",
                    "event_link",
                    "global_position",
                    "status",
                    "retry_count",
                    "first_failed_at",
                    "last_failed_at",
                    "resolved_at",
                    "resolved_by",
                ),
            },
        ),
        (_("Error"), {"fields": ("error_message_text", "stacktrace_text")}),
        (_("Event data"), {"fields": ("event_data_json",)}),
    )
    readonly_fields = ("event_link", "error_message_text", "stacktrace_text", "event_data_json")

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Django 6.1 passes the page the actions are for (change list or change form);
        # Django 5.2 takes the request alone.
        location = {} if action_location is None else {"action_location": action_location}
        actions = super().get_actions(request, **location)
        # Only resolved dead letters may be deleted: "Delete resolved" replaces the
        # generic bulk delete, which would also drop unresolved failures.
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        if obj is not None and obj.status != DeadLetter.Status.RESOLVED:
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description=_("event"))
    def event_link(self, obj: DeadLetter) -> SafeString:
        url = reverse(
            "admin:django_eventsource_eventrecord_changelist", current_app=self.admin_site.name
        )
        query = urlencode({"q": str(obj.event_id)})
        return format_html('<a href="{}?{}">{}</a>', url, query, obj.event_id)

    @admin.display(description=_("error message"))
    def error_message_text(self, obj: DeadLetter) -> SafeString:
        return preformatted(obj.error_message)

    @admin.display(description=_("stack trace"))
    def stacktrace_text(self, obj: DeadLetter) -> SafeString:
        return preformatted(obj.error_stacktrace)

    @admin.display(description=_("event data"))
    def event_data_json(self, obj: DeadLetter) -> SafeString:
        return pretty_json(obj.event_data)

    @admin.action(description=_("Retry selected dead letters"), permissions=["change"])
    def retry_selected(self, request: HttpRequest, queryset: DeadLetterQuerySet) -> None:
        ids = list(queryset.open().values_list("id", flat=True))
        if not ids:
            self.message_user(request, _("No unresolved dead letter selected."), messages.WARNING)
            return
        report = retry_dead_letters(ids=ids, resolved_by=request.user.get_username())
        if report.resolved:
            self.message_user(
                request,
                ngettext(
                    "%(count)d dead letter handled and resolved.",
                    "%(count)d dead letters handled and resolved.",
                    report.resolved,
                )
                % {"count": report.resolved},
                messages.SUCCESS,
            )
        if report.failed:
            details = "; ".join(f"#{pk}: {error}" for pk, error in sorted(report.errors.items()))
            self.message_user(
                request,
                ngettext(
                    "%(count)d dead letter failed again and stays failed (%(details)s).",
                    "%(count)d dead letters failed again and stay failed (%(details)s).",
                    report.failed,
                )
                % {"count": report.failed, "details": details},
                messages.ERROR,
            )

    @admin.action(description=_("Mark selected dead letters resolved"), permissions=["change"])
    def mark_resolved(self, request: HttpRequest, queryset: DeadLetterQuerySet) -> None:
        updated = queryset.open().mark_resolved(request.user.get_username())
        self.message_user(
            request,
            ngettext(
                "%(count)d dead letter marked resolved.",
                "%(count)d dead letters marked resolved.",
                updated,
            )
            % {"count": updated},
            messages.SUCCESS,
        )

    @admin.action(description=_("Delete resolved dead letters"), permissions=["delete"])
    def delete_resolved(self, request: HttpRequest, queryset: DeadLetterQuerySet) -> None:
        selected = queryset.count()
        deleted, _per_model = queryset.resolved().delete()
        message = ngettext(
            "%(count)d resolved dead letter deleted.",
            "%(count)d resolved dead letters deleted.",
            deleted,
        ) % {"count": deleted}
        if selected > deleted:
            message += " " + ngettext(
                "%(count)d unresolved one was kept.",
                "%(count)d unresolved ones were kept.",
                selected - deleted,
            ) % {"count": selected - deleted}
        self.message_user(request, message, messages.SUCCESS)
