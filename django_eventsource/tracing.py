"""Optional OpenTelemetry tracing.

Spans are emitted only when ``EVENTSOURCE_TRACING`` is true, or left at ``None`` and
``opentelemetry-api`` is importable. With tracing off, ``span()`` returns a shared no-op
context manager: no OpenTelemetry call is made at all.

The trace context of the code that saves an event travels inside the event's metadata
(key ``"trace_context"``, W3C ``traceparent``/``tracestate``), so a consumer's span can
join the trace of the request that saved the event.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from .conf import conf

try:  # pragma: no cover - exercised in both states by the test suite
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace

    OTEL_AVAILABLE = True
except ImportError:  # pragma: no cover
    OTEL_AVAILABLE = False

#: Metadata key holding the propagated trace context.
TRACE_CONTEXT_KEY = "trace_context"

_TRACER_NAME = "django_eventsource"
_noop = contextlib.nullcontext()


def tracing_enabled() -> bool:
    """Whether spans are emitted (``EVENTSOURCE_TRACING``, default: when OTel is importable)."""
    setting = conf.TRACING
    if setting is None:
        return OTEL_AVAILABLE
    return bool(setting) and OTEL_AVAILABLE


def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    parent: Mapping[str, Any] | None = None,
) -> contextlib.AbstractContextManager[Any]:
    """A context manager around an OpenTelemetry span (a no-op when tracing is off).

    ``parent`` is a metadata dict carrying a propagated trace context: the span then
    joins that trace.
    """
    if not tracing_enabled():
        return _noop
    return _real_span(name, attributes or {}, parent)


@contextlib.contextmanager
def _real_span(
    name: str, attributes: Mapping[str, Any], parent: Mapping[str, Any] | None
) -> Iterator[Any]:
    tracer = trace.get_tracer(_TRACER_NAME)
    token = None
    if parent is not None:
        carrier = parent.get(TRACE_CONTEXT_KEY)
        if isinstance(carrier, dict) and carrier:
            token = otel_context.attach(propagate.extract(carrier))
    try:
        with tracer.start_as_current_span(name, attributes=_clean(attributes)) as current:
            yield current
    finally:
        if token is not None:
            otel_context.detach(token)


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, bool | int | float | str):
            cleaned[key] = value
        else:
            cleaned[key] = str(value)
    return cleaned


def set_attributes(current: Any, **attributes: Any) -> None:
    """Set attributes on a span returned by ``span()`` (ignores the no-op case)."""
    if current is None or not tracing_enabled():
        return
    current.set_attributes(_clean(attributes))


def record_exception(current: Any, exc: BaseException) -> None:
    """Record ``exc`` on a span returned by ``span()`` (ignores the no-op case)."""
    if current is None or not tracing_enabled():
        return
    current.record_exception(exc)


def current_trace_context() -> dict[str, str]:
    """The active span's context as W3C headers (empty when tracing is off or no span)."""
    if not tracing_enabled():
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


__all__ = [
    "OTEL_AVAILABLE",
    "TRACE_CONTEXT_KEY",
    "current_trace_context",
    "record_exception",
    "set_attributes",
    "span",
    "tracing_enabled",
]
