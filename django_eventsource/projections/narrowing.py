"""How the runner applies a ``BatchProjection``: whole pages, narrowed down on failure.

The page is applied in one savepoint with ``handle_batch``, retried per the projection's
``RetryPolicy``. If it still fails, it is split in two halves, each tried once in its
own savepoint, the left half fully before the right one; a half that fails is split
again. A single event left alone is retried like a per-event handler and, after its last
attempt, dead-lettered. Every other event is therefore applied exactly once, in the
batch transaction, and the failing one costs about ``2 * log2(page size)`` extra attempts.

Hooks let the caller shape what is applied (``BatchHooks``): ``admit`` runs before
each attempt and may drop events (the batch parks those that wait behind a dead letter
of their sequence), ``dead_lettered`` runs right after an event was dead-lettered and
``applied`` after events were applied, in position order.

A stop requested (``stop_event``) ends the narrowing before the next attempt, or while
a single event waits to be retried; ``NarrowingOutcome.stopped_at`` is then the position
of the first event not dealt with, and every event before it was applied,
dead-lettered or dropped by ``admit``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from ..stores.interface import StoredEvent
from .base import BatchProjection, HandlingFailure, RetryPolicy, apply_with_retries

logger = logging.getLogger("django_eventsource")

Admit = Callable[[list[StoredEvent]], list[StoredEvent]]
DeadLettered = Callable[[StoredEvent], None]
Applied = Callable[[list[StoredEvent]], None]
RecordDeadLetter = Callable[[StoredEvent, HandlingFailure], None]


def admit_all(events: list[StoredEvent]) -> list[StoredEvent]:
    """The default ``admit``: every event is applied."""
    return events


def ignore_dead_letter(stored: StoredEvent) -> None:
    """The default ``dead_lettered``: nothing to do."""


def ignore_applied(events: list[StoredEvent]) -> None:
    """The default ``applied``: nothing to do."""


@dataclass
class BatchHooks:
    """Callables one batch consults while it applies a ``BatchProjection``.

    ``admit(events)`` is called before every attempt of a (sub-)batch and returns the
    events to apply (a subsequence, in the same order); ``dead_lettered(stored)`` is
    called right after ``stored`` was recorded as a dead letter; ``applied(events)``
    after ``events`` (non-empty) were applied.
    """

    admit: Admit = field(default=admit_all)
    dead_lettered: DeadLettered = field(default=ignore_dead_letter)
    applied: Applied = field(default=ignore_applied)


@dataclass
class NarrowingOutcome:
    """What applying one page did: events applied, dead-lettered, and attempts made.

    ``last_error`` describes the last dead letter; ``stopped_at`` is set when a stop
    ended the page early (the position of the first event not dealt with).
    """

    applied: int = 0
    dead_lettered: int = 0
    attempts: int = 0
    last_error: str = ""
    stopped_at: int | None = None


def apply_batch_projection(
    projection: BatchProjection,
    events: list[StoredEvent],
    using: str,
    record_dead_letter: RecordDeadLetter,
    hooks: BatchHooks | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    stop_event: threading.Event | None = None,
) -> NarrowingOutcome:
    """Apply ``events`` (position order) to ``projection`` inside the caller's transaction.

    ``record_dead_letter`` stores a dead letter for an event that failed alone after its
    last attempt.
    """
    hooks = hooks or BatchHooks()
    policy = policy or projection.get_retry_policy()
    outcome = NarrowingOutcome()
    narrowing = _Narrowing(
        projection, using, record_dead_letter, hooks, policy, sleep, outcome, stop_event
    )
    try:
        narrowing.apply(events, attempts=policy.max_attempts)
    except _Stopped as stopped:
        outcome.stopped_at = stopped.position
    return outcome


class _Stopped(Exception):
    """A stop was requested: unwinds the narrowing before the event at ``position``."""

    def __init__(self, position: int) -> None:
        super().__init__(position)
        self.position = position


@dataclass
class _Narrowing:
    projection: BatchProjection
    using: str
    record_dead_letter: RecordDeadLetter
    hooks: BatchHooks
    policy: RetryPolicy
    sleep: Callable[[float], Any]
    outcome: NarrowingOutcome
    stop_event: threading.Event | None = None

    def apply(self, events: list[StoredEvent], attempts: int) -> None:
        """Apply ``events``, trying the whole list up to ``attempts`` times, then halving."""
        for attempt in range(1, attempts + 1):
            if self.stop_event is not None and self.stop_event.is_set():
                raise _Stopped(events[0].global_position)  # before admit parks anything
            admitted = self.hooks.admit(events)
            if not admitted:
                return
            if len(admitted) == 1:
                self._apply_alone(admitted[0])
                return
            events = admitted
            error = self._attempt(events)
            if error is None:
                self.outcome.applied += len(events)
                self.hooks.applied(events)
                return
            if attempt < attempts:
                self._wait(self.policy.delay(attempt), events[0])
        middle = len(events) // 2
        logger.debug(
            "Projection %s: a batch of %d events failed; trying its halves",
            self.projection.name,
            len(events),
            extra={"projection": self.projection.name},
        )
        # Left half first and completely: what it dead-letters may change what the
        # right half admits.
        self.apply(events[:middle], attempts=1)
        self.apply(events[middle:], attempts=1)

    def _wait(self, delay: float, first: StoredEvent) -> None:
        if self.stop_event is None:
            self.sleep(delay)
        elif self.stop_event.wait(delay):
            raise _Stopped(first.global_position)

    def _attempt(self, events: list[StoredEvent]) -> BaseException | None:
        """One attempt of ``handle_batch`` in a savepoint; the error, or ``None``."""
        self.outcome.attempts += 1
        try:
            with transaction.atomic(using=self.using):
                self.projection.process_batch([stored.event for stored in events])
        except Exception as exc:
            logger.warning(
                "Projection %s failed on a batch of %d events (positions %d-%d): %s",
                self.projection.name,
                len(events),
                events[0].global_position,
                events[-1].global_position,
                exc,
                extra={"projection": self.projection.name, "count": len(events)},
            )
            return exc
        return None

    def _apply_alone(self, stored: StoredEvent) -> None:
        """One event: retried per the policy, as a per-event handler is, then dead-lettered."""
        failure = apply_with_retries(
            self.projection,
            stored.event,
            self.policy,
            attempt_scope=lambda: transaction.atomic(using=self.using),
            sleep=self.sleep,
            stop_event=self.stop_event,
        )
        if failure is None:
            self.outcome.applied += 1
            self.hooks.applied([stored])
            return
        if failure.stopped:
            raise _Stopped(stored.global_position)
        self.outcome.attempts += failure.attempts
        self.outcome.dead_lettered += 1
        self.outcome.last_error = f"{type(failure.error).__name__}: {failure.error}"
        self.record_dead_letter(stored, failure)
        self.hooks.dead_lettered(stored)


__all__ = [
    "BatchHooks",
    "NarrowingOutcome",
    "admit_all",
    "apply_batch_projection",
    "ignore_applied",
    "ignore_dead_letter",
]
