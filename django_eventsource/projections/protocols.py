"""Structural protocols for things that receive events."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..events.base import DomainEvent


@runtime_checkable
class EventSubscriber(Protocol):
    """Declares the event classes it wants and handles them (sync or ``async def``)."""

    def subscribed_to(self) -> list[type[DomainEvent]]: ...

    def handle(self, event: DomainEvent) -> Any: ...


__all__ = ["EventSubscriber"]
