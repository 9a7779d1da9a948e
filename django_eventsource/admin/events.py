"""Stored events: browse, filter and search; never add, change or delete."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import EventRecord
from ._common import (
    EstimatedCountPaginator,
    QuietChangeList,
    ReadOnlyAdminMixin,
    planner_row_estimate,
    pretty_json,
    short_id,
)
from .dashboard import dashboard_view
from .filters import (
    AFTER_VAR,
    BEFORE_VAR,
    AggregateIdFilter,
    AggregateTypeFilter,
    CorrelationIdFilter,
    EventTypeFilter,
    PositionCursorFilter,
    TenantFilter,
)

#: How many events one aggregate's stream page shows (in version order, with payloads).
STREAM_PAGE_SIZE = 500
PREVIEW_LENGTH = 60


class EventChangeList(QuietChangeList):
    """The events list, paged by position instead of by page number.

    ``?before=N`` shows the newest events below position N, ``?after=N`` the oldest
    ones above N (shown newest first), ``?position=N`` the events from N down. Each page
    is one index range read whatever its depth, so the oldest event is as easy to reach
    as the newest; page numbers (``OFFSET``) would make PostgreSQL and SQLite walk every
    skipped row. One aggregate's stream (``?aggregate_id=``) is shown in version order
    with page numbers instead: streams are short.
    """

    stream_mode = False
    newer_url: str | None = None
    older_url: str | None = None
    newest_url: str | None = None
    oldest_url: str | None = None
    first_position: int | None = None
    last_position: int | None = None
    cursor_active = False
    count_shown = True
    jump_hidden: list[tuple[str, str]] = []

    def get_results(self, request: HttpRequest) -> None:
        if request.GET.get("aggregate_id"):
            self.stream_mode = True
            self.list_per_page = STREAM_PAGE_SIZE
            super().get_results(request)
            return
        per_page = self.list_per_page
        paginator = cast(
            EstimatedCountPaginator,
            self.model_admin.get_paginator(request, self.queryset, per_page),
        )
        after = AFTER_VAR in self.params
        self.cursor_active = any(key in self.params for key in PositionCursorFilter.parameters)
        if after:
            rows = list(self.queryset.order_by("position")[: per_page + 1])
            more_newer = len(rows) > per_page
            rows = rows[:per_page][::-1]
            # After position 0 nothing is older; after any other, older events exist
            # (unless the filters exclude them: that page then says it is empty).
            more_older = bool(rows) and request.GET.get(AFTER_VAR, "").strip() != "0"
        else:
            rows = list(self.queryset[: per_page + 1])
            more_older = len(rows) > per_page
            rows = rows[:per_page]
            more_newer = self.cursor_active
        cursor_vars = [*PositionCursorFilter.parameters, "p"]
        # The jump-to-position form keeps the other parameters (filters, search).
        self.jump_hidden = [
            (key, value)
            for key, values in request.GET.lists()
            if key not in cursor_vars
            for value in values
        ]
        if rows:
            self.first_position, self.last_position = rows[0].position, rows[-1].position
        if more_newer:
            self.newest_url = self.get_query_string(remove=cursor_vars)
            if rows:
                self.newer_url = self.get_query_string(
                    {AFTER_VAR: rows[0].position}, remove=cursor_vars
                )
        if more_older and rows:
            self.older_url = self.get_query_string(
                {BEFORE_VAR: rows[-1].position}, remove=cursor_vars
            )
        if more_older or not rows:
            self.oldest_url = self.get_query_string({AFTER_VAR: 0}, remove=cursor_vars)
        self.result_list = rows
        self.paginator = paginator
        if self.cursor_active:
            # A page deep in the list: its range says where it is; counting what lies
            # beyond would cost more than the page itself.
            self.count_shown = False
            self.result_count = len(rows)
        elif not more_older:
            self.result_count = len(rows)  # everything is on this page: counted already
        elif (self.has_active_filters or self.query) and (
            estimate := planner_row_estimate(self.queryset)
        ) >= 0:
            # Filtered, on PostgreSQL: the planner's figure, or "more than" this page
            # when it guesses lower. Counting the matches of a common filter could sort
            # them all on a table the planner knows nothing about yet.
            if estimate > per_page:
                paginator.count_is_estimate = True
                self.result_count = estimate
            else:
                paginator.count_is_capped = True
                self.result_count = per_page
        else:
            self.result_count = paginator.count
        self.show_full_result_count = False
        self.full_result_count = self.result_count if not self.has_active_filters else None
        self.can_show_all = False
        self.multi_page = more_older or more_newer
        self.show_all = False
        if not any(row.tenant_id for row in rows):
            # Tenancy unused (at least on this page): no column of dashes.
            self.list_display = [name for name in self.list_display if name != "tenant"]


if TYPE_CHECKING:
    _EventAdminBase = admin.ModelAdmin[EventRecord]
else:
    _EventAdminBase = admin.ModelAdmin


@admin.register(EventRecord)
class EventRecordAdmin(ReadOnlyAdminMixin, _EventAdminBase):
    """Stored events: browse, filter and search; never add, change or delete."""

    # Narrow columns, so the list fits a 1,400 px window beside the admin's sidebars:
    # ids shortened (the full id on hover), aggregate type and id in one column, a
    # one-line payload preview.
    list_display = (
        "event_position",
        "event_type",
        "aggregate",
        "version",
        "tenant",
        "occurred",
        "payload_preview",
    )
    list_display_links = ("event_position",)
    list_filter = (
        PositionCursorFilter,
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

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return EventChangeList

    def get_ordering(self, request: HttpRequest) -> tuple[str, ...]:
        if request.GET.get("aggregate_id"):
            # One stream: in version order (the stream constraint's index).
            return ("aggregate_type", "aggregate_version")
        return ("-position",)

    def get_list_display(self, request: HttpRequest) -> tuple[str, ...]:
        if request.GET.get("aggregate_id"):
            return ("event_position", "version", "event_type", "occurred", "payload_full")
        return self.list_display

    def get_urls(self) -> list[URLPattern]:
        dashboard = path(
            "dashboard/",
            self.admin_site.admin_view(dashboard_view(self.admin_site)),
            name="django_eventsource_dashboard",
        )
        return [dashboard, *super().get_urls()]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> Any:
        extra_context = {
            **(extra_context or {}),
            "dashboard_url": reverse(
                "admin:django_eventsource_dashboard", current_app=self.admin_site.name
            ),
        }
        return super().changelist_view(request, extra_context)

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

    @admin.display(description=_("aggregate (its stream)"))
    def aggregate(self, obj: EventRecord) -> SafeString:
        url = self._changelist_url(
            aggregate_type=obj.aggregate_type, aggregate_id=str(obj.aggregate_id)
        )
        return format_html(
            '{} <a href="{}">{}</a>', obj.aggregate_type, url, short_id(obj.aggregate_id)
        )

    @admin.display(description=_("position"))
    def event_position(self, obj: EventRecord) -> int:
        return obj.position

    @admin.display(description=_("version"))
    def version(self, obj: EventRecord) -> int:
        return obj.aggregate_version

    @admin.display(description=_("occurred at"))
    def occurred(self, obj: EventRecord) -> SafeString:
        when = timezone.localtime(obj.occurred_at)
        return format_html(
            '<span title="{}">{}</span>',
            when.isoformat(),
            when.strftime("%Y-%m-%d %H:%M:%S"),
        )

    @admin.display(description=_("tenant"))
    def tenant(self, obj: EventRecord) -> SafeString:
        return short_id(obj.tenant_id)

    @admin.display(description=_("payload"))
    def payload_preview(self, obj: EventRecord) -> SafeString:
        text = json.dumps(obj.payload, ensure_ascii=False, sort_keys=True, default=str)
        if len(text) > PREVIEW_LENGTH:
            text = text[: PREVIEW_LENGTH - 1] + "…"
        return format_html('<span class="eventsource-preview">{}</span>', text)

    @admin.display(description=_("payload"))
    def payload_full(self, obj: EventRecord) -> SafeString:
        return pretty_json(obj.payload)

    @admin.display(description=_("payload"))
    def payload_json(self, obj: EventRecord) -> SafeString:
        return pretty_json(obj.payload)

    @admin.display(description=_("metadata"))
    def metadata_json(self, obj: EventRecord) -> SafeString:
        return pretty_json(obj.metadata)
