"""Django admin for the event store: events, dead letters, checkpoints, outbox, snapshots.

Stored events are never edited or deleted from the admin. The other models are read-only
too; operators act on them only through actions (retry, resolve, reset), which need the
model's change (or delete) permission. The events changelist is built for large tables:
its filters hit the ``(column, position)`` indexes, its choices come from the event
registry instead of ``SELECT DISTINCT``, searches are exact UUID matches, and its
paginator never counts the whole table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import EmptyResultSet, PermissionDenied
from django.core.paginator import Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .exceptions import EventSourceError
from .models import Checkpoint, DeadLetter, EventRecord, OutboxMessage, Snapshot

if TYPE_CHECKING:
    from django.contrib.admin.views.main import ChangeList
    from django.db.models import Model

    _EventAdminBase = admin.ModelAdmin[EventRecord]
    _DeadLetterAdminBase = admin.ModelAdmin[DeadLetter]
    _CheckpointAdminBase = admin.ModelAdmin[Checkpoint]
    _OutboxAdminBase = admin.ModelAdmin[OutboxMessage]
    _SnapshotAdminBase = admin.ModelAdmin[Snapshot]
    _PaginatorBase = Paginator[Any]
else:
    _PaginatorBase = Paginator
    _EventAdminBase = _DeadLetterAdminBase = _CheckpointAdminBase = admin.ModelAdmin
    _OutboxAdminBase = _SnapshotAdminBase = admin.ModelAdmin


def _pretty_json(value: Any) -> SafeString:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder)
    return format_html('<pre class="eventsource-json">{}</pre>', text)


def _preformatted(text: str) -> SafeString:
    return format_html('<pre class="eventsource-text">{}</pre>', text)


class ReadOnlyAdminMixin:
    """Every model field read-only, no add, no save: the change page is a detail page.

    POSTs to the change form are refused: saving an unchanged form would still write every
    column back and could overwrite what a runner or relay changed meanwhile.
    """

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        model: type[Model] = self.model  # type: ignore[attr-defined]
        declared = list(self.readonly_fields)  # type: ignore[attr-defined]
        return [f.name for f in model._meta.concrete_fields] + declared

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if request.method == "POST":
            raise PermissionDenied
        extra_context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().changeform_view(  # type: ignore[misc,no-any-return]
            request, object_id, form_url, extra_context
        )


# --- Events ---------------------------------------------------------------------------


class EstimatedCountPaginator(_PaginatorBase):
    """A paginator that never counts a large result exactly.

    On PostgreSQL it first asks the planner how many rows the (filtered) query returns,
    which costs no table access; when the estimate is above ``count_limit`` the estimate
    is shown. Otherwise, and on other databases, it counts at most ``count_limit`` rows.
    ``count_is_estimate`` and ``count_is_capped`` tell the template to say "about" or
    "more than".
    """

    count_limit = 10_000
    count_is_estimate = False
    count_is_capped = False

    @cached_property
    def count(self) -> int:
        queryset: QuerySet[Any] = self.object_list  # type: ignore[assignment]
        estimate = _planner_row_estimate(queryset)
        if estimate > self.count_limit:
            self.count_is_estimate = True
            return estimate
        # Keeping the changelist's ORDER BY in the limited subquery lets PostgreSQL walk
        # a (column, position) index and stop after count_limit entries.
        counted = queryset[: self.count_limit + 1].count()
        if counted > self.count_limit:
            self.count_is_capped = True
            return self.count_limit
        return counted


def _planner_row_estimate(queryset: QuerySet[Any]) -> int:
    """PostgreSQL's estimate of the rows ``queryset`` returns; -1 on other databases."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return -1
    try:
        sql, params = queryset.order_by().query.get_compiler(using=queryset.db).as_sql()
    except EmptyResultSet:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        row = cursor.fetchone()
    if row is None:
        return -1
    plan = json.loads(row[0]) if isinstance(row[0], str) else row[0]
    return int(plan[0]["Plan"]["Plan Rows"])


