"""The event store reads from the primary even when a router sends reads to a replica.

A replica lags and, being a standby, cannot see the primary's open transactions: a safe
mark computed there can pass a position that is still uncommitted, and a projection that
moved past it would never see that event. ``tests/replica/run.py`` gives the store a
replica holding a diverging copy, so any read that reached it would show.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.db import connection

from tests.test_multidb import empty_databases, run_with

ALIASES = ("default", "replica")
SETTINGS = "tests.replica.settings"


@pytest.fixture
def databases() -> Iterator[dict[str, str]]:
    with empty_databases(ALIASES) as names:
        yield names


@pytest.mark.slow
def test_safe_marks_and_loads_come_from_the_primary_under_a_replica_router(
    databases: dict[str, str],
) -> None:
    for alias in ALIASES:
        result = run_with(
            databases,
            "-m",
            "django",
            "migrate",
            "--run-syncdb",
            "--database",
            alias,
            settings_module=SETTINGS,
        )
        assert result.returncode == 0, result.stderr
    result = run_with(databases, "-m", "tests.replica.run", settings_module=SETTINGS)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["read_alias"] == "default"
    assert report["stream_version"] == 2
    assert report["loaded"] == 2
    assert report["read_all"] == [1, 2]
    if connection.vendor == "postgresql":
        # Position 3 is held by an open transaction on the primary: the mark stops below.
        assert report["safe_mark_while_open"] == 2
        assert report["safe_mark_after_commit"] == 3
