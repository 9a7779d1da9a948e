"""System checks (``django_eventsource.E001`` ...), run by ``manage.py check`` and at start-up.

- E001: ``EVENTSOURCE_PROJECTIONS`` is not a list of importable dotted paths.
- E002: an upcaster chain cannot reach its event type's current version.
- E003: a numeric setting is out of range.
- E004: ``EVENTSOURCE_EVENT_BUS`` is not ``None``, ``"memory"``, ``"redis"`` or an
  importable dotted path.
- E010-E012: the configured event bus cannot be used (see ``check_bus_backend``).
- E020: a projection of ``EVENTSOURCE_PROJECTIONS`` handles (or subscribes to) an event
  class that nothing in the default event registry matches, so ``run_projections``
  cannot read such events back.
- E030: ``EVENTSOURCE_REDIS_PARTITIONS`` is not an integer from 1 to 1024, a lease
  (``EVENTSOURCE_REDIS_PARTITION_LEASE``, ``EVENTSOURCE_OUTBOX_CLAIM_LEASE``) is not a
  positive number, or ``EVENTSOURCE_PROJECTION_LOCK`` is not ``"advisory"``/``"lease"``.
- W001: the outbox is enabled but there is no bus to publish to.
- W002: ``EVENTSOURCE_TRACING`` is ``True`` but ``opentelemetry-api`` is not installed.
- W003: a SQLite database the app writes to lacks ``"transaction_mode": "IMMEDIATE"`` or
  a busy ``timeout`` in its ``OPTIONS``, so concurrent writers fail with "database is
  locked" instead of waiting.
- W020: a projection of ``EVENTSOURCE_PROJECTIONS`` subscribes to an event class it has
  no ``@handles`` method for, so those events are read and skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.core.checks import CheckMessage, Error, Warning, register
from django.db import connections, router
from django.utils.module_loading import import_string

from .conf import conf

#: Settings that must be integers >= 1.
POSITIVE_INTEGER_SETTINGS = (
    "PROJECTION_BATCH_SIZE",
    "OUTBOX_BATCH_SIZE",
    "MAX_RETRIES",
)

#: Settings that must be integers >= 1 when they are not None.
OPTIONAL_POSITIVE_INTEGER_SETTINGS = ("OUTBOX_MAX_ATTEMPTS",)

#: Settings that must be numbers >= 0 (seconds).
NON_NEGATIVE_NUMBER_SETTINGS = (
    "POLL_INTERVAL",
    "RETRY_BACKOFF",
    "RETRY_BACKOFF_MAX",
    "OUTBOX_CLAIM_TIMEOUT",
    "OUTBOX_GIVE_UP_AFTER",
)

BUILTIN_EVENT_BUSES = ("memory", "redis")


def _is_integer(value: object) -> bool:
    # bool is an int subclass, but True is never a sensible batch size.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@register()
def check_projections(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """E001: every entry of EVENTSOURCE_PROJECTIONS must import."""
    errors: list[CheckMessage] = []
    paths = conf.PROJECTIONS
    if not isinstance(paths, list | tuple):
        return [
            Error(
                "EVENTSOURCE_PROJECTIONS must be a list of dotted paths.",
                hint="For example: EVENTSOURCE_PROJECTIONS = ['orders.projections.OrderSummary']",
                id="django_eventsource.E001",
            )
        ]
    for path in paths:
        if not isinstance(path, str):
            errors.append(
                Error(
                    f"EVENTSOURCE_PROJECTIONS entry {path!r} is not a dotted path string.",
                    hint="List the projection classes by dotted path, not the classes "
                    "themselves, so that settings do not import application code.",
                    id="django_eventsource.E001",
                )
            )
            continue
        try:
            import_string(path)
        except ImportError as exc:
            errors.append(
                Error(
                    f"EVENTSOURCE_PROJECTIONS entry {path!r} cannot be imported: {exc}",
                    hint="Check the dotted path of the projection class.",
                    id="django_eventsource.E001",
                )
            )
    return errors


@register()
def check_upcasters(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """E002: upcaster chains must reach each event type's current version."""
    from .events.upcasting import find_broken_upcaster_chains

    return [
        Error(
            f"Broken upcaster chain: {problem}",
            hint="Register an @upcaster for every version from the oldest stored one "
            "up to the current event_version minus one.",
            id="django_eventsource.E002",
        )
        for problem in find_broken_upcaster_chains()
    ]


