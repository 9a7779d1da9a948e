"""Aggregate snapshots, read-only: they are rebuilt from events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import Snapshot
from ._common import EstimatedCountPaginator, ReadOnlyAdminMixin, pretty_json
from .filters import (
    AggregateTypeFilter,
)

if TYPE_CHECKING:
    _SnapshotAdminBase = admin.ModelAdmin[Snapshot]
else:
    _SnapshotAdminBase = admin.ModelAdmin


@admin.register(Snapshot)
class SnapshotAdmin(ReadOnlyAdminMixin, _SnapshotAdminBase):
    """Aggregate snapshots (read-only: they are rebuilt from events)."""

    list_display = ("aggregate_type", "aggregate_id", "version", "schema_version", "created_at")
    list_filter = (AggregateTypeFilter,)
    search_fields = ("=aggregate_id",)
    paginator = EstimatedCountPaginator  # one snapshot per aggregate: possibly millions
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
        return pretty_json(obj.state)
