"""Django admin for the event store: events, dead letters, checkpoints, outbox, snapshots.

Stored events are never edited or deleted from the admin. The other models are read-only
too; operators act on them only through actions (retry, resolve, reset), which need the
model's change (or delete) permission. The events changelist is built for large tables:
its filters hit the ``(column, position)`` indexes, its choices come from the event
registry instead of ``SELECT DISTINCT``, searches are exact UUID matches, and its
paginator never counts the whole table.
"""

# Importing the submodules registers every admin with ``admin.site`` on autodiscover.
from ._common import EstimatedCountPaginator, ReadOnlyAdminMixin
from .checkpoints import CheckpointAdmin
from .dead_letters import DeadLetterAdmin
from .events import EventRecordAdmin
from .filters import (
    AggregateIdFilter,
    AggregateTypeFilter,
    CorrelationIdFilter,
    EventTypeFilter,
    TenantFilter,
    UUIDInputFilter,
)
from .outbox import OutboxMessageAdmin
from .snapshots import SnapshotAdmin

__all__ = [
    "AggregateIdFilter",
    "AggregateTypeFilter",
    "CheckpointAdmin",
    "CorrelationIdFilter",
    "DeadLetterAdmin",
    "EstimatedCountPaginator",
    "EventRecordAdmin",
    "EventTypeFilter",
    "OutboxMessageAdmin",
    "ReadOnlyAdminMixin",
    "SnapshotAdmin",
    "TenantFilter",
    "UUIDInputFilter",
]
