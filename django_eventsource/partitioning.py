"""Stable buckets: which of N partitions (or segments) a key belongs to.

``stable_bucket(key, buckets)`` gives the same answer in every process, on every machine
and in every Python version (unlike ``hash()``, which is salted per process), so a
producer and a consumer that never talk agree on where an aggregate's events go. The
Redis bus uses it to pick an aggregate's stream; the key is the aggregate id as text.
"""

from __future__ import annotations

import hashlib

__all__ = ["EVENT_BUCKETS", "event_bucket", "stable_bucket"]


def stable_bucket(key: str, buckets: int) -> int:
    """The bucket of ``key`` among ``buckets`` (``0 <= result < buckets``).

    The first 8 bytes of the key's BLAKE2b digest, as an unsigned integer, modulo
    ``buckets``; the spread over buckets is even for any kind of key. Raises
    ``ValueError`` when ``buckets`` is not a positive integer and ``TypeError`` when
    ``key`` is not a string (pass ``str(uuid)``: the text form is the stable one).
    """
    if not isinstance(key, str):
        raise TypeError(f"stable_bucket needs a str key, got {type(key).__name__}")
    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise ValueError(f"buckets must be a positive integer, got {buckets!r}")
    if buckets == 1:
        return 0
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets


#: How many buckets events are spread over (by aggregate id), stored with each event
#: for segmented projections.
EVENT_BUCKETS = 256


def event_bucket(aggregate_id: object) -> int:
    """The stored ``bucket`` of an event of aggregate ``aggregate_id`` (0 to 255)."""
    return stable_bucket(str(aggregate_id), EVENT_BUCKETS)