@register()
def check_numeric_settings(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """E003: numeric settings must be in range; W001: an enabled outbox needs a bus."""
    messages: list[CheckMessage] = []
    for name in POSITIVE_INTEGER_SETTINGS + OPTIONAL_POSITIVE_INTEGER_SETTINGS:
        value = conf.raw(name)
        if value is None and name in OPTIONAL_POSITIVE_INTEGER_SETTINGS:
            continue
        if not _is_integer(value) or value < 1:
            messages.append(
                Error(
                    f"EVENTSOURCE_{name} must be a positive integer, got {value!r}.",
                    hint=f"Remove EVENTSOURCE_{name} to use the default of {conf.default(name)!r}.",
                    id="django_eventsource.E003",
                )
            )
    for name in NON_NEGATIVE_NUMBER_SETTINGS:
        value = conf.raw(name)
        if not _is_number(value) or value < 0:
            messages.append(
                Error(
                    f"EVENTSOURCE_{name} must be a non-negative number of seconds, got {value!r}.",
                    hint=f"Remove EVENTSOURCE_{name} to use the default of {conf.default(name)!r}.",
                    id="django_eventsource.E003",
                )
            )
    if conf.OUTBOX_ENABLED and conf.EVENT_BUS is None:
        messages.append(
            Warning(
                "EVENTSOURCE_OUTBOX_ENABLED is on but EVENTSOURCE_EVENT_BUS is None: "
                "publish_outbox has nowhere to publish.",
                hint="Set EVENTSOURCE_EVENT_BUS to 'memory', 'redis' or a dotted path.",
                id="django_eventsource.W001",
            )
        )
    return messages


@register()
def check_event_bus(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """E004: EVENTSOURCE_EVENT_BUS must name a bus that can be built."""
    value = conf.EVENT_BUS
    if value is None or value in BUILTIN_EVENT_BUSES:
        return []
    hint = "Use None, 'memory', 'redis' or the dotted path of an EventBus subclass or factory."
    if not isinstance(value, str):
        return [
            Error(
                f"EVENTSOURCE_EVENT_BUS must be None or a string, got {value!r}.",
                hint=hint,
                id="django_eventsource.E004",
            )
        ]
    try:
        import_string(value)
    except ImportError as exc:
        return [
            Error(
                f"EVENTSOURCE_EVENT_BUS {value!r} cannot be imported: {exc}",
                hint=hint,
                id="django_eventsource.E004",
            )
        ]
    return []


@register()
def check_bus_backend(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """E010-E012: the configured bus can actually be used.

    E010: a dotted path imports but names neither an EventBus subclass nor a factory;
    E011: the Redis bus without the redis package; E012: a malformed EVENTSOURCE_REDIS_URL.
    """
    from urllib.parse import urlsplit

    value = conf.EVENT_BUS
    if value == "redis":
        from .bus.redis import REDIS_AVAILABLE

        messages: list[CheckMessage] = []
        if not REDIS_AVAILABLE:
            messages.append(
                Error(
                    "EVENTSOURCE_EVENT_BUS is 'redis' but the redis package is not installed.",
                    hint="pip install 'django-eventsource[redis]'",
                    id="django_eventsource.E011",
                )
            )
        url = conf.REDIS_URL
        if not isinstance(url, str) or urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            messages.append(
                Error(
                    f"EVENTSOURCE_REDIS_URL {url!r} is not a Redis URL.",
                    hint="Use redis://host:6379/0, rediss://host:6380/0 (TLS) or "
                    "unix:///path/to/redis.sock.",
                    id="django_eventsource.E012",
                )
            )
        return messages
    if isinstance(value, str) and value not in BUILTIN_EVENT_BUSES:
        try:
            target = import_string(value)
        except ImportError:
            return []  # reported as E004
        from .bus.interface import EventBus

        not_a_bus_class = isinstance(target, type) and not issubclass(target, EventBus)
        if not_a_bus_class or not callable(target):
            return [
                Error(
                    f"EVENTSOURCE_EVENT_BUS {value!r} is neither an EventBus subclass nor a "
                    "factory function.",
                    hint="Point it at an EventBus subclass, or a function returning an EventBus.",
                    id="django_eventsource.E010",
                )
            ]
    return []


@register()
def check_tracing(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """W002: EVENTSOURCE_TRACING is True but opentelemetry-api is not installed."""
    from .tracing import OTEL_AVAILABLE

    if conf.TRACING is True and not OTEL_AVAILABLE:
        return [
            Warning(
                "EVENTSOURCE_TRACING is True but opentelemetry-api is not installed: "
                "no spans are emitted.",
                hint="pip install 'django-eventsource[otel]'",
                id="django_eventsource.W002",
            )
        ]
    return []


@register()
def check_projection_handlers(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """E020: handled event classes are registered; W020: subscribed classes are handled.

    Registration is checked here rather than when a projection class is defined: event
    classes are usually registered by a decorator in a module the projection's module
    imports, but they may also be registered later (in ``AppConfig.ready()``), and a
    handler for a base class is matched by its registered subclasses. By the time checks
    run, every app is ready.
    """
    from .events.handlers import find_handler_name
    from .events.registry import default_registry
    from .projections.base import DeclarativeProjection, Projection

    paths = conf.PROJECTIONS
    if not isinstance(paths, list | tuple):
        return []  # reported as E001
    messages: list[CheckMessage] = []
    for path in paths:
        if not isinstance(path, str):
            continue  # reported as E001
        try:
            target = import_string(path)
        except ImportError:
            continue  # reported as E001
        # Factories are left alone: calling arbitrary code is the runner's business.
        if not (isinstance(target, type) and issubclass(target, Projection)):
            continue
        handlers = target.get_handlers() if issubclass(target, DeclarativeProjection) else {}
        try:
            subscribed = target().subscribed_to()
        except Exception:
            # A projection that cannot be built without arguments fails loudly in the
            # runner; its handlers are still checked below.
            subscribed = []
        wanted = list(handlers)
        wanted.extend(cls for cls in subscribed if cls not in wanted)
        # Read after the import: importing the projection's module is what usually
        # registers its events.
        registered = tuple(cls for _, cls in default_registry.items())
        for event_class in wanted:
            if any(issubclass(cls, event_class) for cls in registered):
                continue
            method = handlers.get(event_class)
            where = f"{path}.{method}" if method else f"{path}.subscribed_to()"
            messages.append(
                Error(
                    f"{where} names event class {event_class.__qualname__}, which is not "
                    "registered: run_projections cannot read such events back.",
                    hint="Decorate the event class with @register_event and make sure its "
                    "module is imported at start-up, or drop the handler.",
                    id="django_eventsource.E020",
                )
            )
        if not issubclass(target, DeclarativeProjection):
            continue
        for event_class in subscribed:
            if find_handler_name(handlers, event_class) is None:
                messages.append(
                    Warning(
                        f"{path} subscribes to {event_class.__qualname__} but has no "
                        "@handles method for it: those events are read and skipped.",
                        hint=f"Add a @handles({event_class.__name__}) method, or remove the "
                        "class from subscribed_to().",
                        id="django_eventsource.W020",
                    )
                )
    return messages


@register()
def check_sqlite_writers(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """W003: a SQLite database of the app's models must make writers wait for the lock.

    Reads the settings of the databases the routers send the app's writes to; it never
    connects.
    """
    from .stores._sqlite import RECOMMENDED_OPTIONS, lock_settings_problem

    models = apps.get_app_config("django_eventsource").get_models()
    messages: list[CheckMessage] = []
    for alias in sorted({router.db_for_write(model) for model in models}):
        wrapper = connections[alias]
        if wrapper.vendor != "sqlite":
            continue
        missing = lock_settings_problem(wrapper.settings_dict.get("OPTIONS") or {})
        if missing is None:
            continue
        messages.append(
            Warning(
                f"SQLite database {alias!r} has no {missing} in its OPTIONS: concurrent "
                "writers (appends, projection runners, relays) can fail with "
                "'database is locked' instead of waiting for each other.",
                hint=f"Set DATABASES[{alias!r}]['OPTIONS'] to include {RECOMMENDED_OPTIONS!r}.",
                id="django_eventsource.W003",
            )
        )
    return messages


#: Largest accepted ``EVENTSOURCE_REDIS_PARTITIONS``: each partition is a stream and a
#: key of its own, and a consumer polls every partition it holds.
MAX_REDIS_PARTITIONS = 1024

#: Values of ``EVENTSOURCE_PROJECTION_LOCK``.
PROJECTION_LOCKS = ("advisory", "lease")


@register()
def check_scaling_settings(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """E030: partitions, leases and the projection lock kind must be usable values."""
    messages: list[CheckMessage] = []

    def problem(name: str, expected: str) -> None:
        messages.append(
            Error(
                f"EVENTSOURCE_{name} must be {expected}, got {conf.raw(name)!r}.",
                hint=f"Remove EVENTSOURCE_{name} to use the default of {conf.default(name)!r}.",
                id="django_eventsource.E030",
            )
        )

    partitions = conf.raw("REDIS_PARTITIONS")
    if not _is_integer(partitions) or not 1 <= partitions <= MAX_REDIS_PARTITIONS:
        problem("REDIS_PARTITIONS", f"an integer from 1 to {MAX_REDIS_PARTITIONS}")
    for name in ("REDIS_PARTITION_LEASE", "OUTBOX_CLAIM_LEASE"):
        value = conf.raw(name)
        if not _is_number(value) or value <= 0:
            problem(name, "a positive number of seconds")
    if conf.raw("PROJECTION_LOCK") not in PROJECTION_LOCKS:
        problem("PROJECTION_LOCK", " or ".join(repr(kind) for kind in PROJECTION_LOCKS))
    return messages
