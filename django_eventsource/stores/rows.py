"""Rebuilding ``DomainEvent``s from the event table's rows (of ``_READ_COLUMNS``).

Rows are validated straight into their event classes; only unknown event types and old
schema versions go through ``EventRegistry.deserialize`` (and its upcasters). A row that
cannot become its event raises a ``SerializationError`` naming its event id and position,
and ``raw_event_values`` hands such a row over as stored.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ..events.base import DomainEvent
from ..events.registry import EventRegistry
from ..exceptions import EventSourceError, SerializationError
from .sql import _ENVELOPE_KEYS, _RAW_COLUMNS, _READ_COLUMNS, _as_uuid, _document


def unreadable_row(row: Sequence[Any], reason: object) -> SerializationError:
    """The error for a stored event row (of ``_READ_COLUMNS``) that cannot be rebuilt."""
    try:
        event_id: object = _as_uuid(row[1])
    except ValueError:
        event_id = repr(row[1])
    return SerializationError(
        f"Stored event {event_id} at position {row[0]} (type {row[2]!r}) cannot be read: {reason}",
        event_type=row[2] if isinstance(row[2], str) else None,
    )


#: What JSON calls the values ``json.loads`` returns, for messages.
_JSON_TYPE_NAMES = {
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
}


def json_object(row: Sequence[Any], index: int) -> dict[str, Any]:
    """Column ``index`` of a stored event row as a dict: decoded JSON text, or a copy.

    Anything but a JSON object (malformed text, an array, ``null``…) raises a
    ``SerializationError`` naming the row, not an error from deep inside the rebuild.
    """
    value = row[index]
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise unreadable_row(row, f"{_READ_COLUMNS[index]} is not valid JSON ({exc})") from exc
        if type(value) is dict:
            return value
    elif isinstance(value, Mapping):
        return dict(value)
    kind = "null" if value is None else _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
    raise unreadable_row(row, f"{_READ_COLUMNS[index]} is {kind}, not a JSON object")


def raw_event_values(values: Sequence[Any]) -> dict[str, Any]:
    """A raw row of ``_RAW_COLUMNS`` by name, ids as UUIDs and the payload decoded where
    they can be.

    Whatever cannot be converted is kept as stored, so the row can still be shown and
    dead-lettered.
    """
    row = dict(zip(_RAW_COLUMNS, values, strict=True))
    for key in ("event_id", "aggregate_id"):
        with contextlib.suppress(ValueError):
            row[key] = _as_uuid(row[key])
    if isinstance(row["payload"], str | bytes):
        with contextlib.suppress(ValueError):
            row["payload"] = json.loads(row["payload"])
    return row


class RowDecoder:
    """Turns rows into events with one registry, caching each class's current version."""

    def __init__(self, registry: EventRegistry) -> None:
        self.registry = registry
        self._versions: dict[type[DomainEvent], int] = {}

    def events(self, rows: Sequence[Sequence[Any]]) -> Iterator[DomainEvent]:
        """Rebuild the events of ``rows``, one at a time.

        Lazily, so that a caller handles every event before one that fails to rebuild.
        """
        registry = self.registry
        # (event_type, event_version) -> the class's JSON validator, or None for rows
        # that take the full path. Per call, so a class registered later is seen.
        validators: dict[tuple[str, int], Callable[[str], Any] | None] = {}
        for row in rows:
            try:
                version_key = (row[2], row[3])
                try:
                    validate = validators[version_key]
                except KeyError:
                    validate = validators[version_key] = self._json_validator(registry, row)
                if validate is None:
                    event = self.event_from_values(row, registry.get_or_none(row[2]))
                else:
                    # The columns come as text (see ``fetch_event_rows``): write them
                    # into one JSON document that pydantic-core parses and validates
                    # without building Python values first, one validation per event.
                    # A failure is retried on the full path, which explains it.
                    try:
                        event = validate(_document(row))
                    except ValidationError:
                        event = self.event_from_values(row, registry.get_or_none(row[2]))
            except EventSourceError:
                raise
            except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
                # A row no check foresaw (text where a number belongs…): still a typed
                # error naming the row, which the projection runner dead-letters.
                raise unreadable_row(row, exc) from exc
            yield event

    def _json_validator(
        self, registry: EventRegistry, row: Sequence[Any]
    ) -> Callable[[str], Any] | None:
        """``validate_json`` of the row's event class, if the row can use it."""
        if type(row[1]) is not str:  # not read as text
            return None
        event_class = registry.get_or_none(row[2])
        if event_class is None or row[3] < self._current_version(event_class):
            return None
        return event_class.__pydantic_validator__.validate_json

    def event_from_values(
        self, row: Sequence[Any], event_class: type[DomainEvent] | None
    ) -> DomainEvent:
        """The row's event, from its values as the driver returns them."""
        data = json_object(row, 13)
        data.update(zip(_ENVELOPE_KEYS, row[1:12], strict=True))
        occurred_at = row[4]
        if type(occurred_at) is datetime and occurred_at.tzinfo is None:
            data["occurred_at"] = occurred_at.replace(tzinfo=UTC)
        data["metadata"] = {} if row[14] == "{}" else json_object(row, 14)
        if event_class is None or row[3] < self._current_version(event_class):
            # Unknown types and old schema versions take the full path: a clear error
            # naming the registered types, or the upcaster chain.
            return self.registry.deserialize(data)
        try:
            return event_class.model_validate(data)
        except ValidationError as exc:
            reason = f"it no longer validates as {event_class.__qualname__}: {exc}"
            raise unreadable_row(row, reason) from exc

    def _current_version(self, event_class: type[DomainEvent]) -> int:
        version = self._versions.get(event_class)
        if version is None:
            version = self._versions[event_class] = event_class.current_event_version()
        return version


__all__ = ["RowDecoder", "json_object", "raw_event_values", "unreadable_row"]
