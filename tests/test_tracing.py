"""Tracing is a no-op when off and follows an event from the saving request when on."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from django.test import override_settings
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from django_eventsource import AggregateRepository, DjangoEventStore, InMemoryEventStore, tracing
from django_eventsource.bus.memory import InMemoryEventBus
from django_eventsource.outbox.relay import publish_outbox
from tests.testapp import projections
from tests.testapp.domain import Account, AccountOpened, MoneyDeposited

_exporter = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_exporter))


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Record this test's spans in an in-memory exporter.

    The library's tracer is swapped for the SDK's rather than installing a global
    provider (which can be set only once per process): other tests keep the API's
    no-op tracer.
    """
    monkeypatch.setattr(tracing, "_cached_tracer", _provider.get_tracer("django_eventsource"))
    _exporter.clear()
    yield _exporter
    _exporter.clear()


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def _one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = _named(exporter, name)
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _open_account(repo: AggregateRepository[Account], deposits: int = 1) -> Account:
    account = repo.create_new(uuid4())
    account.open("Ada")
    for n in range(deposits):
        account.deposit(Decimal(n + 1))
    repo.save(account)
    return account


# -- the helpers ---------------------------------------------------------------------------


@override_settings(EVENTSOURCE_TRACING=False)
def test_span_is_a_shared_no_op_when_tracing_is_off(spans: InMemorySpanExporter) -> None:
    with tracing.span("eventsource.append", {"aggregate_type": "Order"}) as current:
        tracing.set_attributes(current, event_count=1)
        assert current is None
    assert tracing.current_trace_context() == {}
    assert spans.get_finished_spans() == ()


def test_the_tracing_setting_is_read_again_when_it_changes(spans: InMemorySpanExporter) -> None:
    with override_settings(EVENTSOURCE_TRACING=False):
        assert not tracing.tracing_enabled()
    with override_settings(EVENTSOURCE_TRACING=True):
        assert tracing.tracing_enabled()
        with tracing.span("eventsource.load"):
            pass
    assert [s.name for s in spans.get_finished_spans()] == ["eventsource.load"]


@override_settings(EVENTSOURCE_TRACING=True)
def test_span_records_attributes_when_tracing_is_on(spans: InMemorySpanExporter) -> None:
    with tracing.span("eventsource.append", {"aggregate_type": "Order", "skipped": None}) as sp:
        tracing.set_attributes(sp, event_count=2, tenant_id=None)

    finished = _one(spans, "eventsource.append")
    assert _attributes(finished) == {"aggregate_type": "Order", "event_count": 2}


@override_settings(EVENTSOURCE_TRACING=True)
def test_an_exception_leaving_a_span_marks_it_as_an_error(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError), tracing.span("eventsource.save"):
        raise ValueError("boom")

    finished = _one(spans, "eventsource.save")
    assert finished.status.status_code is StatusCode.ERROR
    assert [e.name for e in finished.events] == ["exception"]


@override_settings(EVENTSOURCE_TRACING=True)
def test_an_expected_exception_is_an_outcome_not_an_error(spans: InMemorySpanExporter) -> None:
    with pytest.raises(LookupError), tracing.span("eventsource.load", expected=(LookupError,)):
        raise LookupError("no such aggregate")

    finished = _one(spans, "eventsource.load")
    assert finished.status.status_code is StatusCode.UNSET
    assert _attributes(finished) == {"outcome": "LookupError"}


@override_settings(EVENTSOURCE_TRACING=True)
def test_a_span_with_a_propagated_parent_joins_that_trace(spans: InMemorySpanExporter) -> None:
    with tracing.span("request"):
        carrier = tracing.current_trace_context()
    metadata = {tracing.TRACE_CONTEXT_KEY: carrier}

    with tracing.span("eventsource.redis.consume", parent=metadata):
        pass

    request_span, consume_span = spans.get_finished_spans()
    assert "traceparent" in carrier
    assert consume_span.context.trace_id == request_span.context.trace_id
    assert consume_span.parent is not None
    assert consume_span.parent.span_id == request_span.context.span_id


