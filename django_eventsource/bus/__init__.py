"""Event buses: in-process and Redis Streams.

``get_event_bus()`` builds the bus named by ``EVENTSOURCE_EVENT_BUS`` once per process,
and builds it again after a setting it was built from changes (``override_settings``).
This module stays light: the Redis client is imported only when the Redis bus is built.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from ..conf import conf

if TYPE_CHECKING:
    from .interface import EventBus
    from .redis import RedisEventBus

#: Short names accepted by ``EVENTSOURCE_EVENT_BUS`` besides a dotted path.
BUS_NAMES = ("memory", "redis")

#: The settings the built-in buses are built from (``EVENTSOURCE_REDIS_*`` as a prefix):
#: when one of them changes, the process-wide bus is built again on next use.
BUS_SETTINGS = ("EVENTSOURCE_EVENT_BUS", "EVENTSOURCE_EVENT_HANDLERS", "EVENTSOURCE_REDIS_")

_lock = threading.Lock()
_bus: EventBus | None = None
_bus_setting: object = None
_built = False


def build_event_bus(name: object) -> EventBus | None:
    """A new bus for a value of ``EVENTSOURCE_EVENT_BUS`` (``None`` gives ``None``).

    ``"memory"`` gives an ``InMemoryEventBus`` with every handler registered in
    ``django_eventsource.bus.consumers`` subscribed (so they run inside ``publish_outbox``),
    ``"redis"`` a ``RedisEventBus`` configured
    from the ``EVENTSOURCE_REDIS_*`` settings, and a dotted path an instance of that
    ``EventBus`` subclass (called without arguments) or whatever that factory returns.
    """
    from .interface import EventBus

    if name is None:
        return None
    if name == "memory":
        from .consumers import attach_handlers
        from .memory import InMemoryEventBus

        memory_bus = InMemoryEventBus()
        attach_handlers(memory_bus)
        return memory_bus
    if name == "redis":
        return build_redis_bus()
    if not isinstance(name, str) or "." not in name:
        raise ImproperlyConfigured(
            f"EVENTSOURCE_EVENT_BUS must be None, 'memory', 'redis' or a dotted path, got {name!r}."
        )
    try:
        factory = import_string(name)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"EVENTSOURCE_EVENT_BUS {name!r} cannot be imported: {exc}"
        ) from exc
    bus = factory()
    if not isinstance(bus, EventBus):
        raise ImproperlyConfigured(
            f"EVENTSOURCE_EVENT_BUS {name!r} returned {type(bus).__name__}, not an EventBus."
        )
    return bus


def build_redis_bus(
    consumer_group: str | None = None,
    consumer_name: str | None = None,
    *,
    like: RedisEventBus | None = None,
) -> RedisEventBus:
    """A new ``RedisEventBus``, the one place where the app builds one.

    It is configured from the ``EVENTSOURCE_REDIS_*`` settings, or takes the configuration
    and event registry of ``like`` (a bus built by a dotted-path factory).
    ``consumer_group`` and ``consumer_name``, when given, replace the configured ones.
    """
    from .redis import RedisEventBus, RedisEventBusConfig

    if like is None:
        config, registry = RedisEventBusConfig.from_settings(), None
    else:
        config, registry = like.config, like.registry
    config = replace(
        config,
        consumer_group=consumer_group or config.consumer_group,
        consumer_name=consumer_name or config.consumer_name,
    )
    return RedisEventBus(config, registry)


def get_event_bus() -> EventBus | None:
    """The process-wide bus named by ``EVENTSOURCE_EVENT_BUS`` (built on first use).

    The bus is shut down and rebuilt on next use when ``EVENTSOURCE_EVENT_BUS``,
    ``EVENTSOURCE_EVENT_HANDLERS`` or any ``EVENTSOURCE_REDIS_*`` setting changes
    (``override_settings``, through Django's ``setting_changed`` signal);
    ``reset_event_bus()`` drops it explicitly.
    """
    global _bus, _bus_setting, _built
    name = conf.EVENT_BUS
    with _lock:
        if not _built or _bus_setting != name:
            _shutdown(_bus)
            _bus = build_event_bus(name)
            _bus_setting = name
            _built = True
        return _bus


def reset_event_bus() -> None:
    """Shut down and forget the process-wide bus; the next ``get_event_bus()`` rebuilds it."""
    global _bus, _bus_setting, _built
    with _lock:
        _shutdown(_bus)
        _bus, _bus_setting, _built = None, None, False


def _shutdown(bus: EventBus | None) -> None:
    if bus is not None:
        bus.shutdown(timeout=5.0)


@receiver(setting_changed)
def _rebuild_after_bus_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # Without this, a relay under override_settings(EVENTSOURCE_REDIS_URL=...) would keep
    # publishing to the server the bus was first built for. A dotted-path factory may
    # read other settings too; reset_event_bus() covers those.
    if setting.startswith(BUS_SETTINGS):
        reset_event_bus()


__all__ = [
    "BUS_NAMES",
    "BUS_SETTINGS",
    "build_event_bus",
    "build_redis_bus",
    "get_event_bus",
    "reset_event_bus",
]
