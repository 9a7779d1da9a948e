"""The outbox relay: publishes committed outbox rows to the event bus.

``publish_outbox()`` is the one function behind the ``publish_outbox`` management command
and the Celery task of the same name. Each batch goes through three short steps:

1. claim due rows in a short transaction (``SELECT … FOR UPDATE SKIP LOCKED`` on
   PostgreSQL), so several relays share the work instead of duplicating it;
2. publish them to the bus outside any transaction;
3. mark them published (or count a failed attempt with exponential backoff and full
   jitter; the first failed attempt that comes ``EVENTSOURCE_OUTBOX_GIVE_UP_AFTER``
   seconds or more after a row's first one makes the row ``failed``: it stays visible
   and can be put back with ``retry_failed``).

After a full batch the relay marks it published and claims the next one in the same
transaction (one commit instead of two); a relay that stops gives that claim back. With a
bus that publishes serialized events (Redis), the bus sends one batch while the relay
marks the previous one and claims the next, so database and bus round trips overlap.

A claim is a lease of ``EVENTSOURCE_OUTBOX_CLAIM_LEASE`` seconds that a heartbeat thread
of the live relay renews every third of the lease (never past
``EVENTSOURCE_OUTBOX_CLAIM_TIMEOUT`` from the claim, so a relay stuck in a bus call lets
go too). A relay that dies leaves its claim behind; another relay takes it over once the
lease has run out. Delivery is therefore at-least-once: a consumer must treat
``event_id`` as its idempotency key.

The claim made ahead (while a batch is in flight) reads at most ``LOOK_AHEAD_SCAN``
batches' worth of due rows: when a few hot aggregates fill the backlog, every row it
meets waits for a row in flight, and an unbounded look-ahead would read the whole
backlog only to find nothing.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from django.db import close_old_connections, connections
from django.utils import timezone

from .. import tracing
from .._runtime import worker_id
from ..bus import get_event_bus
from ..bus.interface import EventBus
from ..conf import conf
from ..events.base import DomainEvent
from ..events.registry import EventRegistry, resolve_registry
from ..events.serialization import StoredEventData
from ..exceptions import EventBusError
from .repository import OutboxRepository
from .rows import (
    OutboxEntry,
    OutboxFailure,
    ProgressCallback,
    RelayReport,
    backoff_delay,
    gives_up,
)

# The logger keeps the name it had before the relay moved into ``outbox``: operators
# configure and filter logging by it (docs/observability.md).
logger = logging.getLogger("django_eventsource.relay")


@runtime_checkable
class SerializedEventPublisher(Protocol):
    """A bus that can publish events straight from their ``to_dict()`` form.

    The relay prefers this path (``RedisEventBus`` offers it): it skips rebuilding event
    objects only to serialize them again.
    """

    def publish_serialized(self, events: Sequence[Mapping[str, Any]]) -> None: ...


#: The claim made ahead examines at most this many batches' worth of due rows (``None``:
#: no bound, the behaviour before the bound existed; kept for the benchmark's comparison).
LOOK_AHEAD_SCAN: int | None = 4


def _default_repository() -> OutboxRepository:
    # Imported on use: the relay itself, with an in-memory repository, runs before
    # Django's models are loaded.
    from .django import DjangoOutboxRepository

    return DjangoOutboxRepository()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class OutboxRelay:
    """One relay: a claim name, a bus and a repository. ``publish_outbox`` drives it.

    With a bus that publishes serialized events (``SerializedEventPublisher``, such as
    ``RedisEventBus``), the relay overlaps the two kinds of waiting: a worker thread
    sends one batch to the bus while this thread marks the previous batch published
    and claims the next one. The database connection stays on the calling thread; the
    bus sees one call at a time. ``overlap=False`` turns this off.
    """

    def __init__(
        self,
        bus: EventBus,
        repository: OutboxRepository | None = None,
        *,
        batch_size: int | None = None,
        registry: EventRegistry | None = None,
        name: str | None = None,
        overlap: bool | None = None,
    ) -> None:
        self.bus = bus
        self.repository = repository or _default_repository()
        self.batch_size = batch_size or conf.OUTBOX_BATCH_SIZE
        self.registry = resolve_registry(registry)
        self.name = name or worker_id()
        self.overlap = isinstance(bus, SerializedEventPublisher) if overlap is None else overlap
        #: The next batch, claimed together with marking the previous one published.
        self._claimed_ahead: list[OutboxEntry] | None = None
        #: Rows the bus has accepted that are not marked published yet (overlap only;
        #: the next call marks them while the bus works on its own batch).
        self._unmarked: list[int] = []
        self._executor: ThreadPoolExecutor | None = None
        #: Rows this relay holds a claim on → when it claimed them (monotonic seconds),
        #: renewed by the heartbeat thread.
        self._held: dict[int, float] = {}
        self._held_lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None
        self._heartbeat_stop = threading.Event()

    @property
    def claim_timeout(self) -> float:
        """Seconds after which another relay may take over a claim of this one.

        The renewed lease when the repository can renew claims, else the claim timeout.
        """
        timeout = conf.OUTBOX_CLAIM_TIMEOUT
        if self.repository.supports_claim_renewal:
            return min(conf.OUTBOX_CLAIM_LEASE, timeout)
        return timeout

    def _hold(self, entries: Sequence[OutboxEntry]) -> None:
        if not entries or not self.repository.supports_claim_renewal:
            return
        now = time.monotonic()
        with self._held_lock:
            for entry in entries:
                self._held.setdefault(entry.id, now)
        if self._heartbeat is None:
            self._heartbeat_stop.clear()
            self._heartbeat = threading.Thread(
                target=self._beat, name="eventsource-relay-heartbeat", daemon=True
            )
            self._heartbeat.start()

    def _let_go(self, ids: Sequence[int]) -> None:
        with self._held_lock:
            for outbox_id in ids:
                self._held.pop(outbox_id, None)

    def renew_claims(self) -> int:
        """Renew the claims this relay holds (what the heartbeat does); returns how many.

        A claim older than ``EVENTSOURCE_OUTBOX_CLAIM_TIMEOUT`` is no longer renewed.
        """
        oldest = time.monotonic() - conf.OUTBOX_CLAIM_TIMEOUT
        with self._held_lock:
            ids = [outbox_id for outbox_id, since in self._held.items() if since > oldest]
        if not ids:
            return 0
        return self.repository.renew_claims(ids, self.name, now=timezone.now())

    def _beat(self) -> None:
        try:
            while not self._heartbeat_stop.wait(self.claim_timeout / 3):
                try:
                    self.renew_claims()
                except Exception:  # the next beat tries again; the lease covers two misses
                    logger.warning("Outbox relay %s could not renew its claims", self.name)
        finally:
            # This thread's own database connections.
            connections.close_all()

    def _stop_heartbeat(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            self._heartbeat_stop.set()
            heartbeat.join()

    def run_batch(self, exclude_ids: set[int] | None = None) -> tuple[RelayReport, int]:
        """Claim, publish and settle one batch; returns the report and the rows claimed.

        Ids of rows whose attempt failed are added to ``exclude_ids`` when given, so a
        single pass attempts each row at most once. After a full batch the next one is
        already claimed (and is what the next call publishes): call ``finish()`` when no
        call follows.
        """
        report = RelayReport()
        # An empty claim ahead proves little when it ran while a batch was being sent:
        # the successors of the rows in flight could not be claimed then.
        entries, self._claimed_ahead = self._claimed_ahead or [], None
        if not entries:
            entries = self.repository.claim_due(
                self.name,
                self.batch_size,
                now=timezone.now(),
                claim_timeout=self.claim_timeout,
                exclude_ids=exclude_ids or (),
            )
            self._hold(entries)
        if not entries:
            return report, 0
        sendable, failures, held = self._prepare(entries)
        if self.overlap and sendable:
            sending = self._worker().submit(contextvars.copy_context().run, self._send, sendable)
            try:
                # While the bus works: settle the previous batch and, after a full claim
                # (more rows are probably due), claim the next one. The rows being sent
                # are still claimed, so the new claim cannot overtake them.
                previous, self._unmarked = self._unmarked, []
                report.published += self._mark(
                    previous, claim_next=len(entries) == self.batch_size, exclude=exclude_ids
                )
            finally:
                error = sending.result()
        else:
            error = self._send(sendable) if sendable else None
        if error is not None:
            failures.extend(self._failure(entry, _describe(error)) for entry in sendable)
            sendable = []
        published_ids = [entry.id for entry in sendable]
        if self.overlap and self._claimed_ahead:
            self._unmarked = published_ids  # marked by the next call, which follows at once
        else:
            # A full batch went out: more rows are probably due, so the next batch is
            # claimed in the same transaction that marks this one published.
            claim_next = not self.overlap and len(published_ids) == self.batch_size
            ids, self._unmarked = [*self._unmarked, *published_ids], []
            report.published += self._mark(ids, claim_next=claim_next, exclude=exclude_ids)
        if held:
            self.repository.release([entry.id for entry in held])
            self._let_go([entry.id for entry in held])
        if failures:
            now = timezone.now()
            give_up_after, max_attempts = conf.OUTBOX_GIVE_UP_AFTER, conf.OUTBOX_MAX_ATTEMPTS
            report.failed = self.repository.record_failures(
                failures, now=now, give_up_after=give_up_after, max_attempts=max_attempts
            )
            report.retried = len(failures) - report.failed
            self._log_failures(
                entries, failures, now, give_up_after=give_up_after, max_attempts=max_attempts
            )
            self._let_go([f.id for f in failures])
            if exclude_ids is not None:
                exclude_ids.update(f.id for f in failures)
        return report, len(entries)

    def finish(self) -> int:
        """Settle what a stopping relay holds; returns how many rows it marked published.

        Rows the bus has accepted are marked published; a batch claimed ahead that will
        not be published is given back at once, without waiting for the claim timeout.
        """
        try:
            marked, self._unmarked = self._mark(self._unmarked, claim_next=False), []
        finally:
            try:
                if self._claimed_ahead:
                    self.repository.release([entry.id for entry in self._claimed_ahead])
                    self._let_go([entry.id for entry in self._claimed_ahead])
                self._claimed_ahead = None
                if self._executor is not None:
                    self._executor.shutdown()
                    self._executor = None
            finally:
                self._stop_heartbeat()
        return marked

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="eventsource-relay")
        return self._executor

    def _send(self, entries: list[OutboxEntry]) -> Exception | None:
        """Publish ``entries``; returns the bus's exception instead of raising it."""
        # Linked to the traces that saved the events (one batch, many traces).
        links = [_saved_metadata(entry) for entry in entries] if tracing.tracing_enabled() else []
        with tracing.span(
            "eventsource.outbox.publish",
            {"event_count": len(entries), "relay": self.name},
            links=links,
        ) as current:
            try:
                self._publish(entries)
            except Exception as exc:  # any bus failure is retried later
                tracing.record_exception(current, exc)
                return exc
        return None

    def _mark(self, ids: list[int], *, claim_next: bool, exclude: set[int] | None = None) -> int:
        """Mark ``ids`` published; with ``claim_next``, claim the next batch in the same
        transaction (one commit instead of two)."""
        now = timezone.now()
        if claim_next:
            marked, self._claimed_ahead = self.repository.mark_published_and_claim(
                ids,
                self.name,
                self.batch_size,
                now=now,
                claim_timeout=self.claim_timeout,
                exclude_ids=exclude or (),
                scan_limit=None if LOOK_AHEAD_SCAN is None else LOOK_AHEAD_SCAN * self.batch_size,
            )
            self._hold(self._claimed_ahead)
        else:
            marked = self.repository.mark_published_many(ids, now=now)
        self._let_go(ids)
        if marked:
            logger.info(
                "Outbox relay %s published %d rows",
                self.name,
                marked,
                extra={"relay": self.name, "count": marked},
            )
        return marked

    def _log_failures(
        self,
        entries: list[OutboxEntry],
        failures: list[OutboxFailure],
        now: datetime,
        *,
        give_up_after: float | None,
        max_attempts: int | None,
    ) -> None:
        """One line per failed row: WARNING while it will be retried, ERROR once failed."""
        by_id = {entry.id: entry for entry in entries}
        for failure in failures:
            entry = by_id[failure.id]
            attempt = entry.retry_count + 1
            first_failed_at = entry.first_failed_at or now
            extra = {
                "relay": self.name,
                "outbox_id": entry.id,
                "event_id": str(entry.event_id),
                "event_type": entry.event_type,
                "attempt": attempt,
            }
            if gives_up(
                first_failed_at,
                attempt,
                now,
                give_up_after=give_up_after,
                max_attempts=max_attempts,
            ):
                failing_for = (now - first_failed_at).total_seconds()
                level = logging.ERROR
                outcome = f"marked failed after {attempt} attempts in {failing_for:.0f}s"
            else:
                retry_at = failure.next_attempt_at.isoformat(timespec="seconds")
                level = logging.WARNING
                outcome = f"failed on attempt {attempt}, retry at {retry_at}"
            logger.log(
                level,
                "Outbox row %d (event %s, %s) %s: %s",
                entry.id,
                entry.event_id,
                entry.event_type,
                outcome,
                failure.error,
                extra=extra,
            )

    def _failure(self, entry: OutboxEntry, error: str) -> OutboxFailure:
        delay = backoff_delay(entry.retry_count + 1)
        return OutboxFailure(entry.id, error, timezone.now() + timedelta(seconds=delay))

    def _prepare(
        self, entries: list[OutboxEntry]
    ) -> tuple[list[OutboxEntry], list[OutboxFailure], list[OutboxEntry]]:
        """Split claimed rows into sendable, failed-to-decode and held-back rows.

        Only a bus without the serialized path needs event objects; a row that no longer
        decodes fails on its own, and the later rows of its aggregate are released
        untouched so they cannot overtake it.
        """
        if isinstance(self.bus, SerializedEventPublisher):
            return entries, [], []
        sendable: list[OutboxEntry] = []
        failures: list[OutboxFailure] = []
        held: list[OutboxEntry] = []
        broken: set[tuple[str, Any]] = set()
        for entry in entries:
            stream = (entry.aggregate_type, entry.aggregate_id)
            if stream in broken:
                held.append(entry)
                continue
            try:
                self.registry.deserialize(dict(entry.event_data))
            except Exception as exc:  # recorded on the row
                broken.add(stream)
                failures.append(self._failure(entry, _describe(exc)))
            else:
                sendable.append(entry)
        return sendable, failures, held

    def _publish(self, entries: list[OutboxEntry]) -> None:
        if isinstance(self.bus, SerializedEventPublisher):
            self.bus.publish_serialized([entry.event_data for entry in entries])
            return
        events: list[DomainEvent] = [
            self.registry.deserialize(dict(entry.event_data)) for entry in entries
        ]
        self.bus.publish(events)


