"""Dead letters: inspect each sequence, retry it, skip or resolve its head, clean up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from ..health import first_line
from ..models import DeadLetter, DeadLetterQuerySet
from ..projections.maintenance import RetryReport, retry_dead_letters, skip_dead_letter
from ._common import ReadOnlyAdminMixin, preformatted, pretty_json

if TYPE_CHECKING:
    _DeadLetterAdminBase = admin.ModelAdmin[DeadLetter]
else:
    _DeadLetterAdminBase = admin.ModelAdmin

#: Events of a sequence listed on a dead letter's page.
SEQUENCE_SHOWN = 200


def _waiting_subquery() -> Coalesce:
    """Parked events behind each row's sequence (0 outside a sequence), as a subquery."""
    parked = (
        DeadLetter.objects.parked_events()
        .filter(projection_name=OuterRef("projection_name"), sequence_key=OuterRef("sequence_key"))
        .exclude(sequence_key="")
        .order_by()
        .values("projection_name")
        .annotate(total=Count("id"))
        .values("total")
    )
    return Coalesce(Subquery(parked, output_field=IntegerField()), 0)


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdminMixin, _DeadLetterAdminBase):
    """Events a projection could not handle, with the events parked behind them."""

    list_display = (
        "id",
        "projection_name",
        "event_type",
        "error_first_line",
        "sequence_state",
        "status",
        "retry_count",
        "last_failed_at",
    )
    list_filter = ("status", "parked", "projection_name")
    search_fields = ("=event_id", "=sequence_key")
    ordering = ("-id",)
    actions = ("retry_selected", "skip_selected", "mark_resolved", "delete_resolved")
    change_form_template = "admin/django_eventsource/deadletter/change_form.html"
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
                    "sequence_key",
                    "parked",
                    "retry_count",
                    "first_failed_at",
                    "last_failed_at",
                    "resolved_at",
                    "resolved_by",
                ),
            },
        ),
        (_("Sequence"), {"fields": ("sequence_events",)}),
        (_("Error"), {"fields": ("error_message_text", "stacktrace_text")}),
        (_("Event data"), {"fields": ("event_data_json",)}),
    )
    readonly_fields = (
        "event_link",
        "sequence_events",
        "error_message_text",
        "stacktrace_text",
        "event_data_json",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeadLetter]:
        # One subquery, not one count per row of the page.
        return super().get_queryset(request).annotate(waiting=_waiting_subquery())

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

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        obj = self.get_object(request, object_id) if object_id else None
        extra = {
            **(extra_context or {}),
            "title": _("View %(name)s") % {"name": self.model._meta.verbose_name},
        }
        if obj is not None and obj.status != DeadLetter.Status.RESOLVED:
            head = self._head_of(obj)
            extra["sequence_head"] = head
            extra["is_head"] = head is not None and head.pk == obj.pk
            extra["can_act"] = self.has_change_permission(request, obj)
        return super().changeform_view(request, object_id, form_url, extra)

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view
        return [
            path(
                "<int:pk>/retry/",
                view(require_POST(self.retry_view)),
                name="{}_{}_retry".format(*info),
            ),
            path(
                "<int:pk>/skip/",
                view(require_POST(self.skip_view)),
                name="{}_{}_skip".format(*info),
            ),
            path(
                "<int:pk>/resolve/",
                view(require_POST(self.resolve_view)),
                name="{}_{}_resolve".format(*info),
            ),
            *super().get_urls(),
        ]

    # -- columns and fields ---------------------------------------------------------------

    @admin.display(description=_("error"))
    def error_first_line(self, obj: DeadLetter) -> str:
        return first_line(obj.error_message, 120)

    @admin.display(description=_("sequence"))
    def sequence_state(self, obj: DeadLetter) -> str:
        if obj.status == DeadLetter.Status.RESOLVED:
            return "-"
        if obj.parked:
            return str(_("parked"))
        waiting = int(getattr(obj, "waiting", 0))
        return ngettext("%(count)d waiting", "%(count)d waiting", waiting) % {"count": waiting}

    @admin.display(description=_("events of the sequence"))
    def sequence_events(self, obj: DeadLetter) -> SafeString:
        if not obj.sequence_key or obj.status == DeadLetter.Status.RESOLVED:
            return format_html("<p>{}</p>", _("No event waits behind this dead letter."))
        rows = list(
            DeadLetter.objects.using(obj._state.db)
            .in_sequence(obj.projection_name, obj.sequence_key)
            .only("id", "event_type", "global_position", "parked", "status")[: SEQUENCE_SHOWN + 1]
        )
        waiting = sum(1 for row in rows if row.parked)
        items = format_html_join(
            "",
            '<tr class="{}"><td><a href="{}">#{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    "eventsource-current" if row.pk == obj.pk else "",
                    reverse(
                        "admin:django_eventsource_deadletter_change",
                        args=[row.pk],
                        current_app=self.admin_site.name,
                    ),
                    row.pk,
                    row.global_position if row.global_position is not None else "-",
                    row.event_type,
                    _("parked") if row.parked else _("head: failed"),
                )
                for row in rows[:SEQUENCE_SHOWN]
            ),
        )
        summary = ngettext(
            "%(count)d event waits behind the head, in this order:",
            "%(count)d events wait behind the head, in this order:",
            waiting,
        ) % {"count": waiting}
        return format_html(
            '<p class="eventsource-sequence-summary">{}</p>'
            '<table class="eventsource-sequence"><thead><tr><th>{}</th><th>{}</th><th>{}</th>'
            "<th>{}</th></tr></thead><tbody>{}</tbody></table>",
            summary,
            _("dead letter"),
            _("position"),
            _("event type"),
            _("state"),
            items,
        )

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

    # -- the detail page's buttons --------------------------------------------------------

    def retry_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        obj = self._open_for_action(request, pk)
        self._report_retry(request, retry_dead_letters(ids=[obj.pk], resolved_by=_user(request)))
        return self._back_to(obj)

    def skip_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        obj = self._open_for_action(request, pk)
        self._skip(request, obj, skipped=True)
        return self._back_to(obj)

    def resolve_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        obj = self._open_for_action(request, pk)
        self._skip(request, obj, skipped=False)
        return self._back_to(obj)

    def _open_for_action(self, request: HttpRequest, pk: int) -> DeadLetter:
        obj = get_object_or_404(self.get_queryset(request), pk=pk)
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        return obj

    def _back_to(self, obj: DeadLetter) -> HttpResponseRedirect:
        return HttpResponseRedirect(
            reverse(
                "admin:django_eventsource_deadletter_change",
                args=[obj.pk],
                current_app=self.admin_site.name,
            )
        )

    @staticmethod
    def _head_of(obj: DeadLetter) -> DeadLetter | None:
        if not obj.sequence_key:
            return obj
        return (
            DeadLetter.objects.using(obj._state.db)
            .in_sequence(obj.projection_name, obj.sequence_key)
            .first()
        )

    def _skip(self, request: HttpRequest, obj: DeadLetter, *, skipped: bool) -> bool:
        try:
            following = skip_dead_letter(obj.pk, _user(request), skipped=skipped)
        except (LookupError, ValueError) as exc:
            self.message_user(request, str(exc).strip("'\""), messages.WARNING)
            return False
        done = _("skipped") if skipped else _("marked resolved")
        if following is None:
            message = _("Dead letter #%(pk)d %(done)s; its sequence is resolved.") % {
                "pk": obj.pk,
                "done": done,
            }
        else:
            message = _(
                "Dead letter #%(pk)d %(done)s; #%(next)d is now the head of its sequence, "
                "not handled yet: retry it to go on."
            ) % {"pk": obj.pk, "done": done, "next": following}
        self.message_user(request, message, messages.SUCCESS)
        return True

    def _report_retry(self, request: HttpRequest, report: RetryReport) -> None:
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
            message = ngettext(
                "%(count)d dead letter failed again and stays failed (%(details)s).",
                "%(count)d dead letters failed again and stay failed (%(details)s).",
                report.failed,
            ) % {"count": report.failed, "details": details}
            if report.waiting:
                message += " " + ngettext(
                    "%(count)d event keeps waiting behind it.",
                    "%(count)d events keep waiting behind them.",
                    report.waiting,
                ) % {"count": report.waiting}
            self.message_user(request, message, messages.ERROR)
        if not report.failed and not report.resolved:
            self.message_user(request, _("Nothing left to retry."), messages.INFO)

    # -- list actions ---------------------------------------------------------------------

    @admin.action(description=_("Retry selected dead letters"), permissions=["change"])
    def retry_selected(self, request: HttpRequest, queryset: DeadLetterQuerySet) -> None:
        ids = list(queryset.open().values_list("id", flat=True))
        if not ids:
            self.message_user(request, _("No unresolved dead letter selected."), messages.WARNING)
            return
        self._report_retry(request, retry_dead_letters(ids=ids, resolved_by=_user(request)))

    @admin.action(
        description=_("Skip selected dead letters (discard the head of their sequence)"),
        permissions=["change"],
    )
    def skip_selected(self, request: HttpRequest, queryset: DeadLetterQuerySet) -> None:
        self._skip_many(request, queryset, skipped=True)

    @admin.action(description=_("Mark selected dead letters resolved"), permissions=["change"])
    def mark_resolved(self, request: HttpRequest, queryset: DeadLetterQuerySet) -> None:
        self._skip_many(request, queryset, skipped=False)

    def _skip_many(
        self, request: HttpRequest, queryset: DeadLetterQuerySet, *, skipped: bool
    ) -> None:
        rows = list(queryset.open().order_by("global_position", "id"))
        if not rows:
            self.message_user(request, _("No unresolved dead letter selected."), messages.WARNING)
            return
        done: list[int] = []
        heads: list[int] = []
        for row in rows:
            try:
                following = skip_dead_letter(row.pk, _user(request), skipped=skipped)
            except (LookupError, ValueError) as exc:
                self.message_user(request, str(exc).strip("'\""), messages.WARNING)
                continue
            done.append(row.pk)
            if following is not None:
                heads.append(following)
        if not done:
            return
        template = (
            ngettext("%(count)d dead letter skipped.", "%(count)d dead letters skipped.", len(done))
            if skipped
            else ngettext(
                "%(count)d dead letter marked resolved.",
                "%(count)d dead letters marked resolved.",
                len(done),
            )
        )
        message = template % {"count": len(done)}
        new_heads = [pk for pk in heads if pk not in done]
        if new_heads:
            message += " " + _(
                "Now at the head of their sequence, not handled yet (retry them to go on): %(ids)s."
            ) % {"ids": ", ".join(f"#{pk}" for pk in new_heads)}
        self.message_user(request, message, messages.SUCCESS)

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


def _user(request: HttpRequest) -> str:
    return str(request.user.get_username())
