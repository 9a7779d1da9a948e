"""A project with the event store, the read models and Django's tables on three databases.

It is migrated alias by alias with ``migrate --database``, then saves, relays and
projects in a subprocess of its own (``tests/multidb/run.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
ALIASES = ("default", "events", "readmodels")


@contextmanager
def empty_databases(aliases: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """Empty databases, alias → NAME (SQLite files, or PostgreSQL databases of this run)."""
    suffix = os.environ.get("EVENTSOURCE_TEST_DB_SUFFIX", "")
    if connection.vendor == "postgresql":
        import psycopg

        names = {alias: f"test_es_multidb_{alias}{suffix}" for alias in aliases}
        server = settings.DATABASES["default"]
        params: dict[str, Any] = {
            "host": server["HOST"],
            "port": server["PORT"],
            "user": server["USER"],
        }
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
            for name in names.values():
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
                admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield names
        finally:
            with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
                for name in names.values():
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        with tempfile.TemporaryDirectory() as directory:
            yield {alias: str(Path(directory) / f"{alias}.sqlite3") for alias in aliases}


@pytest.fixture
def databases() -> Iterator[dict[str, str]]:
    with empty_databases(ALIASES) as names:
        yield names


def run_with(
    databases: dict[str, str], *args: str, settings_module: str = "tests.multidb.settings"
) -> subprocess.CompletedProcess[str]:
    """``python *args`` in a project on ``databases``, configured by ``settings_module``."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "EVENTSOURCE_MULTIDB": json.dumps(databases),
    }
    env.pop("EVENTSOURCE_TEST_DB_NAME", None)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_three_database_project_migrates_and_runs_end_to_end(
    databases: dict[str, str],
) -> None:
    for alias in ALIASES:
        result = run_with(
            databases, "-m", "django", "migrate", "--run-syncdb", "--database", alias, "-v", "0"
        )
        assert result.returncode == 0, f"migrate --database {alias}: {result.stderr}"

    result = run_with(databases, "-m", "tests.multidb.run")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["relayed"] == 2
    assert report["published"] == 2
    # On PostgreSQL the runner LISTENs on the events database, not the checkpoints' one.
    assert report["woken_by_append"] is (True if connection.vendor == "postgresql" else None)
    assert report["projected"] == {"AccountSummaryProjection": 2}
    assert (report["balance"], report["events_seen"]) == ("15.00", 2)
    tables = report["tables"]
    assert "eventsource_event" in tables["events"]
    assert "eventsource_outbox" in tables["events"]
    assert "eventsource_checkpoint" in tables["readmodels"]
    assert "testapp_accountsummary" in tables["readmodels"]
    # Each table exists on its own database only.
    assert "eventsource_event" not in tables["default"] + tables["readmodels"]
    assert "eventsource_checkpoint" not in tables["default"] + tables["events"]
    assert "auth_user" in tables["default"]
    assert "auth_user" not in tables["events"]