class _RegistryChoicesFilter(admin.SimpleListFilter):
    """Choices from the event registry (no query), plus the value currently selected."""

    field_name = ""

    def registered_values(self) -> set[str]:
        raise NotImplementedError

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        values = self.registered_values()
        current = self.value()
        if current:
            values.add(current)
        return [(value, value) for value in sorted(values)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value:
            return queryset.filter(**{self.field_name: value})
        return queryset


class EventTypeFilter(_RegistryChoicesFilter):
    title = _("event type")
    parameter_name = field_name = "event_type"

    def registered_values(self) -> set[str]:
        from .events.registry import default_registry

        return set(default_registry.list_types())


class AggregateTypeFilter(_RegistryChoicesFilter):
    title = _("aggregate type")
    parameter_name = field_name = "aggregate_type"

    def registered_values(self) -> set[str]:
        from .events.registry import default_registry

        values = set()
        for _event_type, event_class in default_registry.items():
            field = event_class.model_fields.get("aggregate_type")
            if field is not None and isinstance(field.default, str) and field.default:
                values.add(field.default)
        return values


class UUIDInputFilter(admin.ListFilter):
    """A text box taking one UUID: the right filter for columns with too many values."""

    template = "admin/django_eventsource/uuid_input_filter.html"
    parameter_name = ""

    def __init__(
        self,
        request: HttpRequest,
        params: dict[str, list[str]],
        model: type[Model],
        model_admin: Any,
    ) -> None:
        super().__init__(request, params, model, model_admin)
        if self.parameter_name in params:
            raw = params.pop(self.parameter_name)[-1].strip()
            if raw:
                self.used_parameters[self.parameter_name] = raw

    def value(self) -> str | None:
        value = self.used_parameters.get(self.parameter_name)
        return None if value is None else str(value)

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return [self.parameter_name]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        try:
            uuid = UUID(value)
        except ValueError as exc:
            raise IncorrectLookupParameters(exc) from exc
        return queryset.filter(**{self.parameter_name: uuid})

    def choices(self, changelist: ChangeList) -> Iterator[dict[str, Any]]:
        # The template renders one GET form; the other active parameters travel along
        # as hidden inputs so that typing a UUID keeps the rest of the filtering.
        others = [
            (key, value)
            for key, values in changelist.params.items()
            if key not in (self.parameter_name, "p")
            for value in (values if isinstance(values, list) else [values])
        ]
        yield {
            "parameter_name": self.parameter_name,
            "value": self.value() or "",
            "hidden": others,
            "clear_url": changelist.get_query_string(remove=[self.parameter_name, "p"]),
        }


class TenantFilter(UUIDInputFilter):
    title = _("tenant id")
    parameter_name = "tenant_id"


class AggregateIdFilter(UUIDInputFilter):
    title = _("aggregate id")
    parameter_name = "aggregate_id"


class CorrelationIdFilter(UUIDInputFilter):
    title = _("correlation id")
    parameter_name = "correlation_id"


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
        return _pretty_json(obj.payload)

    @admin.display(description=_("metadata"))
    def metadata_json(self, obj: EventRecord) -> SafeString:
        return _pretty_json(obj.metadata)


# --- Dead letters ---------------------------------------------------------------------


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
        return _preformatted(obj.error_message)

    @admin.display(description=_("stack trace"))
    def stacktrace_text(self, obj: DeadLetter) -> SafeString:
        return _preformatted(obj.error_stacktrace)

    @admin.display(description=_("event data"))
    def event_data_json(self, obj: DeadLetter) -> SafeString:
        return _pretty_json(obj.event_data)

    @admin.action(description=_("Retry selected dead letters"), permissions=["change"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        from .projections.runner import retry_dead_letters

        ids = list(queryset.exclude(status=DeadLetter.Status.RESOLVED).values_list("id", flat=True))
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
    def mark_resolved(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        updated = queryset.exclude(status=DeadLetter.Status.RESOLVED).update(
            status=DeadLetter.Status.RESOLVED,
            resolved_at=timezone.now(),
            resolved_by=request.user.get_username(),
        )
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
    def delete_resolved(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        selected = queryset.count()
        deleted, _per_model = queryset.filter(status=DeadLetter.Status.RESOLVED).delete()
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


# --- Checkpoints ----------------------------------------------------------------------


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
        # One query for the whole page: the head position and the time of the oldest
        # unread event come from primary-key lookups in correlated subqueries.
        unread = EventRecord.objects.filter(position__gt=OuterRef("position")).order_by("position")
        return (
            super()
            .get_queryset(request)
            .annotate(
                head_position=Subquery(
                    EventRecord.objects.order_by("-position").values("position")[:1]
                ),
                oldest_unread_at=Subquery(unread.values("recorded_at")[:1]),
            )
        )

    @admin.display(description=_("lag (events)"))
    def lag_events(self, obj: Checkpoint) -> int:
        head: int | None = getattr(obj, "head_position", None)
        return max(0, (head or 0) - obj.position)

    @admin.display(description=_("lag (seconds)"))
    def lag_seconds(self, obj: Checkpoint) -> str:
        oldest: datetime | None = getattr(obj, "oldest_unread_at", None)
        if oldest is None:
            return "0"
        return f"{max(0.0, (timezone.now() - oldest).total_seconds()):.1f}"

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

        from .projections.runner import reset_projection

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


# --- Outbox ---------------------------------------------------------------------------


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
        return _preformatted(obj.last_error)

    @admin.display(description=_("event data"))
    def event_data_json(self, obj: OutboxMessage) -> SafeString:
        return _pretty_json(obj.event_data)

    @admin.action(description=_("Retry selected messages now"), permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        from .relay import retry_failed

        failed = list(
            queryset.filter(status=OutboxMessage.Status.FAILED).values_list("id", flat=True)
        )
        # Pending rows waiting out a backoff become due now; a row a relay has already
        # claimed is left to that relay.
        count = queryset.filter(status=OutboxMessage.Status.PENDING, claimed_by="").update(
            next_attempt_at=timezone.now()
        )
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


# --- Snapshots ------------------------------------------------------------------------


@admin.register(Snapshot)
class SnapshotAdmin(ReadOnlyAdminMixin, _SnapshotAdminBase):
    """Aggregate snapshots (read-only: they are rebuilt from events)."""

    list_display = ("aggregate_type", "aggregate_id", "version", "schema_version", "created_at")
    list_filter = (AggregateTypeFilter,)
    search_fields = ("=aggregate_id",)
    show_full_result_count = False
    actions = None
    readonly_fields = ("state_json",)
    exclude = ("state",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [name for name in super().get_readonly_fields(request, obj) if name != "state"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("state"))
    def state_json(self, obj: Snapshot) -> SafeString:
        return _pretty_json(obj.state)
