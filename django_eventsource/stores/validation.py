"""Input checks shared by every store, so all stores raise the same errors for the same input."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from ..events.base import DomainEvent
from ..exceptions import (
    DuplicateEventIdError,
    InvalidEventError,
    InvalidReadOptionsError,
    OptimisticLockError,
)
from .interface import MAX_POSITION, ExpectedVersion, make_stream_id

#: The largest ``event_version`` the column holds on every database (Django's range of a
#: ``PositiveIntegerField``).
MAX_EVENT_VERSION = 2**31 - 1

#: Characters no database stores alike: PostgreSQL refuses NUL, and unpaired UTF-16
#: surrogates are not Unicode (drivers cannot encode them).
_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")
#: The same characters as ``json.dumps`` writes them (``\u`` escapes, lower-case hex);
#: group 1 is the run of backslashes (odd: an escape; even: escaped backslashes and a
#: plain "u"), group 2 the code: NUL, a valid surrogate pair, or a lone surrogate.
_UNSTORABLE_ESCAPE = re.compile(
    r"(\\+)u(0000|d[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}|d[89a-f][0-9a-f]{2})"
)


#: ``json.dumps(value, allow_nan=False)``, without building an encoder per call.
_encode_json = json.JSONEncoder(allow_nan=False).encode


def coerce_uuid(value: Any, what: str) -> UUID:
    """Return ``value`` as a UUID, or raise ``InvalidEventError`` naming ``what``."""
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            pass
    raise InvalidEventError(f"{what} must be a UUID, got {value!r}")


def ensure_aware(value: datetime | None, what: str) -> datetime | None:
    """Return ``value`` unless it is a naive datetime (or not a datetime): then raise.

    Timestamps are stored in UTC; comparing them with a naive datetime would fail with
    a ``TypeError`` deep inside a read, or silently shift by the server's offset.
    """
    if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
        raise InvalidEventError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value


def check_position(value: Any, what: str) -> None:
    """Raise ``InvalidReadOptionsError`` unless ``value`` is an integer a database can compare.

    Positions and versions are 64-bit integers in the database: SQLite cannot even bind a
    larger Python int, where PostgreSQL would compare it.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value > MAX_POSITION:
        raise InvalidReadOptionsError(
            f"{what} must be an integer of at most {MAX_POSITION}, got {value!r}"
        )


def check_storable_text(value: str | None, what: str) -> None:
    """Raise ``InvalidEventError`` when ``value`` holds a character no database stores alike."""
    if value is not None and (found := _UNSTORABLE_CHARACTER.search(value)):
        raise InvalidEventError(f"{what} contains {_describe(f'{ord(found.group()):04x}')}")


def storable_json(value: Any, what: str) -> str:
    """``value`` as the JSON text Django writes, checked so that every database stores it.

    Raises ``InvalidEventError`` for values that are not JSON (NaN, infinities, objects
    the encoder does not know) and for text PostgreSQL refuses where SQLite would store
    it: NUL characters and unpaired surrogates. Those appear in the text as ``\\u``
    escapes, so text without any escape, most of it, costs one substring search.
    """
    try:
        text = _encode_json(value)
    except (TypeError, ValueError) as exc:
        raise InvalidEventError(f"{what} is not JSON: {exc}") from None
    if "\\u" in text:
        for match in _UNSTORABLE_ESCAPE.finditer(text):
            backslashes, code = match.groups()
            if len(backslashes) % 2 and len(code) == 4:
                raise InvalidEventError(f"{what} contains {_describe(code)}")
    return text


def storable_event_json(event: DomainEvent) -> tuple[str, str]:
    """The JSON text of ``event``'s payload and metadata, once the event is known storable.

    Checks what the databases store differently (see ``storable_json``, and the
    ``event_type``, ``actor_id`` and ``event_version`` columns) before anything is
    written; the ``InvalidEventError`` names the event.
    """
    try:
        check_storable_text(event.event_type, "event_type")
        check_storable_text(event.actor_id, "actor_id")
        if event.event_version > MAX_EVENT_VERSION:
            raise InvalidEventError(
                f"event_version must be at most {MAX_EVENT_VERSION}, got {event.event_version}"
            )
        metadata = event.metadata
        return (
            storable_json(event.payload(), "payload"),
            "{}"
            if type(metadata) is dict and not metadata
            else storable_json(metadata, "metadata"),
        )
    except InvalidEventError as exc:
        raise InvalidEventError(
            f"Event {event.event_id} ({event.event_type!r}) cannot be stored: {exc}"
        ) from None