@override_settings(EVENTSOURCE_TRACING=True)
def test_a_span_links_to_the_traces_of_the_given_events(spans: InMemorySpanExporter) -> None:
    carriers = []
    for _ in range(2):
        with tracing.span("request"):
            carriers.append({tracing.TRACE_CONTEXT_KEY: tracing.current_trace_context()})

    with tracing.span("eventsource.outbox.publish", links=[*carriers, {}]):
        pass

    first, second, publish = spans.get_finished_spans()
    assert [link.context.trace_id for link in publish.links] == [
        first.context.trace_id,
        second.context.trace_id,
    ]
    assert publish.context.trace_id not in {first.context.trace_id, second.context.trace_id}


@override_settings(EVENTSOURCE_TRACING=True)
def test_only_failed_attempts_leave_a_span(spans: InMemorySpanExporter) -> None:
    scope = tracing.with_failure_spans(
        nullcontext, "eventsource.projection.handler_failed", {"projection": "Ledger"}
    )
    for outcome in ("fail", "fail", "succeed"):
        with pytest.raises(KeyError) if outcome == "fail" else nullcontext(), scope():
            if outcome == "fail":
                raise KeyError("missing")

    failed = _named(spans, "eventsource.projection.handler_failed")
    assert [_attributes(s) for s in failed] == [
        {"projection": "Ledger", "attempt": 1},
        {"projection": "Ledger", "attempt": 2},
    ]
    assert all(s.status.status_code is StatusCode.ERROR for s in failed)


@override_settings(EVENTSOURCE_TRACING=False)
def test_failure_spans_leave_the_attempt_scope_untouched_when_tracing_is_off() -> None:
    assert tracing.with_failure_spans(nullcontext, "x", {}) is nullcontext


def test_tracing_works_without_opentelemetry_installed() -> None:
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import django; django.setup()\n"
        "from django_eventsource import tracing\n"
        "assert not tracing.OTEL_AVAILABLE and not tracing.tracing_enabled()\n"
        "with tracing.span('eventsource.save') as current:\n"
        "    assert current is None\n"
        "assert tracing.current_trace_context() == {}\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_asking_for_tracing_without_opentelemetry_is_warning_w002(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django_eventsource.checks import check_tracing

    monkeypatch.setattr(tracing, "OTEL_AVAILABLE", False)
    with override_settings(EVENTSOURCE_TRACING=True):
        assert [m.id for m in check_tracing()] == ["django_eventsource.W002"]
    with override_settings(EVENTSOURCE_TRACING=None):
        assert check_tracing() == []


# -- the instrumented library --------------------------------------------------------------


@override_settings(EVENTSOURCE_TRACING=True)
def test_saving_stamps_the_trace_context_into_the_events_metadata(
    spans: InMemorySpanExporter,
) -> None:
    store = InMemoryEventStore()
    repo = AggregateRepository(store, Account)

    with tracing.span("request"):
        account = _open_account(repo, deposits=1)

    save = _one(spans, "eventsource.save")
    stored = store.get_events(account.aggregate_id, "Account").events
    for event in stored:
        carrier = event.metadata[tracing.TRACE_CONTEXT_KEY]
        assert f"{save.context.trace_id:032x}-{save.context.span_id:016x}" in carrier["traceparent"]


@override_settings(EVENTSOURCE_TRACING=False)
def test_saving_with_tracing_off_leaves_the_metadata_alone(spans: InMemorySpanExporter) -> None:
    store = InMemoryEventStore()
    with tracing.span("request"):
        account = _open_account(AggregateRepository(store, Account))

    assert all(e.metadata == {} for e in store.get_events(account.aggregate_id).events)


@pytest.mark.django_db
@override_settings(EVENTSOURCE_TRACING=True)
def test_save_and_load_emit_spans_with_their_figures(spans: InMemorySpanExporter) -> None:
    repo = AggregateRepository(DjangoEventStore(), Account)
    with tracing.span("request"):
        account = _open_account(repo, deposits=2)

    repo.load(account.aggregate_id)

    request = _one(spans, "request")
    save = _one(spans, "eventsource.save")
    append = _one(spans, "eventsource.append")
    load = _one(spans, "eventsource.load")
    assert save.parent is not None and save.parent.span_id == request.context.span_id
    assert append.parent is not None and append.parent.span_id == save.context.span_id
    appended = _attributes(append)
    assert (appended["aggregate_type"], appended["event_count"], appended["new_version"]) == (
        "Account",
        3,
        3,
    )
    assert _attributes(save)["aggregate_id"] == str(account.aggregate_id)
    loaded = _attributes(load)
    assert (loaded["aggregate_id"], loaded["events_read"], loaded["snapshot_used"]) == (
        str(account.aggregate_id),
        3,
        False,
    )


