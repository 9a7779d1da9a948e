"""Maps stored event type names to ``DomainEvent`` classes, and upcasts old versions."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar, overload

from pydantic import ValidationError

from ..exceptions import (
    DuplicateEventTypeError,
    EventTypeNotFoundError,
    SerializationError,
    UpcastError,
)
from .base import DomainEvent

E = TypeVar("E", bound=type[DomainEvent])

#: An upcaster takes the stored dict of version *n* and returns the dict of version *n + 1*.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class EventRegistry:
    """A thread-safe map from event type name to event class.

    Lookups do not take the lock (a dict read is atomic); registration does. Each
    registry also holds the upcasters for its event types, so several registries can be
    used side by side (for example one per test).
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._types: dict[str, type[DomainEvent]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    # -- registration -------------------------------------------------------------------

    def register(
        self, event_class: type[DomainEvent], event_type: str | None = None
    ) -> type[DomainEvent]:
        """Register ``event_class`` under ``event_type`` (default: its type name).

        When the class neither declares ``event_type`` nor was renamed before, an
        explicit name becomes its type name, so new instances are stored under the name
        they are read back by. Otherwise the class keeps its name and the explicit one is
        an extra alias (for example an old name still found in stored events).
        """
        if not (isinstance(event_class, type) and issubclass(event_class, DomainEvent)):
            raise TypeError(f"{event_class!r} is not a DomainEvent subclass")
        name = event_type or event_class.event_type_name()
        rename = (
            bool(event_type)
            and not event_class.declares_event_type()
            and event_class.event_type_name() == event_class.__name__
        )
        with self._lock:
            existing = self._types.get(name)
            if existing is not None and existing is not event_class:
                same_definition = (
                    existing.__module__ == event_class.__module__
                    and existing.__qualname__ == event_class.__qualname__
                )
                # A re-imported module (autoreload, importlib.reload) defines the class
                # again; replacing it is what the user expects.
                if not same_definition:
                    raise DuplicateEventTypeError(name, existing, event_class)
            if rename:
                event_class.set_event_type_name(name)
            self._types[name] = event_class
        return event_class

    def unregister(self, event_type: str) -> bool:
        """Remove a type and its upcasters; return whether the type was registered.

        An unknown name is not an error (``False``), so tests can clean up freely.
        """
        with self._lock:
            removed = self._types.pop(event_type, None) is not None
            for key in [k for k in self._upcasters if k[0] == event_type]:
                del self._upcasters[key]
        return removed

    def clear(self) -> None:
        """Remove every registered type and upcaster."""
        with self._lock:
            self._types.clear()
            self._upcasters.clear()

    # -- lookup -------------------------------------------------------------------------

    def get(self, event_type: str) -> type[DomainEvent]:
        """The class for ``event_type``; ``EventTypeNotFoundError`` lists the known ones."""
        try:
            return self._types[event_type]
        except KeyError:
            raise EventTypeNotFoundError(event_type, list(self._types)) from None

    def get_or_none(self, event_type: str) -> type[DomainEvent] | None:
        """The class for ``event_type``, or ``None``."""
        return self._types.get(event_type)

    def contains(self, event_type: str) -> bool:
        """Whether ``event_type`` is registered."""
        return event_type in self._types

    __contains__ = contains

    def list_types(self) -> list[str]:
        """Registered type names, sorted."""
        return sorted(self._types)

    def items(self) -> list[tuple[str, type[DomainEvent]]]:
        """(name, class) pairs, sorted by name."""
        return sorted(self._types.items())

    def __len__(self) -> int:
        """The number of registered type names (aliases count once each)."""
        return len(self._types)

    def __bool__(self) -> bool:
        # Without this, ``__len__`` makes an empty registry falsy, and
        # ``registry or default_registry`` would silently swap in the default one.
        return True

    # -- upcasting ----------------------------------------------------------------------

    def register_upcaster(self, event_type: str, from_version: int, func: Upcaster) -> None:
        """Register ``func`` to turn version ``from_version`` of ``event_type`` into the next."""
        if from_version < 1:
            raise ValueError("from_version must be >= 1")
        with self._lock:
            key = (event_type, from_version)
            if key in self._upcasters and self._upcasters[key] is not func:
                existing = self._upcasters[key]
                if getattr(existing, "__qualname__", None) != getattr(func, "__qualname__", ""):
                    raise UpcastError(
                        f"An upcaster for {event_type!r} from version {from_version} "
                        "is already registered",
                        event_type=event_type,
                    )
            self._upcasters[key] = func

    def upcaster_versions(self, event_type: str) -> list[int]:
        """The ``from_version`` of every upcaster registered for ``event_type``, sorted."""
        return sorted(v for (t, v) in self._upcasters if t == event_type)

    def upcast(self, data: dict[str, Any]) -> dict[str, Any]:
        """Run the upcaster chain on a stored event dict up to the class's current version."""
        event_type = data.get("event_type")
        version = int(data.get("event_version") or 1)
        if not isinstance(event_type, str):
            raise SerializationError("Stored event has no event_type")
        event_class = self.get(event_type)
        target = event_class.current_event_version()
        if version >= target:
            return data
        while version < target:
            func = self._upcasters.get((event_type, version))
            if func is None:
                raise UpcastError(
                    f"No upcaster registered for {event_type!r} from version {version} "
                    f"(current version is {target})",
                    event_type=event_type,
                )
            data = dict(func(dict(data)))
            version += 1
            data["event_version"] = version
        return data

    def deserialize(self, data: dict[str, Any]) -> DomainEvent:
        """Build an event from its stored dict: look up the class, upcast, validate."""
        event_type = data.get("event_type")
        if not isinstance(event_type, str):
            raise SerializationError("Stored event has no event_type")
        event_class = self.get(event_type)
        if int(data.get("event_version") or 1) < event_class.current_event_version():
            data = self.upcast(data)
        try:
            return event_class.model_validate(data)
        except ValidationError as exc:
            raise SerializationError(
                f"Stored event {data.get('event_id')} of type {event_type!r} no longer "
                f"validates as {event_class.__qualname__}: {exc}",
                event_type=event_type,
            ) from exc


#: The registry used when none is passed explicitly.
default_registry = EventRegistry()


def resolve_registry(registry: EventRegistry | None) -> EventRegistry:
    """``registry``, or the default one when it is ``None``.

    Compare with ``None``, never ``registry or default_registry``: a registry that is
    passed must be used whatever its truth value.
    """
    return default_registry if registry is None else registry


@overload
def register_event(event_class: E, /) -> E: ...


@overload
def register_event(
    *, event_type: str | None = None, registry: EventRegistry | None = None
) -> Callable[[E], E]: ...


def register_event(
    event_class: E | None = None,
    /,
    *,
    event_type: str | None = None,
    registry: EventRegistry | None = None,
) -> E | Callable[[E], E]:
    """Register an event class; usable as ``@register_event`` or ``@register_event(...)``."""
    target = resolve_registry(registry)

    def decorator(cls: E) -> E:
        target.register(cls, event_type)
        return cls

    if event_class is not None:
        return decorator(event_class)
    return decorator


def get_event_class(event_type: str, registry: EventRegistry | None = None) -> type[DomainEvent]:
    """The class registered for ``event_type`` (``EventTypeNotFoundError`` otherwise)."""
    return resolve_registry(registry).get(event_type)


def get_event_class_or_none(
    event_type: str, registry: EventRegistry | None = None
) -> type[DomainEvent] | None:
    """The class registered for ``event_type``, or ``None``."""
    return resolve_registry(registry).get_or_none(event_type)


def is_event_registered(event_type: str, registry: EventRegistry | None = None) -> bool:
    """Whether ``event_type`` is registered."""
    return resolve_registry(registry).contains(event_type)


def list_registered_events(registry: EventRegistry | None = None) -> list[str]:
    """Every registered type name, sorted."""
    return resolve_registry(registry).list_types()


__all__ = [
    "EventRegistry",
    "Upcaster",
    "default_registry",
    "get_event_class",
    "get_event_class_or_none",
    "is_event_registered",
    "list_registered_events",
    "register_event",
    "resolve_registry",
]
