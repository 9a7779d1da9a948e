"""Partition leases of the Redis bus: one consumer of the group per partition at a time.

With ``partitions = P > 1`` the consumers of one group share the P event streams through
leases kept in Redis:

- ``<prefix>:partition-owner:<group>:<n>`` holds the name of the consumer that reads
  partition ``n``; it expires after ``partition_lease`` seconds unless renewed
  (``SET NX PX`` to take it, a compare-and-set script to renew or give it back);
- ``<prefix>:partition-consumers:<group>`` is a sorted set of the live consumers, each
  scored with the time its membership runs out.

A heartbeat thread renews the consumer's membership and partitions every third of the
lease, so a slow batch does not lose them. Between batches the consumer loop rebalances:
each live consumer holds at most ``ceil(P / live consumers)`` partitions (at most
``floor(P / live)`` while another live consumer has fewer than that), gives back what it
holds beyond that and takes free partitions up to it. The partitions of a consumer that
died are free once its lease runs out, and taken over at the next rebalance. A consumer
that takes a partition over first claims every message still pending in it (idle or not:
the previous owner is gone), so an aggregate's earlier messages are handled before its
later ones.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zlib
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from .redis_streams import RedisEventBusConfig

with suppress(ImportError):  # without redis no bus is ever created
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from redis import Redis

logger = logging.getLogger("django_eventsource.bus.redis")

#: Renew a lease only if this consumer still holds it.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

#: Give a lease back only if this consumer still holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class PartitionLeases:
    """The partitions one consumer holds, with their renewals and rebalancing."""

    def __init__(self, config: RedisEventBusConfig, client: Callable[[], Redis[str]]) -> None:
        self.config = config
        self._client = client
        self._lock = threading.Lock()
        self._held: set[int] = set()
        #: Partitions taken over and not yet recovered (their pending entries claimed).
        self._fresh: set[int] = set()
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()
        self._next_rebalance = 0.0

    # -- keys ---------------------------------------------------------------------------

    def owner_key(self, partition: int) -> str:
        cfg = self.config
        return f"{cfg.stream_prefix}:partition-owner:{cfg.consumer_group}:{partition}"

    @property
    def members_key(self) -> str:
        cfg = self.config
        return f"{cfg.stream_prefix}:partition-consumers:{cfg.consumer_group}"

    @property
    def lease_ms(self) -> int:
        return max(int(self.config.partition_lease * 1000), 1)

    # -- what the consumer reads ----------------------------------------------------------

    @property
    def held(self) -> list[int]:
        """The partitions held now, in order."""
        with self._lock:
            return sorted(self._held)

    def take_fresh(self) -> set[int]:
        """Partitions taken over since the last call (their pending entries are due)."""
        with self._lock:
            fresh, self._fresh = self._fresh & self._held, set()
            return fresh

    # -- leases ---------------------------------------------------------------------------

    def _now_ms(self) -> int:
        seconds, microseconds = self._client().time()
        return int(seconds) * 1000 + int(microseconds) // 1000

    def _live_consumers(self) -> int:
        """Register this consumer as live and count the live ones (itself included)."""
        now = self._now_ms()
        pipe = self._client().pipeline(transaction=False)
        pipe.zadd(self.members_key, {self.config.consumer_name: now + self.lease_ms})
        pipe.zremrangebyscore(self.members_key, "-inf", now)
        pipe.zcard(self.members_key)
        pipe.pexpire(self.members_key, self.lease_ms * 10)
        return max(int(pipe.execute()[2]), 1)

    def renew(self) -> None:
        """Renew membership and every held lease; drop the leases found lost."""
        self._live_consumers()
        held = self.held
        if not held:
            return
        pipe = self._client().pipeline(transaction=False)
        name = self.config.consumer_name
        for partition in held:
            pipe.eval(_RENEW, 1, self.owner_key(partition), name, self.lease_ms)
        lost = [p for p, renewed in zip(held, pipe.execute(), strict=True) if not renewed]
        if lost:
            logger.warning(
                "Consumer %s lost its lease on partitions %s", name, lost, extra={"lost": lost}
            )
            with self._lock:
                self._held.difference_update(lost)

    def rebalance(self) -> list[int]:
        """Renew, give back partitions beyond the fair share, take free ones up to it.

        With ``live`` consumers a consumer holds at most ``ceil(P / live)`` partitions,
        and no more than ``floor(P / live)`` while another live consumer holds fewer than
        that. Called between batches (never while messages of a partition are being
        handled). Returns the partitions held afterwards.
        """
        cfg = self.config
        self._live_consumers()
        self.renew()
        client = self._client()
        members = set(client.zrange(self.members_key, 0, -1)) | {cfg.consumer_name}
        owners = client.mget([self.owner_key(p) for p in range(cfg.partitions)])
        counts = dict.fromkeys(members, 0)
        for owner in owners:
            if owner in counts:
                counts[owner] += 1
        low, high = cfg.partitions // len(members), math.ceil(cfg.partitions / len(members))
        starving = any(n < low for who, n in counts.items() if who != cfg.consumer_name)
        share = low if starving else high
        name = cfg.consumer_name
        held = self.held
        for partition in held[share:]:
            client.eval(_RELEASE, 1, self.owner_key(partition), name)  # type: ignore[no-untyped-call]
            with self._lock:
                self._held.discard(partition)
        if len(held) < share:
            # Start the search at a place of this consumer's own, so that consumers
            # starting together try different partitions first.
            start = zlib.crc32(name.encode()) % cfg.partitions
            for step in range(cfg.partitions):
                if len(self.held) >= share:
                    break
                partition = (start + step) % cfg.partitions
                if partition in self._held or owners[partition] is not None:
                    continue
                if client.set(self.owner_key(partition), name, nx=True, px=self.lease_ms):
                    with self._lock:
                        self._held.add(partition)
                        self._fresh.add(partition)
        self._start_heartbeat()
        return self.held

    def rebalance_if_due(self) -> list[int]:
        """``rebalance()`` every third of the lease, or at once while nothing is held."""
        now = time.monotonic()
        if self._held and now < self._next_rebalance:
            return self.held
        self._next_rebalance = now + self.config.partition_lease / 3
        return self.rebalance()

    def release_all(self) -> None:
        """Give back every partition and leave the group's live consumers."""
        self._stop_heartbeat()
        held = self.held
        with self._lock:
            self._held.clear()
            self._fresh.clear()
        name = self.config.consumer_name
        try:
            pipe = self._client().pipeline(transaction=False)
            for partition in held:
                pipe.eval(_RELEASE, 1, self.owner_key(partition), name)
            pipe.zrem(self.members_key, name)
            pipe.execute()
        except (RedisConnectionError, RedisTimeoutError):
            logger.debug("Could not give back partitions %s; their leases run out", held)

    # -- heartbeat ------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        if self._heartbeat is not None and self._heartbeat.is_alive():
            return
        self._stop.clear()
        self._heartbeat = threading.Thread(
            target=self._beat, name="eventsource-partition-heartbeat", daemon=True
        )
        self._heartbeat.start()

    def _stop_heartbeat(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            self._stop.set()
            if heartbeat is not threading.current_thread():
                heartbeat.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.config.partition_lease / 3):
            try:
                self.renew()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                logger.warning("Could not renew partition leases: %s", exc)


__all__ = ["PartitionLeases"]
