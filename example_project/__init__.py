"""A runnable Django project using django-eventsource: the orders example."""

try:  # Celery is optional: the example runs with management commands alone.
    from .celery import app as celery_app
except ImportError:  # pragma: no cover - without the celery extra
    celery_app = None  # type: ignore[assignment]

__all__ = ["celery_app"]
