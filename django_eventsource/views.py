"""Views users can mount in their URLconf."""

from __future__ import annotations

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from .health import get_health


@never_cache
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """JSON health report; HTTP 503 when a lag or dead-letter threshold is crossed.

    Answers GET and HEAD (for load balancers that only look at the status code).

    Mount it with ``path("eventsource/health/", django_eventsource.views.health)``.
    It reveals projection names and counts, no event data; protect it like any
    internal endpoint.
    """
    report = get_health()
    return JsonResponse(
        report.as_dict(), status=200 if report.healthy else 503, encoder=DjangoJSONEncoder
    )
