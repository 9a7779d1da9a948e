"""A newcomer follows Getting started, then the Celery page, literally, in a fresh
virtual environment: the package installed from a copy of this checkout, its
dependencies and ``celery[redis]`` from the package index, a worker and beat started as
the page says.

Only two things differ from a reader's terminal: the virtualenv is "activated" by
putting its ``bin`` first on ``PATH``, and the Celery broker is a Redis server of the
test's own (the page's ``redis://127.0.0.1:6379/1`` is swapped for its URL).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.services import ThrowawayRedis
from tests.test_docs import DOCS, Command, FileStep, guide_steps

pytestmark = pytest.mark.slow

CHECKOUT = DOCS.parent
PAGE_BROKER = "redis://127.0.0.1:6379/1"
# Commands a person runs in a terminal of their own and stops with Ctrl+C.
LONG_RUNNING = ("manage.py runserver", "celery -A mysite worker", "celery -A mysite beat")
NEEDS_A_PERSON = ("manage.py createsuperuser",)
IGNORED = (
    ".git",
    ".venv",
    "test-artifacts",
    "__pycache__",
    "*.sqlite3",
    "site",
    "build",
    "dist",
    "*.egg-info",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
)


def run(line: str, cwd: Path, env: dict[str, str]) -> str:
    if line.startswith(". ") and line.endswith("/bin/activate"):
        return ""  # "activated" through PATH, see the module docstring
    completed = subprocess.run(
        shlex.split(line),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, (
        f"`{line}` ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}"
    )
    return completed.stdout


@pytest.mark.skipif(
    settings.DB_BACKEND == "postgres",
    reason="the guide's project uses its own SQLite database; the SQLite run covers it",
)
@pytest.mark.skipif(not ThrowawayRedis.available(), reason="needs redis-server")
def test_getting_started_then_celery_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    shutil.copytree(
        CHECKOUT, tmp_path / "django-eventsource", ignore=shutil.ignore_patterns(*IGNORED)
    )
    project = tmp_path / "project"
    project.mkdir()
    venv_bin = project / ".venv" / "bin"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "PYTHON", "VIRTUAL_ENV", "CELERY"))
    }
    env.update(
        PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(project / ".venv")
    )
    redis = ThrowawayRedis()
    redis.start()
    background: list[subprocess.Popen[str]] = []
    try:
        steps = guide_steps((DOCS / "getting-started.md").read_text())
        steps += guide_steps((DOCS / "celery.md").read_text())
        ran: list[str] = []
        for step in steps:
            if isinstance(step, FileStep):
                target = project / step.path
                target.parent.mkdir(parents=True, exist_ok=True)
                content = step.content.replace(PAGE_BROKER, redis.url)
                if step.append:
                    with target.open("a") as handle:
                        handle.write("\n" + content)
                else:
                    target.write_text(content)
                continue
            assert isinstance(step, Command)
            if any(marker in step.line for marker in NEEDS_A_PERSON):
                continue
            if any(marker in step.line for marker in LONG_RUNNING):
                if "runserver" not in step.line:
                    log_file = tmp_path / f"{len(background)}.log"
                    with log_file.open("w") as sink:
                        background.append(
                            subprocess.Popen(
                                shlex.split(step.line),
                                cwd=project,
                                env=env,
                                text=True,
                                stdout=sink,
                                stderr=subprocess.STDOUT,
                            )
                        )
                ran.append(step.line)
                continue
            output = run(step.line, project, env)
            ran.append(step.line)
            for expected in step.expected_output:
                assert expected in output, f"`{step.line}` printed {output!r}, not {expected!r}"

        assert 'pip install "celery[redis]"' in ran
        assert (project / ".venv" / "bin" / "celery").exists()
        # The installed copy, not this checkout, is what the project imports.
        where = run(
            "python -c 'import django_eventsource; print(django_eventsource.__file__)'",
            project,
            env,
        )
        assert str(project / ".venv") in where

        # Beat sends run_projections every 5 s; the worker runs it.
        worker, _beat = background
        worker_log_file = tmp_path / "0.log"
        deadline = time.monotonic() + 60
        worker_log = ""
        while time.monotonic() < deadline and worker.poll() is None:
            worker_log = worker_log_file.read_text()
            if "succeeded" in worker_log and "has no event bus" in worker_log:
                break
            time.sleep(0.5)
    finally:
        for process in background:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in background:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        redis.close()
    assert "django_eventsource.tasks.run_projections" in worker_log, worker_log
    assert "succeeded" in worker_log, worker_log
    assert "'TaskListProjection'" in worker_log, worker_log
    # As the page says: the relay's task fails until a bus is configured.
    assert "publish_outbox has no event bus" in worker_log, worker_log
