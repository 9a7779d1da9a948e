"""Stable partitioning of keys into buckets, the same in every process and release."""

from __future__ import annotations

import hashlib


def stable_bucket(key: str, buckets: int) -> int:
    """The bucket (``0 <= b < buckets``) of ``key``: a stable hash, not Python's ``hash()``."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets!r}")
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets


#: How many buckets events are spread over (by aggregate id), stored with each event.
EVENT_BUCKETS = 256


def event_bucket(aggregate_id: object) -> int:
    """The stored ``bucket`` of an event of aggregate ``aggregate_id`` (0 to 255)."""
    return stable_bucket(str(aggregate_id), EVENT_BUCKETS)


__all__ = ["EVENT_BUCKETS", "event_bucket", "stable_bucket"]
