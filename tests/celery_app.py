"""Celery application for the tests that run a real worker.

Broker and result backend are the test Redis (``REDIS_URL`` of ``tests.settings``); each
test consumes its own queue, so concurrent runs never take each other's tasks::

    celery -A tests.celery_app worker --pool=solo -Q <unique queue>
"""

from __future__ import annotations

import os

import django
from celery import Celery
from django.conf import settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

app = Celery("tests")
app.conf.update(
    broker_url=settings.REDIS_URL,
    result_backend=settings.REDIS_URL,
    task_default_queue=os.environ.get("EVENTSOURCE_TEST_CELERY_QUEUE", "django-eventsource-tests"),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

import django_eventsource.tasks  # noqa: E402,F401  (registers the shared tasks)
