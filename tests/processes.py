"""Start ``manage.py run_projections`` or a Celery worker as a child process of a test.

For tests that kill, signal or race real runner processes. The child uses the test
settings and, unless told otherwise, the test database of the calling test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def runner_env(projections: str, **extra: str) -> dict[str, str]:
    """The environment of a runner of ``projections`` on this test's database."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "EVENTSOURCE_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "EVENTSOURCE_TEST_PROJECTIONS": projections,
        **extra,
    }


def start_run_projections(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """``manage.py run_projections --verbosity 0 *args``; stderr kept for failure reports."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_projections", "--verbosity", "0", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def start_celery_worker(projections: str, queue: str) -> subprocess.Popen[bytes]:
    """A solo-pool worker of ``tests.celery_app`` consuming only ``queue``, for
    ``projections`` on this test's database; stderr kept for failure reports."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.celery_app",
            "worker",
            "--pool=solo",
            "-Q",
            queue,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=WARNING",
            "-n",
            f"{queue}@%h",
        ],
        cwd=ROOT,
        env=runner_env(projections, EVENTSOURCE_TEST_CELERY_QUEUE=queue),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM ``process`` and wait for it; killed if it is still there after ``timeout``."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
