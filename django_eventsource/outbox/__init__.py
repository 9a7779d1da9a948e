"""The transactional outbox: rows, repositories and the relay that publishes them.

``rows`` (value objects) and ``repository`` (the contract and the in-memory
implementation) are framework-free and imported here directly. ``DjangoOutboxRepository``
(``outbox.django``) and the relay (``outbox.relay``) are resolved on first use (PEP 562):
they need configured Django models and the bus, which the framework-free names do not.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .repository import InMemoryOutboxRepository, OutboxRepository
from .rows import OutboxEntry, OutboxFailure, OutboxStats, OutboxStatus

_LAZY: dict[str, str] = {
    "DjangoOutboxRepository": "django",
    "OutboxRelay": "relay",
    "RelayReport": "relay",
    "backoff_delay": "relay",
    "publish_outbox": "relay",
    "retry_failed": "relay",
}

if TYPE_CHECKING:
    from .django import DjangoOutboxRepository
    from .relay import OutboxRelay, RelayReport, backoff_delay, publish_outbox, retry_failed


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DjangoOutboxRepository",
    "InMemoryOutboxRepository",
    "OutboxEntry",
    "OutboxFailure",
    "OutboxRelay",
    "OutboxRepository",
    "OutboxStats",
    "OutboxStatus",
    "RelayReport",
    "backoff_delay",
    "publish_outbox",
    "retry_failed",
]
