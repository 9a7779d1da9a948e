"""The stored form of events: JSON encoding and the row text as a mapping.

``EventSourceJSONEncoder`` is public (usable as ``JSONField(encoder=...)`` or with
``json.dumps(cls=...)``); ``json_dumps`` and ``json_loads`` encode and decode with it and
raise ``SerializationError``; ``StoredEventData`` is an event's stored JSON read lazily.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any, TypedDict
from uuid import UUID

from pydantic import BaseModel

from ..exceptions import SerializationError

if TYPE_CHECKING:
    from .base import DomainEvent


class EventSourceJSONEncoder(json.JSONEncoder):
    """A JSON encoder for the values events carry.

    - ``UUID`` → its canonical string;
    - ``Decimal`` → a string, so no precision is lost to a float;
    - ``datetime``, ``date``, ``time`` → ISO 8601 strings (an aware datetime keeps its
      offset);
    - ``Enum`` → its value (encoded in turn);
    - pydantic models → ``model_dump(mode="json")``;
    - ``set`` and ``frozenset`` → a sorted list, so equal sets always encode alike.

    Decoding gives back strings and lists: validate the result with the event class
    (``DomainEvent.from_dict``) to get the rich types back.

    Example::

        json.dumps({"id": uuid4(), "total": Decimal("9.90")}, cls=EventSourceJSONEncoder)
    """

    def default(self, o: Any) -> Any:
        if isinstance(o, UUID):
            return str(o)
        if isinstance(o, Decimal):
            return str(o)
        if isinstance(o, datetime | date | time):
            return o.isoformat()
        if isinstance(o, Enum):
            return o.value
        if isinstance(o, BaseModel):
            return o.model_dump(mode="json")
        if isinstance(o, set | frozenset):
            try:
                return sorted(o)
            except TypeError:
                # Mixed element types do not compare; order by their encoded form instead.
                return sorted(o, key=lambda item: json.dumps(item, cls=type(self)))
        return super().default(o)


def json_dumps(obj: Any) -> str:
    """Encode ``obj`` compactly with ``EventSourceJSONEncoder``.

    Raises ``SerializationError`` for a value the encoder does not support.
    """
    try:
        return json.dumps(obj, cls=EventSourceJSONEncoder, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"Cannot encode event data as JSON: {exc}") from exc


def json_loads(data: str | bytes | bytearray) -> Any:
    """Decode JSON text (or UTF-8 bytes); raises ``SerializationError`` when malformed."""
    try:
        return json.loads(data)
    except ValueError as exc:
        raise SerializationError(f"Cannot decode event data from JSON: {exc}") from exc


class StoredEventData(Mapping[str, Any]):
    """An event's ``to_dict()`` as the JSON text a database returned, parsed on first read.

    It reads like the dict it encodes. ``text`` is the JSON itself and ``envelope`` the
    event's identifying fields (``event_id``, ``event_type``, ``aggregate_type``,
    ``aggregate_id``, ``aggregate_version``) as stored in their own columns, so a
    publisher can route the event and pass the JSON on without decoding and encoding it
    again.
    """

    __slots__ = ("_parsed", "envelope", "text")

    def __init__(self, text: str, envelope: Mapping[str, Any]) -> None:
        self.text = text
        self.envelope = envelope
        self._parsed: dict[str, Any] | None = None

    def _data(self) -> dict[str, Any]:
        if self._parsed is None:
            self._parsed = json_loads(self.text)
        return self._parsed

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __repr__(self) -> str:
        return f"StoredEventData({self.text!r})"


class OutboxRowValues(TypedDict):
    """The columns of a new outbox row that come from its event."""

    event_id: UUID
    event_type: str
    aggregate_id: UUID
    aggregate_type: str
    aggregate_version: int
    tenant_id: UUID | None
    event_data: dict[str, Any]


def outbox_row_values(event: DomainEvent) -> OutboxRowValues:
    """The values of the outbox row for ``event``.

    Every writer of outbox rows (the event store's append, both outbox repositories'
    ``add_event``) builds them here, so a row looks the same whichever path wrote it.
    The status, bookkeeping columns and ``created_at`` keep their defaults: a new row is
    pending and due at once.
    """
    return {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "aggregate_id": event.aggregate_id,
        "aggregate_type": event.aggregate_type,
        "aggregate_version": event.aggregate_version,
        "tenant_id": event.tenant_id,
        "event_data": event.to_dict(),
    }


__all__ = [
    "EventSourceJSONEncoder",
    "OutboxRowValues",
    "StoredEventData",
    "json_dumps",
    "json_loads",
    "outbox_row_values",
]
