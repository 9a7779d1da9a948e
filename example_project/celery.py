"""Celery application of the example project.

Start a worker and the beat scheduler (with ``CELERY_BROKER_URL`` set)::

    celery -A example_project worker -l info
    celery -A example_project beat -l info

The beat schedule (``CELERY_BEAT_SCHEDULE`` in the settings) runs the projections and the
outbox relay every few seconds through the tasks in ``django_eventsource.tasks``.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

app = Celery("example_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
