"""System checks (``django_eventsource.E001`` ...), run by ``manage.py check`` and at start-up."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, Warning, register
from django.utils.module_loading import import_string

from .conf import conf


@register()
def check_projections(app_configs: list[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
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
def check_upcasters(app_configs: list[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
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
    app_configs: list[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """E003: numeric settings must be positive numbers."""
    messages: list[CheckMessage] = []
    for name in ("PROJECTION_BATCH_SIZE", "OUTBOX_BATCH_SIZE", "MAX_RETRIES", "OUTBOX_MAX_ATTEMPTS"):
        value = getattr(conf, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            messages.append(
                Error(
                    f"EVENTSOURCE_{name} must be a positive integer, got {value!r}.",
                    id="django_eventsource.E003",
                )
            )
    for name in ("POLL_INTERVAL", "RETRY_BACKOFF"):
        value = getattr(conf, name)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            messages.append(
                Error(
                    f"EVENTSOURCE_{name} must be a non-negative number, got {value!r}.",
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
