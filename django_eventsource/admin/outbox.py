"""Outbox messages waiting for (or done with) publishing; failed ones can be retried."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from ..models import OutboxMessage, OutboxMessageQuerySet
from ..outbox.relay import retry_failed
from ._common import EstimatedCountPaginator, ReadOnlyAdminMixin, preformatted, pretty_json

if TYPE_CHECKING:
    _OutboxAdminBase = admin.ModelAdmin[OutboxMessage]
else:
    _OutboxAdminBase = admin.ModelAdmin


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdminMixin, _OutboxAdminBase):
    """Outbox rows waiting for (or done with) publishing; failed ones can be retried."""

    list_display = (
        "id",
        "event_type",
        "aggregate_type",
        "status",
        "retry_count",
        "short_error",
        "created_at",
        "published_at",
        "next_attempt_at",
    )
    list_filter = ("status",)
    search_fields = ("=event_id", "=aggregate_id")
    ordering = ("-id",)
    # Published rows pile up until EVENTSOURCE_OUTBOX_RETENTION_DAYS: never count them all.
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    actions = ("retry_now",)
    readonly_fields = ("event_data_json", "last_error_text")
    exclude = ("event_data", "last_error")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        hidden = {"event_data", "last_error"}
        return [name for name in super().get_readonly_fields(request, obj) if name not in hidden]

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Django 6.1 passes the page the actions are for; Django 5.2 takes the request alone.
        location = {} if action_location is None else {"action_location": action_location}
        actions = super().get_actions(request, **location)
        # Deleting a pending or failed row loses an event that was never published:
        # no bulk delete. Published rows go by EVENTSOURCE_OUTBOX_RETENTION_DAYS.
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request: HttpRequest, obj: OutboxMessage | None = None) -> bool:
        # Only a published row may be deleted from its page (its event went out).
        if obj is None or obj.status != OutboxMessage.Status.PUBLISHED:
            return False
        return super().has_delete_permission(request, obj)

    def get_urls(self) -> list[URLPattern]:
        retry = path(
            "<int:object_id>/retry/",
            self.admin_site.admin_view(require_POST(self.retry_view)),
            name="django_eventsource_outboxmessage_retry",
        )
        return [retry, *super().get_urls()]

    def retry_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """The detail page's Retry button: the list action, for this one row."""
        obj = self.get_object(request, str(object_id))
        if obj is None:
            raise Http404
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        queryset = OutboxMessage.objects.filter(pk=obj.pk)
        if obj.status == OutboxMessage.Status.PUBLISHED:
            self.message_user(request, _("This message is already published."), messages.WARNING)
        else:
            self.retry_now(request, queryset)
        return HttpResponseRedirect(
            reverse(
                "admin:django_eventsource_outboxmessage_change",
                args=[obj.pk],
                current_app=self.admin_site.name,
            )
        )

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        obj = self.get_object(request, object_id)
        can_retry = (
            obj is not None
            and obj.status != OutboxMessage.Status.PUBLISHED
            and self.has_change_permission(request, obj)
        )
        extra_context = {
            **(extra_context or {}),
            "can_retry": can_retry,
            "retry_url": reverse(
                "admin:django_eventsource_outboxmessage_retry",
                args=[obj.pk],
                current_app=self.admin_site.name,
            )
            if can_retry and obj is not None
            else "",
        }
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description=_("last error"))
    def short_error(self, obj: OutboxMessage) -> str:
        first_line = obj.last_error.splitlines()[0] if obj.last_error else ""
        return first_line[:120]

    @admin.display(description=_("last error"))
    def last_error_text(self, obj: OutboxMessage) -> SafeString:
        return preformatted(obj.last_error)

    @admin.display(description=_("event data"))
    def event_data_json(self, obj: OutboxMessage) -> SafeString:
        return pretty_json(obj.event_data)

    @admin.action(description=_("Retry selected messages now"), permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: OutboxMessageQuerySet) -> None:
        failed = list(queryset.failed().values_list("id", flat=True))
        # Pending rows waiting out a backoff become due now; a row a relay has already
        # claimed is left to that relay.
        count = queryset.pending().unclaimed().update(next_attempt_at=timezone.now())
        count += retry_failed(failed) if failed else 0
        if not count:
            self.message_user(
                request,
                _("Nothing to retry: the selected messages are published or being sent."),
                messages.WARNING,
            )
            return
        self.message_user(
            request,
            ngettext(
                "%(count)d message will be published on the next relay pass.",
                "%(count)d messages will be published on the next relay pass.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )
