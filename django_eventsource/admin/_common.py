"""Pieces the event-store admins share: the read-only mixin, JSON and text rendering,
and the paginator that never counts a large table.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import EmptyResultSet, PermissionDenied
from django.core.paginator import Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.db.models import QuerySet
from django.forms import Media
from django.http import HttpRequest, HttpResponse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

if TYPE_CHECKING:
    from django.db.models import Model

    _PaginatorBase = Paginator[Any]
else:
    _PaginatorBase = Paginator


#: The stylesheet every event-source admin page loads (through ``ReadOnlyAdminMixin``):
#: long JSON, tracebacks and ids wrap or scroll inside the page instead of being cut.
#: Blocks rendered by :func:`pretty_json` and :func:`preformatted` carry its
#: ``eventsource-pre`` class; any template can use it for a ``<pre>`` of its own.
ADMIN_STYLESHEET = "django_eventsource/admin.css"
PRE_CLASS = "eventsource-pre"


def pretty_json(value: Any) -> SafeString:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder)
    return format_html('<pre class="{} eventsource-json">{}</pre>', PRE_CLASS, text)


def preformatted(text: str) -> SafeString:
    return format_html('<pre class="{} eventsource-text">{}</pre>', PRE_CLASS, text)


def short_id(value: object, length: int = 8) -> SafeString:
    """The start of an id, with the whole id on hover (``title``) and for copying."""
    if value is None:
        return format_html("{}", "-")
    text = str(value)
    return format_html(
        '<span class="eventsource-id" title="{}">{}</span>', text, text[:length] + "…"
    )


class QuietChangeList(ChangeList):
    """A change list that does not say "0 results (Show all)" when nothing is filtered.

    Django's search bar shows "N results (Show all)" whenever the full count is unknown
    (``show_full_result_count = False``), even on an unfiltered list, where it means
    nothing. Unfiltered, the shown count is the full count.
    """

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        if not (self.has_active_filters or self.query):
            self.full_result_count = self.result_count


#: Query parameters that page or order a list without filtering it.
_NOT_FILTERS = {"p", "o", "before", "after", "position"}


class ReadOnlyAdminMixin:
    """Every model field read-only, no add, no save: the change page is a detail page.

    POSTs to the change form are refused: saving an unchanged form would still write every
    column back and could overwrite what a runner or relay changed meanwhile.
    """

    @property
    def media(self) -> Media:
        base: Media = super().media  # type: ignore[misc]
        return base + Media(css={"all": [ADMIN_STYLESHEET]})

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return QuietChangeList

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet[Any],
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator[Any]:
        paginator: Paginator[Any] = super().get_paginator(  # type: ignore[misc]
            request, queryset, per_page, orphans, allow_empty_first_page
        )
        if isinstance(paginator, EstimatedCountPaginator):
            # Filtered, a page costs two queries: its rows and one limited count.
            paginator.filtered = bool(set(request.GET) - _NOT_FILTERS)
        return paginator

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        # Nothing on these pages can be changed: say "View", whatever the permissions.
        opts = self.model._meta  # type: ignore[attr-defined]
        context["title"] = _("View %s") % opts.verbose_name
        return super().render_change_form(  # type: ignore[misc,no-any-return]
            request, context, add, change, form_url, obj
        )

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


class EstimatedCountPaginator(_PaginatorBase):
    """A paginator that never counts a large result exactly.

    On PostgreSQL it first asks the planner how many rows the (filtered) query returns,
    which costs no table access; when the estimate is above ``count_limit`` the estimate
    is shown. Otherwise, on other databases, and for filtered lists (``filtered``), it
    counts at most ``count_limit`` rows.
    ``count_is_estimate`` and ``count_is_capped`` tell the template to say "about" or
    "more than".
    """

    count_limit = 10_000
    count_is_estimate = False
    count_is_capped = False
    #: Set for filtered lists: no estimate (the filter's index finds the rows), one
    #: count of at most ``count_limit`` rows in no particular order, which stops after
    #: that many; in the list's order it could sort every match first.
    filtered = False

    @cached_property
    def count(self) -> int:
        queryset: QuerySet[Any] = self.object_list  # type: ignore[assignment]
        if self.filtered:
            counted = queryset.order_by()[: self.count_limit + 1].count()
            self.count_is_capped = counted > self.count_limit
            return min(counted, self.count_limit)
        estimate = planner_row_estimate(queryset)
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


def planner_row_estimate(queryset: QuerySet[Any]) -> int:
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
