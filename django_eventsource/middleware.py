"""``EventMetadataMiddleware``: stamp events saved during a request with its user and correlation id."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from .conf import conf
from .context import event_context


def _correlation_id(request: HttpRequest) -> uuid.UUID:
    raw = request.headers.get(conf.CORRELATION_ID_HEADER)
    if raw:
        try:
            return uuid.UUID(raw.strip())
        except ValueError:
            pass
    return uuid.uuid4()


def _actor_id(request: HttpRequest) -> str | None:
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return str(user.pk)
    return None


class EventMetadataMiddleware:
    """Put the request's user (as ``actor_id``) and correlation id on every saved event.

    The correlation id comes from the ``EVENTSOURCE_CORRELATION_ID_HEADER`` request
    header (``X-Correlation-ID``) when it holds a UUID, otherwise a new one is made; it is
    echoed in the response header. Place it after ``AuthenticationMiddleware``.
    """

    sync_capable = True
    async_capable = True

    def __init__(
        self, get_response: Callable[[HttpRequest], Any]
    ) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self.__acall__(request)
        correlation_id = _correlation_id(request)
        request.correlation_id = correlation_id  # type: ignore[attr-defined]
        with event_context(actor_id=_actor_id(request), correlation_id=correlation_id):
            response: HttpResponse = self.get_response(request)
        response[conf.CORRELATION_ID_HEADER] = str(correlation_id)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        correlation_id = _correlation_id(request)
        request.correlation_id = correlation_id  # type: ignore[attr-defined]
        user = await request.auser() if hasattr(request, "auser") else None
        actor = str(user.pk) if user is not None and user.is_authenticated else None
        get_response: Callable[[HttpRequest], Awaitable[HttpResponse]] = self.get_response
        with event_context(actor_id=actor, correlation_id=correlation_id):
            response = await get_response(request)
        response[conf.CORRELATION_ID_HEADER] = str(correlation_id)
        return response
