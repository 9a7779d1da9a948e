"""Django app configuration."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class EventSourceConfig(AppConfig):
    name = "django_eventsource"
    verbose_name = _("Event sourcing")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks; no database access here.
        from . import checks  # noqa: F401
