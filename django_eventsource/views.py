"""Views users can mount in their URLconf."""

from __future__ import annotations

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from .conf import conf
from .health import get_health


@never_cache
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """JSON health report; HTTP 503 when a lag or dead-letter threshold is crossed or a
    projection is paused.

    Answers GET and HEAD (for load balancers that only look at the status code), with
    or without a session. Mount it with
    ``path("eventsource/health/", django_eventsource.views.health)``.

    It reveals projection names, positions and counts, the first line of a paused
    projection's last error (which may quote a value the handler choked on), and the
    pid, application name and state of sessions holding readers back; never event data.
    The SQL those sessions run is left out, unless ``EVENTSOURCE_HEALTH_SHOW_QUERIES`` is on and the
    request comes from an active staff user. Protect it like any internal endpoint.
    """
    report = get_health(include_queries=_may_see_queries(request))
    return JsonResponse(
        report.as_dict(), status=200 if report.healthy else 503, encoder=DjangoJSONEncoder
    )


def _may_see_queries(request: HttpRequest) -> bool:
    if not conf.HEALTH_SHOW_QUERIES:
        return False
    user = getattr(request, "user", None)  # absent without AuthenticationMiddleware
    return bool(user is not None and user.is_active and user.is_staff)
