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
    due, and which relay holds the row (and since when).
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


__all__ = [
    "FAILED",
    "PENDING",
    "PUBLISHED",
    "OutboxEntry",
    "OutboxFailure",
    "OutboxRowValues",
    "OutboxStats",
    "OutboxStatus",
    "outbox_row_values",
]
