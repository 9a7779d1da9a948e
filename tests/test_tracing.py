"""Tracing is a no-op when off and joins the saving request's trace when on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import override_settings
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from django_eventsource import tracing

_exporter = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_exporter))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Route this test's spans to an in-memory exporter."""
    # The global provider can be set once per process; later tests reuse it.
    trace.set_tracer_provider(_provider)
    _exporter.clear()
    yield _exporter
    _exporter.clear()


@override_settings(EVENTSOURCE_TRACING=False)
def test_span_is_a_shared_no_op_when_tracing_is_off(spans: InMemorySpanExporter) -> None:
    with tracing.span("eventsource.append", {"aggregate_type": "Order"}) as current:
        assert current is None
    assert tracing.current_trace_context() == {}
    assert spans.get_finished_spans() == ()


@override_settings(EVENTSOURCE_TRACING=True)
def test_span_records_attributes_when_tracing_is_on(spans: InMemorySpanExporter) -> None:
    with tracing.span("eventsource.append", {"aggregate_type": "Order", "skipped": None}) as sp:
        tracing.set_attributes(sp, event_count=2)

    (finished,) = spans.get_finished_spans()
    assert finished.name == "eventsource.append"
    assert dict(finished.attributes or {}) == {"aggregate_type": "Order", "event_count": 2}


@override_settings(EVENTSOURCE_TRACING=True)
def test_a_span_with_a_propagated_parent_joins_that_trace(spans: InMemorySpanExporter) -> None:
    with tracing.span("request"):
        carrier = tracing.current_trace_context()
    metadata = {tracing.TRACE_CONTEXT_KEY: carrier}

    with tracing.span("eventsource.consume", parent=metadata):
        pass

    request_span, consume_span = spans.get_finished_spans()
    assert "traceparent" in carrier
    assert consume_span.context.trace_id == request_span.context.trace_id
    assert consume_span.parent is not None
    assert consume_span.parent.span_id == request_span.context.span_id