def _describe(code: str) -> str:
    if code == "0000":
        return "a NUL character (\\u0000), which PostgreSQL cannot store"
    return f"an unpaired surrogate (\\u{code}), which is not valid Unicode"


def validate_append(
    aggregate_id: Any,
    aggregate_type: Any,
    events: Sequence[Any],
    expected_version: Any,
) -> tuple[UUID, list[DomainEvent]]:
    """Check the arguments of ``append_events``; return the aggregate id and event list."""
    agg_id = coerce_uuid(aggregate_id, "aggregate_id")
    if not isinstance(aggregate_type, str) or not aggregate_type:
        raise InvalidEventError(
            f"aggregate_type must be a non-empty string, got {aggregate_type!r}"
        )
    check_storable_text(aggregate_type, "aggregate_type")
    if (
        not isinstance(expected_version, int)
        or isinstance(expected_version, bool)
        or expected_version < ExpectedVersion.STREAM_EXISTS
    ):
        raise InvalidEventError(
            f"expected_version must be an integer >= 0 or an ExpectedVersion constant, "
            f"got {expected_version!r}"
        )
    event_list = list(events)
    seen: set[UUID] = set()
    previous: int | None = None
    for event in event_list:
        if not isinstance(event, DomainEvent):
            raise InvalidEventError(f"Expected DomainEvent instances, got {type(event).__name__}")
        if event.aggregate_id != agg_id or event.aggregate_type != aggregate_type:
            raise InvalidEventError(
                f"Event {event.event_id} ({event.event_type}) belongs to "
                f"{event.aggregate_type}:{event.aggregate_id}, not to {aggregate_type}:{agg_id}"
            )
        if event.event_id in seen:
            raise InvalidEventError(f"Event id {event.event_id} appears twice in one append")
        seen.add(event.event_id)
        if previous is not None and event.aggregate_version != previous + 1:
            raise InvalidEventError(
                f"Event versions must be contiguous: {event.aggregate_version} follows {previous}"
            )
        previous = event.aggregate_version
    return agg_id, event_list


def check_existing_ids(
    aggregate_id: UUID,
    aggregate_type: str,
    events: Sequence[DomainEvent],
    existing: Mapping[UUID, tuple[str, UUID, int]],
    current_version: int | None = None,
) -> bool:
    """Decide what to do about event ids that are already stored.

    ``existing`` maps stored event ids to ``(aggregate_type, aggregate_id, version)``.
    Returns True when every event is already stored at its position (an idempotent
    retry). Raises ``DuplicateEventIdError`` when one is stored elsewhere, and
    ``OptimisticLockError`` when only part of the batch is stored (reporting
    ``current_version`` as the actual version when the caller knows it).
    """
    if not existing:
        return False
    for event in events:
        found = existing.get(event.event_id)
        if found is None:
            continue
        stored_type, stored_id, stored_version = found
        if (stored_type, stored_id, stored_version) != (
            aggregate_type,
            aggregate_id,
            event.aggregate_version,
        ):
            raise DuplicateEventIdError(
                event.event_id, make_stream_id(stored_id, stored_type), stored_version
            )
    if len(existing) == len(events):
        return True
    actual = current_version
    if actual is None:
        actual = max(v for (_, _, v) in existing.values())
    raise OptimisticLockError(aggregate_id, events[0].aggregate_version - 1, actual)


def check_versions(
    aggregate_id: UUID,
    events: Sequence[DomainEvent],
    expected_version: int,
    current_version: int,
) -> None:
    """Raise ``OptimisticLockError``/``InvalidEventError`` unless the append may proceed."""
    if expected_version == ExpectedVersion.STREAM_EXISTS:
        if current_version == 0:
            raise OptimisticLockError(aggregate_id, expected_version, current_version)
    elif expected_version != ExpectedVersion.ANY and expected_version != current_version:
        raise OptimisticLockError(aggregate_id, expected_version, current_version)
    first = events[0].aggregate_version
    if first != current_version + 1:
        if expected_version >= 0:
            raise InvalidEventError(
                f"The first event has aggregate_version {first} but the stream "
                f"{aggregate_id} is at version {current_version}; expected {current_version + 1}"
            )
        # Events built against a stale view of the stream.
        raise OptimisticLockError(aggregate_id, first - 1, current_version)
