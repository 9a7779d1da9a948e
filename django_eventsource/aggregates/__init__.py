"""Aggregates: consistency boundaries rebuilt from their events, and their repository."""

from ..events.handlers import handles
from .base import AggregateRoot, DeclarativeAggregate
from .repository import AggregateRepository
from .snapshots import DjangoSnapshotStore, InMemorySnapshotStore, SnapshotData, SnapshotStore

__all__ = [
    "AggregateRepository",
    "AggregateRoot",
    "DeclarativeAggregate",
    "DjangoSnapshotStore",
    "InMemorySnapshotStore",
    "SnapshotData",
    "SnapshotStore",
    "handles",
]
