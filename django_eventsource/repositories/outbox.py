"""The outbox repositories where the eventsource guide looks for them.

They live in :mod:`django_eventsource.outbox`. ``DjangoOutboxRepository`` is resolved on
first use (PEP 562), so importing this module for the in-memory repository needs no
configured Django.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..outbox.repository import InMemoryOutboxRepository, OutboxRepository
from ..outbox.rows import OutboxEntry, OutboxStats

if TYPE_CHECKING:
    from ..outbox.django import DjangoOutboxRepository


def __getattr__(name: str) -> Any:
    if name == "DjangoOutboxRepository":
        from ..outbox.django import DjangoOutboxRepository

        return DjangoOutboxRepository
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DjangoOutboxRepository",
    "InMemoryOutboxRepository",
    "OutboxEntry",
    "OutboxRepository",
    "OutboxStats",
]
