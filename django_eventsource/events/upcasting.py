"""Upcasters: turn an event stored under an old schema version into the current one.

An upcaster is a function taking the stored event dict (the shape ``to_dict()``
produces) of version *n* and returning the dict of version *n + 1*; the library sets
``event_version``. Chains run on read, before validation, so ``load``, ``read_all`` and
projections all see the current class::

    @upcaster("OrderCreated", from_version=1)
    def split_name(data):
        first, _, last = data.pop("name").partition(" ")
        return {**data, "first_name": first, "last_name": last}

``manage.py check`` reports a chain with a missing link (``django_eventsource.E002``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..exceptions import UpcastError
from .registry import EventRegistry, Upcaster, resolve_registry


def upcaster(
    event_type: str, from_version: int, *, registry: EventRegistry | None = None
) -> Callable[[Upcaster], Upcaster]:
    """Register the decorated function as the upcaster of ``event_type`` from ``from_version``.

    The function receives a copy of the stored dict of version ``from_version`` and
    returns the dict of the next version. An exception it raises, or a return value that
    is not a dict, surfaces as ``UpcastError`` naming the event. The decorated function is
    returned unchanged, so it can be unit-tested directly.
    """
    if not isinstance(from_version, int) or isinstance(from_version, bool) or from_version < 1:
        raise ValueError(f"from_version must be an integer >= 1, got {from_version!r}")

    def decorator(func: Upcaster) -> Upcaster:
        @functools.wraps(func)
        def checked(data: dict[str, Any]) -> dict[str, Any]:
            try:
                result = func(data)
            except UpcastError:
                raise
            except Exception as exc:
                raise UpcastError(
                    f"Upcaster {func.__qualname__} failed on {event_type!r} event "
                    f"{data.get('event_id')} (version {from_version}): {exc!r}",
                    event_type=event_type,
                ) from exc
            if not isinstance(result, dict):
                raise UpcastError(
                    f"Upcaster {func.__qualname__} of {event_type!r} from version "
                    f"{from_version} returned {type(result).__name__}, not a dict",
                    event_type=event_type,
                )
            return result

        resolve_registry(registry).register_upcaster(event_type, from_version, checked)
        return func

    return decorator


def find_broken_upcaster_chains(registry: EventRegistry | None = None) -> list[str]:
    """Describe every problem that would make an old stored event fail to load.

    An event type with upcasters must have one for every version from the lowest
    registered ``from_version`` up to its current version minus one, none at or beyond
    its current version, and the event type itself must be registered (an upcaster under
    a misspelt name would otherwise never run).
    """
    reg = resolve_registry(registry)
    problems: list[str] = []
    registered = set(reg.list_types())
    # The registry exposes upcasters per known type only; orphans need its own table.
    for name in sorted({event_type for event_type, _ in reg._upcasters}):
        if name not in registered:
            problems.append(
                f"{name}: upcaster(s) registered for an event type that is not registered"
            )
    for name, event_class in reg.items():
        versions = reg.upcaster_versions(name)
        current = event_class.current_event_version()
        if not versions:
            continue
        missing = [v for v in range(versions[0], current) if v not in versions]
        beyond = [v for v in versions if v >= current]
        if missing:
            problems.append(
                f"{name}: no upcaster from version(s) {', '.join(map(str, missing))} "
                f"(current version {current})"
            )
        if beyond:
            problems.append(
                f"{name}: upcaster(s) from version(s) {', '.join(map(str, beyond))} "
                f"but the current version is {current}"
            )
    return problems


__all__ = ["find_broken_upcaster_chains", "upcaster"]
