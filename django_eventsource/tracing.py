"""Optional OpenTelemetry tracing.

Spans are emitted only when ``EVENTSOURCE_TRACING`` is true, or left at ``None`` and
``opentelemetry-api`` is importable. With tracing off, ``span()`` returns a shared no-op
context manager: no OpenTelemetry call is made at all, and the setting is read once and
cached (``override_settings`` and other ``setting_changed`` senders refresh it).

The trace context of the code that saves an event travels inside the event's metadata
(key ``"trace_context"``, W3C ``traceparent``/``tracestate``), so a consumer's span can
join the trace of the request that saved the event.

Only ``opentelemetry-api`` is used. Without an SDK (or another implementation) installed
and configured, the API's tracer is a no-op and spans cost a few microseconds each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from .conf import conf

try:  # pragma: no cover - exercised in both states by the test suite
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Status, StatusCode

    OTEL_AVAILABLE = True
except ImportError:  # pragma: no cover
    OTEL_AVAILABLE = False

#: Metadata key holding the propagated trace context.
TRACE_CONTEXT_KEY = "trace_context"

_TRACER_NAME = "django_eventsource"
_noop: contextlib.nullcontext[None] = contextlib.nullcontext()
#: ``tracing_enabled()``'s cached answer; ``None`` until the setting is first read.
_enabled: bool | None = None


def tracing_enabled() -> bool:
    """Whether spans are emitted (``EVENTSOURCE_TRACING``, default: when OTel is importable)."""
    global _enabled
    if _enabled is None:
        try:
            setting = conf.TRACING
        except ImproperlyConfigured:
            # The framework-free parts may run without Django settings: the default.
            return OTEL_AVAILABLE
        _enabled = OTEL_AVAILABLE if setting is None else bool(setting) and OTEL_AVAILABLE
    return _enabled


@receiver(setting_changed)
def _forget_cached_setting(*, setting: str, **kwargs: Any) -> None:
    global _enabled
    if setting == "EVENTSOURCE_TRACING":
        _enabled = None


def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    parent: Mapping[str, Any] | None = None,
    links: Iterable[Mapping[str, Any]] = (),
    expected: tuple[type[BaseException], ...] = (),
) -> contextlib.AbstractContextManager[Any]:
    """A context manager around an OpenTelemetry span (a no-op yielding ``None`` when off).

    ``parent`` is an event's metadata carrying a propagated trace context: the span then
    joins that trace (as a child of the span that saved the event). ``links`` are more
    such metadata dicts; the span links to each trace context found in them. ``None``
    attribute values are left out, non-primitive ones are turned into strings. An
    exception leaving the block is recorded on the span, which is marked as an error,
    unless it is one of the ``expected`` types (an outcome such as "not found", not a
    failure): the span then only gets an ``outcome`` attribute naming it.
    """
    if not tracing_enabled():
        return _noop
    return _ActiveSpan(name, attributes, parent, links, expected)


class _ActiveSpan:
    """A started span made current for the ``with`` block, then ended.

    Hand-written rather than ``start_as_current_span`` because it runs on every save
    and load: one object instead of three nested generator context managers.
    """

    __slots__ = ("_expected", "_span", "_token")

    def __init__(
        self,
        name: str,
        attributes: Mapping[str, Any] | None,
        parent: Mapping[str, Any] | None,
        links: Iterable[Mapping[str, Any]],
        expected: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._expected = expected
        context = None
        if parent is not None:
            carrier = parent.get(TRACE_CONTEXT_KEY)
            if isinstance(carrier, dict) and carrier:
                context = propagate.extract(carrier)
        span_links = [link for link in map(_link, links) if link is not None] if links else None
        self._span = _tracer().start_span(name, context=context, links=span_links or None)
        # Attributes are set after the start so that a no-op span costs no cleaning.
        if attributes and self._span.is_recording():
            self._span.set_attributes(_clean(attributes))
        self._token: object = None

    def __enter__(self) -> Any:
        # The API's no-op tracer returns an invalid span: making it current would only
        # hide the caller's span from code inside the block, and costs a context switch.
        if self._span.get_span_context().is_valid:
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        try:
            if isinstance(exc, self._expected):
                self._span.set_attribute("outcome", type(exc).__name__)
            elif isinstance(exc, Exception):
                record_exception(self._span, exc)
        finally:
            if self._token is not None:
                otel_context.detach(self._token)  # type: ignore[arg-type]
            self._span.end()


_cached_tracer: Any = None


def _tracer() -> Any:
    # Before a tracer provider is installed this is the API's proxy tracer, which
    # switches to the real one as soon as the application installs it.
    global _cached_tracer
    if _cached_tracer is None:
        _cached_tracer = trace.get_tracer(_TRACER_NAME)
    return _cached_tracer


def _link(metadata: Mapping[str, Any]) -> Any:
    carrier = metadata.get(TRACE_CONTEXT_KEY)
    if not isinstance(carrier, dict) or not carrier:
        return None
    span_context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    return trace.Link(span_context) if span_context.is_valid else None


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
    """Set attributes on a span yielded by ``span()`` (does nothing for the no-op)."""
    if current is None or not current.is_recording():
        return
    current.set_attributes(_clean(attributes))


def record_exception(current: Any, exc: BaseException) -> None:
    """Record ``exc`` on a span yielded by ``span()`` and mark it as an error.

    For exceptions that are caught inside the span (an exception leaving the ``with``
    block is recorded already). Does nothing for the no-op span.
    """
    if current is None or not current.is_recording():
        return
    current.record_exception(exc)
    current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def current_trace_context() -> dict[str, str]:
    """The active span's context as W3C headers (empty when tracing is off or no span)."""
    if not tracing_enabled() or not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def with_failure_spans(
    scope: Callable[[], contextlib.AbstractContextManager[Any]],
    name: str,
    attributes: Mapping[str, Any],
) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """Wrap an ``attempt_scope`` factory so that each failed attempt leaves a span.

    Successful attempts cost nothing: the span ``name`` (with ``attributes`` and the
    attempt number) is only created once an attempt has failed, and carries its
    exception. With tracing off ``scope`` is returned unchanged.
    """
    if not tracing_enabled():
        return scope
    return _FailureSpans(scope, name, attributes)


