"""How the runner applies a ``BatchProjection``: whole pages, narrowed down on failure.

The page is applied in one savepoint with ``handle_batch``, retried per the projection's
``RetryPolicy``. If it still fails, it is split in two halves, each tried once in its
own savepoint, the left half fully before the right one; a half that fails is split
again. A single event left alone is retried like a per-event handler and, after its last
attempt, dead-lettered. Every other event is therefore applied exactly once, in the
batch transaction, and the failing one costs about ``2 * log2(page size)`` extra attempts.

Two hooks let the caller shape what is applied (``BatchHooks``): ``admit`` runs before
each attempt and may drop events (for example ones that must wait behind a dead letter),
``dead_lettered`` runs right after an event was dead-lettered.
"""

from __future__ import annotations

import logging
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
RecordDeadLetter = Callable[[StoredEvent, HandlingFailure], None]


def admit_all(events: list[StoredEvent]) -> list[StoredEvent]:
    """The default ``admit``: every event is applied."""
    return events


def ignore_dead_letter(stored: StoredEvent) -> None:
    """The default ``dead_lettered``: nothing to do."""


@dataclass
class BatchHooks:
    """Callables one batch consults while it applies a ``BatchProjection``.

    ``admit(events)`` is called before every attempt of a (sub-)batch and returns the
    events to apply (a subsequence, in the same order); ``dead_lettered(stored)`` is
    called right after ``stored`` was recorded as a dead letter.
    """

    admit: Admit = field(default=admit_all)
    dead_lettered: DeadLettered = field(default=ignore_dead_letter)


@dataclass
class NarrowingOutcome:
    """What applying one page did: events applied, dead-lettered, and attempts made."""

    applied: int = 0
    dead_lettered: int = 0
    attempts: int = 0


def apply_batch_projection(
    projection: BatchProjection,
    events: list[StoredEvent],
    using: str,
    record_dead_letter: RecordDeadLetter,
    hooks: BatchHooks | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], Any] = time.sleep,
) -> NarrowingOutcome:
    """Apply ``events`` (position order) to ``projection`` inside the caller's transaction.

    ``record_dead_letter`` stores a dead letter for an event that failed alone after its
    last attempt.
    """
    hooks = hooks or BatchHooks()
    policy = policy or projection.get_retry_policy()
    outcome = NarrowingOutcome()
    _Narrowing(projection, using, record_dead_letter, hooks, policy, sleep, outcome).apply(
        events, attempts=policy.max_attempts
    )
    return outcome


@dataclass
class _Narrowing:
    projection: BatchProjection
    using: str
    record_dead_letter: RecordDeadLetter
    hooks: BatchHooks
    policy: RetryPolicy
    sleep: Callable[[float], Any]
    outcome: NarrowingOutcome

    def apply(self, events: list[StoredEvent], attempts: int) -> None:
        """Apply ``events``, trying the whole list up to ``attempts`` times, then halving."""
        for attempt in range(1, attempts + 1):
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
                return
            if attempt < attempts:
                self.sleep(self.policy.delay(attempt))
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
        )
        if failure is None:
            self.outcome.applied += 1
            return
        self.outcome.attempts += failure.attempts
        self.outcome.dead_lettered += 1
        self.record_dead_letter(stored, failure)
        self.hooks.dead_lettered(stored)


__all__ = [
    "BatchHooks",
    "NarrowingOutcome",
    "admit_all",
    "apply_batch_projection",
    "ignore_dead_letter",
]
