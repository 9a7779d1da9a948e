"""Rebuilding ``DomainEvent``s from the event table's rows (of ``_READ_COLUMNS``).

Rows are validated straight into their event classes; only unknown event types and old
schema versions go through ``EventRegistry.deserialize`` (and its upcasters).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ..events.base import DomainEvent
from ..events.registry import EventRegistry
from ..exceptions import SerializationError
from .sql import _ENVELOPE_KEYS, _document


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
            version_key = (row[2], row[3])
            try:
                validate = validators[version_key]
            except KeyError:
                validate = validators[version_key] = self._json_validator(registry, row)
            if validate is None:
                yield self.event_from_values(row, registry.get_or_none(row[2]))
                continue
            # SQLite returns every column as text: write them into one JSON document
            # that pydantic-core parses and validates without building Python values
            # first. A failure is retried on the full path, which explains it.
            try:
                event = validate(_document(row))
            except ValidationError:
                event = self.event_from_values(row, registry.get_or_none(row[2]))
            yield event

    def _json_validator(
        self, registry: EventRegistry, row: Sequence[Any]
    ) -> Callable[[str], Any] | None:
        """``validate_json`` of the row's event class, if the row can use it."""
        if type(row[1]) is not str:  # not SQLite text
            return None
        event_class = registry.get_or_none(row[2])
        if event_class is None or row[3] < self._current_version(event_class):
            return None
        return event_class.__pydantic_validator__.validate_json

    def event_from_values(
        self, row: Sequence[Any], event_class: type[DomainEvent] | None
    ) -> DomainEvent:
        """The row's event, from its values as the driver returns them."""
        payload = row[13]
        data: dict[str, Any] = (
            json.loads(payload) if isinstance(payload, str | bytes) else dict(payload)
        )
        data.update(zip(_ENVELOPE_KEYS, row[1:12], strict=True))
        occurred_at = row[4]
        if type(occurred_at) is datetime and occurred_at.tzinfo is None:
            data["occurred_at"] = occurred_at.replace(tzinfo=UTC)
        metadata = row[14]
        if metadata == "{}":
            data["metadata"] = {}
        elif isinstance(metadata, str | bytes):
            data["metadata"] = json.loads(metadata)
        else:
            data["metadata"] = metadata
        event_type = row[2]
        if event_class is None or row[3] < self._current_version(event_class):
            # Unknown types and old schema versions take the full path: a clear error
            # naming the registered types, or the upcaster chain.
            return self.registry.deserialize(data)
        try:
            return event_class.model_validate(data)
        except ValidationError as exc:
            raise SerializationError(
                f"Stored event {data.get('event_id')} of type {event_type!r} no longer "
                f"validates as {event_class.__qualname__}: {exc}",
                event_type=event_type,
            ) from exc

    def _current_version(self, event_class: type[DomainEvent]) -> int:
        version = self._versions.get(event_class)
        if version is None:
            version = self._versions[event_class] = event_class.current_event_version()
        return version


__all__ = ["RowDecoder"]
