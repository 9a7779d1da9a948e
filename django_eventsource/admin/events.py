"""Stored events: browse, filter and search; never add, change or delete."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import EventRecord
from ._common import EstimatedCountPaginator, ReadOnlyAdminMixin, pretty_json
from .filters import (
    AggregateIdFilter,
    AggregateTypeFilter,
    CorrelationIdFilter,
    EventTypeFilter,
    TenantFilter,
)

if TYPE_CHECKING:
    _EventAdminBase = admin.ModelAdmin[EventRecord]
else:
    _EventAdminBase = admin.ModelAdmin


@admin.register(EventRecord)
class EventRecordAdmin(ReadOnlyAdminMixin, _EventAdminBase):
    """Stored events: browse, filter and search; never add, change or delete."""

    list_display = (
        "position",
        "event_type",
        "aggregate_type",
        "aggregate_id",
        "aggregate_version",
        "tenant_id",
        "occurred_at",
    )
    list_filter = (
        EventTypeFilter,
        AggregateTypeFilter,
        TenantFilter,
        AggregateIdFilter,
        CorrelationIdFilter,
    )
    search_fields = ("=aggregate_id", "=event_id", "=correlation_id")
    search_help_text = _("Exact aggregate id, event id or correlation id (a UUID).")
    ordering = ("-position",)
    sortable_by = ()
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = None
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "position",
                    "event_id",
                    "event_type",
                    "event_version",
                    "aggregate_type",
                    "aggregate_id",
                    "aggregate_version",
                    "stream_link",
                ),
            },
        ),
        (
            _("Context"),
            {
                "fields": (
                    "tenant_id",
                    "actor_id",
                    "correlation_id",
                    "correlated_link",
                    "causation_id",
                    "occurred_at",
                    "recorded_at",
                ),
            },
        ),
        (_("Data"), {"fields": ("payload_json", "metadata_json")}),
    )
    readonly_fields = ("stream_link", "correlated_link", "payload_json", "metadata_json")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[EventRecord], search_term: str
    ) -> tuple[QuerySet[EventRecord], bool]:
        # Each column has its own index (the stream constraint leads with aggregate_id),
        # so PostgreSQL answers the OR with a BitmapOr of three index scans.
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            uuid = UUID(term)
        except ValueError:
            self.message_user(
                request,
                _("Search takes an exact aggregate id, event id or correlation id (a UUID)."),
                messages.WARNING,
            )
            return queryset.none(), False
        return (
            queryset.filter(Q(aggregate_id=uuid) | Q(event_id=uuid) | Q(correlation_id=uuid)),
            False,
        )

    def _changelist_url(self, **params: str) -> str:
        url = reverse(
            "admin:django_eventsource_eventrecord_changelist", current_app=self.admin_site.name
        )
        return f"{url}?{urlencode(params)}"

    @admin.display(description=_("stream"))
    def stream_link(self, obj: EventRecord) -> SafeString:
        url = self._changelist_url(
            aggregate_type=obj.aggregate_type, aggregate_id=str(obj.aggregate_id)
        )
        return format_html('<a href="{}">{}</a>', url, _("All events of this aggregate"))

    @admin.display(description=_("correlated events"))
    def correlated_link(self, obj: EventRecord) -> SafeString:
        url = self._changelist_url(correlation_id=str(obj.correlation_id))
        return format_html('<a href="{}">{}</a>', url, _("All events with this correlation id"))

    @admin.display(description=_("payload"))
    def payload_json(self, obj: EventRecord) -> SafeString:
        return pretty_json(obj.payload)

    @admin.display(description=_("metadata"))
    def metadata_json(self, obj: EventRecord) -> SafeString:
        return pretty_json(obj.metadata)
