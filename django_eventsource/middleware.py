"""``EventMetadataMiddleware``: stamp events saved in a request with its user and correlation id."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from .conf import conf
from .context import event_context


def _correlation_id(request: HttpRequest) -> uuid.UUID:
    """The request's correlation header when it holds a UUID, otherwise a new id."""
    raw = request.headers.get(conf.CORRELATION_ID_HEADER)
    if raw:
        try:
            return uuid.UUID(raw.strip())
        except ValueError:
            pass
    return uuid.uuid4()


def _actor_id(user: Any) -> str | None:
    if user is not None and getattr(user, "is_authenticated", False):
        return str(user.pk)
    return None


class EventMetadataMiddleware:
    """Put the request's user (as ``actor_id``) and correlation id on every saved event.

    The correlation id comes from the ``EVENTSOURCE_CORRELATION_ID_HEADER`` request
    header (default ``X-Correlation-ID``) when it holds a UUID; otherwise a new one is
    made. It is set as ``request.correlation_id`` and echoed in the response header.
    Place the middleware after ``AuthenticationMiddleware``. Works in sync and async
    stacks.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self.__acall__(request)
        correlation_id = _correlation_id(request)
        request.correlation_id = correlation_id  # type: ignore[attr-defined]
        actor_id = _actor_id(getattr(request, "user", None))
        with event_context(actor_id=actor_id, correlation_id=correlation_id):
            response: HttpResponseBase = self.get_response(request)
        response[conf.CORRELATION_ID_HEADER] = str(correlation_id)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        correlation_id = _correlation_id(request)
        request.correlation_id = correlation_id  # type: ignore[attr-defined]
        user = await request.auser() if hasattr(request, "auser") else None
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        with event_context(actor_id=_actor_id(user), correlation_id=correlation_id):
            response = await get_response(request)
        response[conf.CORRELATION_ID_HEADER] = str(correlation_id)
        return response


__all__ = ["EventMetadataMiddleware"]
