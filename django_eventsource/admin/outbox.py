"""Outbox messages waiting for (or done with) publishing; failed ones can be retried."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils import timezone
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..models import OutboxMessage, OutboxMessageQuerySet
from ..outbox.relay import retry_failed
from ._common import ReadOnlyAdminMixin, preformatted, pretty_json

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
    show_full_result_count = False
    actions = ("retry_now",)
    readonly_fields = ("event_data_json", "last_error_text")
    exclude = ("event_data", "last_error")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        hidden = {"event_data", "last_error"}
        return [name for name in super().get_readonly_fields(request, obj) if name not in hidden]

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
