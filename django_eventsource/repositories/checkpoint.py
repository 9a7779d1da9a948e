"""Checkpoint repositories, where the eventsource guide keeps them.

They live with the projections: the contract, its data and the in-memory repository in
:mod:`django_eventsource.projections.checkpoints`, the Django one in
:mod:`django_eventsource.projections.django_checkpoints`. The Django class is imported on
first use, so this module imports before Django is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..projections.checkpoints import (
    CheckpointData,
    CheckpointRepository,
    InMemoryCheckpointRepository,
    LagMetrics,
)

if TYPE_CHECKING:
    from ..projections.django_checkpoints import DjangoCheckpointRepository


def __getattr__(name: str) -> Any:
    if name == "DjangoCheckpointRepository":
        from ..projections.django_checkpoints import DjangoCheckpointRepository

        return DjangoCheckpointRepository
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CheckpointData",
    "CheckpointRepository",
    "DjangoCheckpointRepository",
    "InMemoryCheckpointRepository",
    "LagMetrics",
]
