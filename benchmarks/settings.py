"""Django settings for the benchmark scripts.

``BENCH_DB=postgres`` (default when PostgreSQL answers) or ``BENCH_DB=sqlite``.
PostgreSQL connection: ``BENCH_PG_HOST``/``BENCH_PG_PORT``/``BENCH_PG_USER``,
database ``BENCH_PG_NAME`` (default ``eventsource_bench``, created when missing).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SECRET_KEY = "benchmarks"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_eventsource",
    "tests.testapp",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

BENCH_DB = os.environ.get("BENCH_DB", "postgres")
if BENCH_DB == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("BENCH_PG_NAME", "eventsource_bench"),
            "USER": os.environ.get("BENCH_PG_USER", "postgres"),
            "HOST": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("BENCH_PG_PORT", "5432"),
        }
    }
    if os.environ.get("BENCH_PG_SERVER_SIDE_BINDING") == "1":
        DATABASES["default"]["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 5}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get(
                "BENCH_SQLITE_PATH", str(Path(tempfile.gettempdir()) / "eventsource_bench.sqlite3")
            ),
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    }
