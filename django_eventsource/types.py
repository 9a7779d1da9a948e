"""Shared type aliases used throughout django_eventsource."""

from __future__ import annotations

from typing import TypeAlias, TypeVar
from uuid import UUID

from pydantic import BaseModel

#: Type variable for an aggregate's state model.
TState = TypeVar("TState", bound=BaseModel)

AggregateId: TypeAlias = UUID
EventId: TypeAlias = UUID
TenantId: TypeAlias = UUID | None
CorrelationId: TypeAlias = UUID
CausationId: TypeAlias = UUID | None
Version: TypeAlias = int
StreamPosition: TypeAlias = int
GlobalPosition: TypeAlias = int

__all__ = [
    "AggregateId",
    "CausationId",
    "CorrelationId",
    "EventId",
    "GlobalPosition",
    "StreamPosition",
    "TState",
    "TenantId",
    "Version",
]
