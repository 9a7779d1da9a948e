"""Upcasters: turn an event stored under an old schema version into the current one.

An upcaster is a function taking the stored event dict (the shape ``to_dict()``
produces) of version *n* and returning the dict of version *n + 1*; the library sets
``event_version``. Chains run on read, before validation, so ``load``, ``read_all`` and
projections all see the current class::

    @upcaster("OrderCreated", from_version=1)
    def split_name(data):
        first, _, last = data.pop("name").partition(" ")
        return {**data, "first_name": first, "last_name": last}
"""

from __future__ import annotations

from collections.abc import Callable

from .registry import EventRegistry, Upcaster, default_registry


def upcaster(
    event_type: str, from_version: int, *, registry: EventRegistry | None = None
) -> Callable[[Upcaster], Upcaster]:
    """Register the decorated function as the upcaster of ``event_type`` from ``from_version``."""

    def decorator(func: Upcaster) -> Upcaster:
        (registry or default_registry).register_upcaster(event_type, from_version, func)
        return func

    return decorator


def find_broken_upcaster_chains(registry: EventRegistry | None = None) -> list[str]:
    """Describe every event type whose upcaster chain cannot reach its current version.

    An event type with upcasters must have one for every version from the lowest
    registered ``from_version`` up to its current version minus one.
    """
    reg = registry or default_registry
    problems: list[str] = []
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
