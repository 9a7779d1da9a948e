"""JSON encoding of event data for storage and transport.

``EventSourceJSONEncoder`` is public (usable as ``JSONField(encoder=...)`` or with
``json.dumps(cls=...)``); ``json_dumps`` and ``json_loads`` are internal helpers.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from ..exceptions import SerializationError


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


__all__ = ["EventSourceJSONEncoder", "json_dumps", "json_loads"]
