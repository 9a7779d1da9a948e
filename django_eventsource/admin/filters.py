"""List filters for the event-store admins: registry choices and single-UUID text boxes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

if TYPE_CHECKING:
    from django.contrib.admin.views.main import ChangeList
    from django.db.models import Model


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
        from ..events.registry import default_registry

        return set(default_registry.list_types())


class AggregateTypeFilter(_RegistryChoicesFilter):
    title = _("aggregate type")
    parameter_name = field_name = "aggregate_type"

    def registered_values(self) -> set[str]:
        from ..events.registry import default_registry

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


BEFORE_VAR = "before"
AFTER_VAR = "after"
POSITION_VAR = "position"


class PositionCursorFilter(admin.ListFilter):
    """The events list's keyset paging: ``?before=N``, ``?after=N`` or ``?position=N``.

    Nothing in the sidebar (an empty template); it only bounds the position range, which the
    ``(column, position)`` indexes and the primary key answer directly at any depth.
    ``EventChangeList`` turns ``after`` into an ascending read.
    """

    title = _("position")
    # Django keeps only filters with output; this one's template renders nothing.
    template = "admin/django_eventsource/no_output_filter.html"
    parameters = (BEFORE_VAR, AFTER_VAR, POSITION_VAR)
    lookups = {BEFORE_VAR: "position__lt", AFTER_VAR: "position__gt", POSITION_VAR: "position__lte"}

    def __init__(
        self,
        request: HttpRequest,
        params: dict[str, list[str]],
        model: type[Model],
        model_admin: Any,
    ) -> None:
        super().__init__(request, params, model, model_admin)
        for name in self.parameters:
            if name in params:
                raw = params.pop(name)[-1].strip()
                try:
                    value = int(raw)
                except ValueError as exc:
                    raise IncorrectLookupParameters(f"{name} must be a position") from exc
                if value < 0:
                    raise IncorrectLookupParameters(f"{name} must be a position")
                self.used_parameters[name] = value

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return list(self.parameters)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        bounds = {self.lookups[name]: value for name, value in self.used_parameters.items()}
        return queryset.filter(**bounds) if bounds else queryset

    def choices(self, changelist: ChangeList) -> Iterator[dict[str, Any]]:
        return iter(())
