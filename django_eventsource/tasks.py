"""Celery tasks (optional): the same functions as the management commands.

Celery is not required: without it this module still imports, and the functions below
are plain callables. With it, they are ``shared_task``s, so the project's own Celery app
picks them up (``app.autodiscover_tasks()``); schedule them with beat::

    CELERY_BEAT_SCHEDULE = {
        "run-projections": {"task": "django_eventsource.tasks.run_projections", "schedule": 5.0},
    }
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("django_eventsource")

_shared_task: Callable[..., Any] | None
try:
    from celery import shared_task as _shared_task
except ImportError:  # pragma: no cover - exercised only where celery is not installed
    _shared_task = None


def _task(**options: Any) -> Callable[[F], F]:
    """``shared_task(**options)`` when Celery is installed, else the undecorated function."""

    def decorator(func: F) -> F:
        if _shared_task is None:  # pragma: no cover
            return func
        return _shared_task(**options)(func)  # type: ignore[no-any-return]

    return decorator


@_task(name="django_eventsource.tasks.run_projections", ignore_result=False)
def run_projections(
    projections: list[str] | None = None,
    batch_size: int | None = None,
    max_units: int | None = None,
) -> dict[str, Any]:
    """One catch-up pass of the projections (``run_projections --once``).

    Returns the events read per projection and the number dead-lettered. A projection
    another worker is already running is skipped, so overlapping beats are harmless.
    ``projections`` may name units of segmented projections (``"Name#2/4"``).
    """
    from .projections.runner import run_projections as run

    summary = run(projections, once=True, batch_size=batch_size, max_units=max_units)
    return {"processed": summary.processed, "dead_lettered": summary.dead_lettered}


@_task(name="django_eventsource.tasks.rebuild_projection", ignore_result=False)
def rebuild_projection(name: str, batch_size: int | None = None) -> dict[str, Any]:
    """Reset a projection and replay every event (``reset_projection NAME --rebuild``).

    Batches of ``batch_size`` events (default ``EVENTSOURCE_REBUILD_BATCH_SIZE``); the
    progress goes to the ``django_eventsource`` logger. Raises ``ProjectionBusyError``
    when another process runs the projection.
    """
    from .projections.maintenance import reset_projection

    summary = reset_projection(name, rebuild=True, batch_size=batch_size, on_progress=_Logged(name))
    return {"processed": summary.total_processed, "dead_lettered": summary.dead_lettered}


class _Logged:
    """Rebuild progress as log lines, at most one every ``interval`` seconds."""

    def __init__(self, name: str, interval: float = 10.0) -> None:
        self.name = name
        self.interval = interval
        self.clock = time.monotonic
        self.started = self.last = self.clock()

    def __call__(self, replayed: int, total: int) -> None:
        now = self.clock()
        if now - self.last < self.interval:
            return
        self.last = now
        rate = replayed / max(now - self.started, 1e-9)
        logger.info(
            "Rebuilding %s: %d of %d events (%.0f events/s)",
            self.name,
            replayed,
            total,
            rate,
            extra={"projection": self.name, "replayed": replayed, "total": total},
        )


@_task(name="django_eventsource.tasks.dispatch_projections", ignore_result=False)
def dispatch_projections(
    projections: list[str] | None = None, batch_size: int | None = None
) -> list[str]:
    """Queue one ``run_projections`` task per unit (or whole projection); the names queued.

    Schedule this with beat instead of ``run_projections`` to spread a segmented
    projection's units over the workers (route ``run_projections`` to its own queue).
    """
    from .projections.segments import load_units

    names = [unit.name for unit in load_units(projections)]
    for name in names:
        _send(run_projections, [name], batch_size)
    return names


def _send(task: Any, *args: Any) -> None:
    """``task.delay(*args)`` under Celery; a plain call where Celery is not installed."""
    delay = getattr(task, "delay", None)
    if delay is None:  # pragma: no cover - without Celery the task is a plain function
        task(*args)
    else:
        delay(*args)


@_task(name="django_eventsource.tasks.retry_dead_letters", ignore_result=False)
def retry_dead_letters(
    projection: str | None = None, ids: list[int] | None = None
) -> dict[str, Any]:
    """Retry dead-lettered events (``retry_dead_letters`` command)."""
    from .projections.maintenance import retry_dead_letters as retry

    report = retry(projection=projection, ids=ids, resolved_by="celery:retry_dead_letters")
    return {
        "resolved": report.resolved,
        "failed": report.failed,
        "waiting": report.waiting,
        "errors": {str(k): v for k, v in report.errors.items()},
    }


@_task(name="django_eventsource.tasks.publish_outbox", ignore_result=False)
def publish_outbox(batch_size: int | None = None) -> dict[str, int]:
    """Publish the outbox rows due now (``publish_outbox --once``).

    Several workers may run it at once: each claims different rows.
    """
    from .outbox.relay import publish_outbox as publish

    report = publish(once=True, batch_size=batch_size)
    return {
        "published": report.published,
        "retried": report.retried,
        "failed": report.failed,
        "cleaned": report.cleaned,
    }


@_task(name="django_eventsource.tasks.recover_pending_events", ignore_result=False)
def recover_pending_events(group: str | None = None) -> dict[str, int]:
    """Claim Redis messages left pending too long and run the registered handlers on them.

    Messages are claimed after ``EVENTSOURCE_REDIS_CLAIM_IDLE_MS``; those delivered more
    than ``EVENTSOURCE_REDIS_MAX_RETRIES`` times go to the dead-letter stream.
    """
    from .bus import build_redis_bus
    from .bus.consumers import attach_handlers

    bus = build_redis_bus(consumer_group=group)
    try:
        attach_handlers(bus)
        handled = bus.recover_pending()
        stats = bus.get_stats()
    finally:
        bus.close()
    return {"handled": handled, "dead_lettered": stats.messages_dead_lettered}


__all__ = [
    "dispatch_projections",
    "publish_outbox",
    "rebuild_projection",
    "recover_pending_events",
    "retry_dead_letters",
    "run_projections",
]
