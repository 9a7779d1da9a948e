"""Dead-letter repositories, where the eventsource guide keeps them.

They live with the projections: the contract, its data and the in-memory repository in
:mod:`django_eventsource.projections.dead_letters`, the Django one in
:mod:`django_eventsource.projections.django_dead_letters`. The Django class is imported on
first use, so this module imports before Django is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..projections.dead_letters import (
    DLQEntry,
    DLQRepository,
    DLQStats,
    InMemoryDLQRepository,
    ProjectionFailureCount,
)

if TYPE_CHECKING:
    from ..projections.django_dead_letters import DjangoDLQRepository


def __getattr__(name: str) -> Any:
    if name == "DjangoDLQRepository":
        from ..projections.django_dead_letters import DjangoDLQRepository

        return DjangoDLQRepository
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DLQEntry",
    "DLQRepository",
    "DLQStats",
    "DjangoDLQRepository",
    "InMemoryDLQRepository",
    "ProjectionFailureCount",
]
