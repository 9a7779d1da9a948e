"""Aggregates: consistency boundaries rebuilt from their events, and their repository."""

from typing import TYPE_CHECKING, Any

from ..events.handlers import handles
from .base import AggregateRoot, DeclarativeAggregate
from .repository import AggregateRepository
from .snapshots import InMemorySnapshotStore, SnapshotData, SnapshotStore

if TYPE_CHECKING:
    from .django_snapshots import DjangoSnapshotStore


def __getattr__(name: str) -> Any:
    # The Django snapshot store needs configured models: imported on first use.
    if name == "DjangoSnapshotStore":
        from .django_snapshots import DjangoSnapshotStore

        return DjangoSnapshotStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
