"""Exception hierarchy. Every error raised by the library derives from EventSourceError."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Self
from uuid import UUID


def _rebuild(cls: type[EventSourceError], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return cls(*args, **kwargs)


class EventSourceError(Exception):
    """Base class for every error raised by django_eventsource.

    Errors survive pickling with their attributes (Celery results, multiprocessing):
    they are rebuilt from the arguments they were created with, not from the message.
    """

    _init_args: tuple[Any, ...]
    _init_kwargs: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        error = super().__new__(cls, *args)
        error._init_args = args
        error._init_kwargs = kwargs
        return error

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_init_args", "_init_kwargs")}
        return _rebuild, (type(self), self._init_args, self._init_kwargs), state


class OptimisticLockError(EventSourceError):
    """The stream's version was not the one the writer expected.

    Raised by ``append_events`` (and so by ``AggregateRepository.save``) when another
    writer got there first. Reload the aggregate and retry the command.
    """

    def __init__(self, aggregate_id: UUID, expected_version: int, actual_version: int) -> None:
        self.aggregate_id = aggregate_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        super().__init__(
            f"Optimistic lock failed for aggregate {aggregate_id}: "
            f"expected version {expected_version}, actual version {actual_version}"
        )


class EventNotFoundError(EventSourceError):
    """An event looked up by id does not exist."""

    def __init__(self, event_id: UUID) -> None:
        self.event_id = event_id
        super().__init__(f"Event {event_id} not found")


class AggregateNotFoundError(EventSourceError):
    """An aggregate has no stored events (or none visible to the caller's tenant)."""

    def __init__(self, aggregate_id: UUID, aggregate_type: str | None = None) -> None:
        self.aggregate_id = aggregate_id
        self.aggregate_type = aggregate_type
        label = f"{aggregate_type} " if aggregate_type else "Aggregate "
        super().__init__(f"{label}{aggregate_id} not found")


class EventVersionError(EventSourceError):
    """An event's ``aggregate_version`` does not follow the aggregate's current version.

    ``actual_version`` (also available as ``event_version``) is the version the event
    carries; ``expected_version`` the one the aggregate needed; ``event_id`` names the
    refused event.
    """

    def __init__(
        self,
        aggregate_id: UUID,
        expected_version: int,
        event_version: int,
        *,
        event_id: UUID | None = None,
    ) -> None:
        self.aggregate_id = aggregate_id
        self.expected_version = expected_version
        self.actual_version = event_version
        self.event_version = event_version
        self.event_id = event_id
        subject = f"Event {event_id}" if event_id is not None else "An event"
        super().__init__(
            f"{subject} for aggregate {aggregate_id} has aggregate_version {event_version}, "
            f"expected version {expected_version}"
        )


class UnhandledEventError(EventSourceError):
    """A declarative aggregate or projection received an event it has no handler for."""

    def __init__(self, owner: str, event_type: str) -> None:
        self.owner = owner
        self.event_type = event_type
        super().__init__(f"{owner} has no handler for event type {event_type!r}")


class ProjectionError(EventSourceError):
    """A projection failed to process an event."""

    def __init__(self, projection_name: str, event_id: UUID | None, message: str) -> None:
        self.projection_name = projection_name
        self.event_id = event_id
        super().__init__(f"Projection {projection_name!r} failed on event {event_id}: {message}")


class EventStoreError(EventSourceError):
    """An event store operation failed, or was given invalid input."""


class InvalidEventError(EventStoreError, ValueError):
    """Input to the store or an aggregate is malformed; nothing was written.

    Examples: a non-UUID aggregate id, an event belonging to another aggregate, versions
    that are not contiguous, a negative expected version.
    """


class InvalidReadOptionsError(EventStoreError, ValueError):
    """``ReadOptions`` were given a value they cannot use (a negative limit, a naive datetime).

    Raised when the options are built, before any read.
    """


class DuplicateEventIdError(EventStoreError):
    """An event id passed to ``append_events`` is already stored in another stream or position."""

    def __init__(self, event_id: UUID, stream_id: str, version: int) -> None:
        self.event_id = event_id
        self.stream_id = stream_id
        self.version = version
        super().__init__(
            f"Event id {event_id} is already stored in stream {stream_id} at version {version}"
        )


class EventBusError(EventSourceError):
    """An event bus operation failed."""


class CheckpointError(EventSourceError):
    """A checkpoint operation failed."""


class UnknownProjectionError(EventSourceError, LookupError):
    """A projection name that ``EVENTSOURCE_PROJECTIONS`` does not configure."""

    def __init__(self, unknown: list[str], configured: list[str]) -> None:
        self.unknown = unknown
        self.configured = configured
        listed = ", ".join(configured) if configured else "none (EVENTSOURCE_PROJECTIONS is empty)"
        super().__init__(
            f"Unknown projection {', '.join(map(repr, unknown))}; configured: {listed}"
        )


class ProjectionBusyError(EventSourceError):
    """Another process is running the projection (it holds the lock or the lease)."""


class SerializationError(EventSourceError):
    """An event could not be serialized or deserialized (payload no longer validates).

    ``event_type`` names the stored type when it is known, so a failure can be traced to
    the event class (or upcaster) to fix.
    """

    def __init__(self, message: str, *, event_type: str | None = None) -> None:
        self.event_type = event_type
        super().__init__(message)


class UpcastError(SerializationError):
    """An upcaster chain is broken or an upcaster returned invalid data."""


class EventTypeNotFoundError(EventSourceError, KeyError):
    """No event class is registered under the requested type name."""

    def __init__(self, event_type: str, available: Iterable[str] = ()) -> None:
        self.event_type = event_type
        self.available_types = sorted(available)
        listed = ", ".join(self.available_types) if self.available_types else "(none)"
        super().__init__(
            f"Unknown event type {event_type!r}; did you forget to register it "
            f"(@register_event)? Registered event types: {listed}"
        )

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class DuplicateEventTypeError(EventSourceError, ValueError):
    """Another class is already registered under the same event type name."""

    def __init__(self, event_type: str, existing: type, new: type) -> None:
        self.event_type = event_type
        self.existing_class = existing
        self.new_class = new
        super().__init__(
            f"Event type {event_type!r} is already registered to "
            f"{existing.__module__}.{existing.__qualname__}; cannot register "
            f"{new.__module__}.{new.__qualname__}"
        )


class RedisNotAvailableError(EventBusError, ImportError):
    """The Redis event bus was requested but the ``redis`` package is not installed."""

    def __init__(self) -> None:
        super().__init__(
            "The Redis event bus needs the 'redis' package: pip install 'django-eventsource[redis]'"
        )


class SegmentCountMismatchError(EventSourceError):
    """A projection's ``segments`` differs from the segment count of its checkpoints.

    Run ``manage.py resize_projection NAME`` to move the checkpoints to the new count.
    """


__all__ = [
    "AggregateNotFoundError",
    "CheckpointError",
    "DuplicateEventIdError",
    "DuplicateEventTypeError",
    "EventBusError",
    "EventNotFoundError",
    "EventSourceError",
    "EventStoreError",
    "EventTypeNotFoundError",
    "EventVersionError",
    "InvalidEventError",
    "InvalidReadOptionsError",
    "OptimisticLockError",
    "ProjectionBusyError",
    "ProjectionError",
    "RedisNotAvailableError",
    "SegmentCountMismatchError",
    "SerializationError",
    "UnhandledEventError",
    "UnknownProjectionError",
    "UpcastError",
]
