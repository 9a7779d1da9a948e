"""Outbox rows as values: what a row holds, how an event becomes one, and the figures.

Framework-free: the in-memory repository and the relay use these without a database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from ..events.serialization import OutboxRowValues, outbox_row_values

#: The values of ``OutboxMessage.Status`` (``django_eventsource.models``), which is the
#: spelling Django code uses; a test keeps the two in step. The constants below serve
#: the in-memory repository, which cannot import models without a configured Django.
OutboxStatus = Literal["pending", "published", "failed"]

PENDING: OutboxStatus = "pending"
PUBLISHED: OutboxStatus = "published"
FAILED: OutboxStatus = "failed"


@dataclass(frozen=True)
class OutboxEntry:
    """One outbox row as the relay and the admin see it.

    ``event_data`` is the event's ``to_dict()`` (a ``dict``, or for a claimed row the
    stored JSON, decoded when first read). The fields after ``last_error`` are the
    relay's bookkeeping: the event's version in its aggregate, when the next attempt is
    due, which relay holds the row (and since when) and when its first failed attempt
    happened (``None`` until one has).
    """

    id: int
    event_id: UUID
    event_type: str
    aggregate_id: UUID
    aggregate_type: str
    tenant_id: UUID | None
    event_data: Mapping[str, Any]
    created_at: datetime
    status: OutboxStatus
    published_at: datetime | None
    retry_count: int
    last_error: str
    aggregate_version: int = 0
    next_attempt_at: datetime | None = None
    claimed_by: str = ""
    claimed_at: datetime | None = None
    first_failed_at: datetime | None = None


@dataclass(frozen=True)
class OutboxStats:
    """Row counts by status, the creation time of the oldest pending row, and the mean
    number of failed attempts of the pending rows.

    ``avg_retries`` is taken over the pending rows only (0.0 when there are none), the
    rows still to publish: near 0 all is well; rising, the bus is refusing events and the
    relay is backing off. Published rows would dilute it with history, and failed rows
    are no longer attempted (they wait for a retry from the admin).
    """

    pending_count: int
    published_count: int
    failed_count: int
    oldest_pending: datetime | None
    avg_retries: float = 0.0


@dataclass(frozen=True)
class OutboxFailure:
    """A failed publishing attempt of one claimed row, as reported by the relay."""

    id: int
    error: str
    next_attempt_at: datetime


def gives_up(
    first_failed_at: datetime | None,
    attempts: int,
    now: datetime,
    *,
    give_up_after: float | None,
    max_attempts: int | None = None,
) -> bool:
    """Whether a row whose attempt number ``attempts`` failed at ``now`` becomes ``failed``.

    It does once ``give_up_after`` seconds have passed since its first failed attempt
    (``first_failed_at``, or ``now`` when this is the first), or, with the deprecated
    ``max_attempts``, after that many failed attempts, whichever comes first. The time
    decides, not the attempt count: with backoff and jitter, a count says little about
    how long the bus has been away.
    """
    since = first_failed_at or now
    if give_up_after is not None and (now - since).total_seconds() >= give_up_after:
        return True
    return max_attempts is not None and attempts >= max_attempts


__all__ = [
    "FAILED",
    "PENDING",
    "PUBLISHED",
    "OutboxEntry",
    "OutboxFailure",
    "OutboxRowValues",
    "OutboxStats",
    "OutboxStatus",
    "gives_up",
    "outbox_row_values",
]
