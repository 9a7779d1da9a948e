"""Sequenced dead letters inside one batch: park the events whose sequence is blocked.

A sequence is what ``projection.sequence_key(event)`` returns (the aggregate id by
default). While a sequence has an open dead letter for a projection, its later events
are not handled: they are stored as *parked* dead letters behind the head, in order, and
the checkpoint moves past them. ``retry_dead_letters`` handles a sequence from its head,
in order, and unblocks the key once the sequence is empty.

One ``Sequencing`` per batch, created inside the batch transaction (after the checkpoint
row is locked, which retries also lock, so the blocked keys cannot change under it). The
batch calls :meth:`Sequencing.admit` before handling events, :meth:`Sequencing.dead_lettered`
right after an event is dead-lettered and :meth:`Sequencing.handled` after one is handled;
the last two also count the consecutive failures that pause a projection.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..models import DeadLetter
from ..stores.interface import StoredEvent
from .base import Projection
from .django_dead_letters import DjangoDLQRepository


class Sequencing:
    """The blocked sequence keys of one projection during one batch, and its failure streak."""

    def __init__(
        self,
        projection: Projection,
        dead_letters: DjangoDLQRepository,
        blocked: Iterable[str] = (),
        failure_streak: int = 0,
    ) -> None:
        self.projection = projection
        self.dead_letters = dead_letters
        self.blocked: set[str] = set(blocked)
        self.failure_streak = failure_streak
        self.parked = 0
        self._heads: dict[str, int | None] = {}

    @classmethod
    def load(
        cls, projection: Projection, dead_letters: DjangoDLQRepository, failure_streak: int = 0
    ) -> Sequencing:
        """The projection's open sequences, read in one query."""
        keys = (
            DeadLetter.objects.using(dead_letters.db)
            .open()
            .for_projection(projection.name)
            .exclude(sequence_key="")
            .order_by()
            .values_list("sequence_key", flat=True)
            .distinct()
        )
        return cls(projection, dead_letters, keys, failure_streak)

    def key_of(self, stored: StoredEvent) -> str:
        """The event's sequence key for this projection."""
        return self.projection.sequence_key(stored.event)

    def admit(self, events: list[StoredEvent]) -> list[StoredEvent]:
        """Park the events whose sequence is blocked; return the others, in order."""
        if not self.blocked:
            return events
        admitted: list[StoredEvent] = []
        for stored in events:
            key = self.key_of(stored)
            if key in self.blocked:
                self._park(stored, key)
            else:
                admitted.append(stored)
        return admitted

    def dead_lettered(self, stored: StoredEvent) -> None:
        """``stored`` was just dead-lettered: block its sequence, count the failure."""
        self.blocked.add(self.key_of(stored))
        self.failure_streak += 1

    def handled(self, stored: StoredEvent) -> None:
        """``stored`` was handled: the consecutive failures start again from zero."""
        self.failure_streak = 0

    def should_pause(self, pause_after: int) -> bool:
        """Whether the consecutive failures reached ``pause_after`` (``0`` never pauses)."""
        return pause_after > 0 and self.failure_streak >= pause_after

    def _park(self, stored: StoredEvent, key: str) -> None:
        if key not in self._heads:
            self._heads[key] = (
                DeadLetter.objects.using(self.dead_letters.db)
                .in_sequence(self.projection.name, key)
                .values_list("id", flat=True)
                .first()
            )
        head = self._heads[key]
        self.dead_letters.park_event(
            event_id=stored.event_id,
            projection_name=self.projection.name,
            event_type=stored.event_type,
            event_data=stored.event.to_dict(),
            sequence_key=key,
            global_position=stored.global_position,
            head_id=head,
        )
        self.parked += 1


__all__ = ["Sequencing"]