def _saved_metadata(entry: OutboxEntry) -> Mapping[str, Any]:
    """The metadata of an entry's event, for linking to the trace that saved it.

    Stored JSON without a trace context is not decoded only to find none.
    """
    data = entry.event_data
    if isinstance(data, StoredEventData) and tracing.TRACE_CONTEXT_KEY not in data.text:
        return {}
    metadata = data.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def _cleanup(repository: OutboxRepository) -> int:
    days = conf.OUTBOX_RETENTION_DAYS
    if days is None:
        return 0
    return repository.cleanup_published(days=days)


def publish_outbox(
    *,
    once: bool = False,
    batch_size: int | None = None,
    stop_event: threading.Event | None = None,
    bus: EventBus | None = None,
    progress: ProgressCallback | None = None,
    repository: OutboxRepository | None = None,
) -> RelayReport:
    """Publish pending outbox rows to the event bus.

    With ``once=True``, publish every row that is due now (each attempted at most once)
    and return. Otherwise loop until ``stop_event`` is set, waiting
    ``EVENTSOURCE_POLL_INTERVAL`` seconds whenever there is nothing to do (or the bus is
    failing). Published rows older than ``EVENTSOURCE_OUTBOX_RETENTION_DAYS`` are deleted
    once per pass and then at most once an hour.

    ``bus`` defaults to ``get_event_bus()``; ``progress`` is called after every batch
    with the running totals. Returns the totals.
    """
    if bus is None:
        bus = get_event_bus()
        if bus is None:
            raise EventBusError(
                "publish_outbox has no event bus: set EVENTSOURCE_EVENT_BUS "
                "('memory', 'redis' or a dotted path)."
            )
    relay = OutboxRelay(bus, repository, batch_size=batch_size)
    stop = stop_event or threading.Event()
    total = RelayReport()
    attempted: set[int] | None = set() if once else None
    last_cleanup: datetime | None = None
    try:
        while not stop.is_set():
            if last_cleanup is None or timezone.now() - last_cleanup > timedelta(hours=1):
                total.cleaned += _cleanup(relay.repository)
                last_cleanup = timezone.now()
            report, claimed = relay.run_batch(attempted)
            total.add(report)
            if claimed and progress is not None:
                progress(total)
            if once and claimed == 0:
                break
            if not once:
                # A short batch means the backlog is drained; a batch that only failed
                # means the bus is down. Either way, wait before polling again, and
                # drop an obsolete connection first (not between the batches of a
                # backlog: with CONN_MAX_AGE = 0 that would reconnect for every batch).
                bus_failing = report.published == 0 and report.retried + report.failed > 0
                if claimed < relay.batch_size or bus_failing:
                    close_old_connections()
                    stop.wait(conf.POLL_INTERVAL)
    finally:
        total.published += relay.finish()
    return total


def retry_failed(
    ids: Sequence[int] | None = None, *, repository: OutboxRepository | None = None
) -> int:
    """Put ``failed`` outbox rows back to pending (all of them when ``ids`` is None).

    Their attempt counters restart at zero and they are due at once. Returns how many
    rows were reset.
    """
    return (repository or _default_repository()).retry_failed(ids)


__all__ = [
    "OutboxRelay",
    "ProgressCallback",
    "RelayReport",
    "SerializedEventPublisher",
    "backoff_delay",
    "publish_outbox",
    "retry_failed",
]
