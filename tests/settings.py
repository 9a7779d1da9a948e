"""Settings for the test suite.

``EVENTSOURCE_TEST_DB=postgres`` runs the suite on PostgreSQL (``EVENTSOURCE_TEST_PG_*``
variables override the connection), anything else on SQLite. ``EVENTSOURCE_TEST_DB_SUFFIX``
keeps concurrent runs on separate test databases. ``EVENTSOURCE_TEST_SETTINGS`` (a JSON
object) replaces settings for test subprocesses that run on servers of their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "tests-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]

_suffix = os.environ.get("EVENTSOURCE_TEST_DB_SUFFIX", "")
DB_BACKEND = os.environ.get("EVENTSOURCE_TEST_DB", "sqlite")

if DB_BACKEND == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("EVENTSOURCE_TEST_PG_NAME", "postgres"),
            "USER": os.environ.get("EVENTSOURCE_TEST_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("EVENTSOURCE_TEST_PG_PASSWORD", ""),
            "HOST": os.environ.get("EVENTSOURCE_TEST_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("EVENTSOURCE_TEST_PG_PORT", "5432"),
            "TEST": {"NAME": f"test_eventsource{_suffix}"},
        }
    }
    if os.environ.get("EVENTSOURCE_TEST_PG_SERVER_SIDE_BINDING") == "1":
        # Django's opt-in: server-side parameters, prepared after 5 executions.
        DATABASES["default"]["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 5}
else:
    # One directory per checkout, so that two clones tested at once never share a file.
    _checkout = hashlib.sha256(str(BASE_DIR).encode()).hexdigest()[:12]
    _sqlite_dir = Path(tempfile.gettempdir()) / "django_eventsource_tests" / _checkout
    _sqlite_dir.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(_sqlite_dir / f"db{_suffix}.sqlite3"),
            # A file (not :memory:) so that threads and subprocesses share one database.
            "TEST": {"NAME": str(_sqlite_dir / f"test{_suffix}.sqlite3")},
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    }

# Subprocesses started by tests (run_projections, Celery workers) use the test database
# of the parent test run, whose name the parent passes here.
if os.environ.get("EVENTSOURCE_TEST_DB_NAME"):
    DATABASES["default"]["NAME"] = os.environ["EVENTSOURCE_TEST_DB_NAME"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_eventsource",
    "tests.testapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_eventsource.middleware.EventMetadataMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("EVENTSOURCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
EVENTSOURCE_REDIS_URL = REDIS_URL
# Fast retries in tests; production defaults live in django_eventsource.conf.
EVENTSOURCE_RETRY_BACKOFF = 0.001
EVENTSOURCE_RETRY_BACKOFF_MAX = 0.01
EVENTSOURCE_POLL_INTERVAL = 0.05
# Projections of test subprocesses: comma-separated dotted paths.
EVENTSOURCE_PROJECTIONS = [
    path for path in os.environ.get("EVENTSOURCE_TEST_PROJECTIONS", "").split(",") if path
]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"django_eventsource": {"handlers": ["null"], "level": "DEBUG"}},
}

# Test subprocesses running on servers of their own (tests/services.py,
# scripts/fault_run.py) get their settings as a JSON object, which replaces the above.
globals().update(json.loads(os.environ.get("EVENTSOURCE_TEST_SETTINGS", "{}")))