class _FailureSpans:
    """``with_failure_spans``' factory: each call opens one attempt (class-based, since
    the projection runner enters one per event)."""

    __slots__ = ("_inner", "attempts", "attributes", "name", "scope")

    def __init__(
        self,
        scope: Callable[[], contextlib.AbstractContextManager[Any]],
        name: str,
        attributes: Mapping[str, Any],
    ) -> None:
        self.scope = scope
        self.name = name
        self.attributes = attributes
        self.attempts = 0
        self._inner: contextlib.AbstractContextManager[Any] | None = None

    def __call__(self) -> _FailureSpans:
        self.attempts += 1
        self._inner = self.scope()
        return self

    def __enter__(self) -> Any:
        assert self._inner is not None
        return self._inner.__enter__()

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> bool:
        assert self._inner is not None
        inner, self._inner = self._inner, None
        try:
            suppressed = bool(inner.__exit__(exc_type, exc, traceback))
        except Exception as raised:  # the scope itself failed on the way out
            self._record(raised)
            raise
        if isinstance(exc, Exception) and not suppressed:
            self._record(exc)
        return suppressed

    def _record(self, exc: BaseException) -> None:
        attributes = {**self.attributes, "attempt": self.attempts}
        with _ActiveSpan(self.name, attributes, None, ()) as current:
            record_exception(current, exc)


__all__ = [
    "OTEL_AVAILABLE",
    "TRACE_CONTEXT_KEY",
    "current_trace_context",
    "record_exception",
    "set_attributes",
    "span",
    "tracing_enabled",
    "with_failure_spans",
]