@pytest.mark.django_db
@override_settings(
    EVENTSOURCE_TRACING=True,
    EVENTSOURCE_PROJECTIONS=[projections.FLAKY],
    EVENTSOURCE_MAX_RETRIES=2,
    EVENTSOURCE_RETRY_BACKOFF=0,
)
def test_a_projection_batch_and_each_failed_attempt_emit_spans(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_eventsource.projections.runner import run_projections

    monkeypatch.setattr(projections, "POISON_AMOUNTS", {Decimal(2)})
    store = DjangoEventStore()
    projections.open_account(store, deposits=(1, 2))

    run_projections(once=True)

    batch = _one(spans, "eventsource.projection.batch")
    figures = _attributes(batch)
    assert figures["projection"] == "FlakyLedgerProjection"
    assert figures["batch_size"] == 3
    assert (figures["from_position"], figures["to_position"]) == (0, store.get_global_position())
    assert (figures["handled"], figures["dead_lettered"]) == (2, 1)
    failed = _named(spans, "eventsource.projection.handler_failed")
    assert [_attributes(s)["attempt"] for s in failed] == [1, 2]
    assert all(s.parent is not None and s.parent.span_id == batch.context.span_id for s in failed)
    assert {_attributes(s)["event_type"] for s in failed} == {"MoneyDeposited"}
    assert "cannot book 2" in failed[0].events[0].attributes["exception.message"]  # type: ignore[index]


@pytest.mark.django_db
@override_settings(EVENTSOURCE_TRACING=True)
def test_publishing_the_outbox_emits_a_span_linked_to_the_saving_trace(
    spans: InMemorySpanExporter,
) -> None:
    repo = AggregateRepository(DjangoEventStore(outbox_enabled=True), Account)
    with tracing.span("request"):
        _open_account(repo, deposits=0)

    publish_outbox(once=True, bus=InMemoryEventBus())

    request = _one(spans, "request")
    publish = _one(spans, "eventsource.outbox.publish")
    assert _attributes(publish)["event_count"] == 1
    assert [link.context.trace_id for link in publish.links] == [request.context.trace_id]


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_an_event_is_traced_from_the_saving_request_to_the_redis_consumer(
    spans: InMemorySpanExporter, redis_url: str
) -> None:
    from django_eventsource.bus.redis import RedisEventBus, RedisEventBusConfig
    from django_eventsource.projections.runner import run_projections

    config = RedisEventBusConfig(redis_url=redis_url, stream_prefix=f"test-{uuid4().hex}")
    consumer = RedisEventBus(config)
    received: list[str] = []
    consumer.subscribe(AccountOpened, lambda event: received.append(event.event_type))
    consumer.subscribe(MoneyDeposited, lambda event: received.append(event.event_type))
    try:
        with override_settings(
            EVENTSOURCE_TRACING=True, EVENTSOURCE_PROJECTIONS=[projections.SUMMARY]
        ):
            repo = AggregateRepository(DjangoEventStore(outbox_enabled=True), Account)
            with tracing.span("request"):
                _open_account(repo, deposits=1)
            run_projections(once=True)
            publish_outbox(once=True, bus=RedisEventBus(config))
            consumer.consume_once()
    finally:
        consumer.client.delete(config.stream_name, config.dead_letter_stream)
        consumer.close()

    assert received == ["AccountOpened", "MoneyDeposited"]
    request = _one(spans, "request")
    save = _one(spans, "eventsource.save")
    assert _one(spans, "eventsource.append").context.trace_id == request.context.trace_id
    batch = _one(spans, "eventsource.projection.batch")
    assert _attributes(batch)["batch_size"] == 2
    outbox = _one(spans, "eventsource.outbox.publish")
    redis_publish = _one(spans, "eventsource.redis.publish")
    assert redis_publish.parent is not None
    assert redis_publish.parent.span_id == outbox.context.span_id
    consumed = _named(spans, "eventsource.redis.consume")
    assert [_attributes(s)["event_type"] for s in consumed] == ["AccountOpened", "MoneyDeposited"]
    for span in consumed:
        assert span.context.trace_id == request.context.trace_id
        assert span.parent is not None and span.parent.span_id == save.context.span_id
