#!/usr/bin/env python3
"""One entry point for newcomers and CI; needs only Python 3.11+.

    python3 dev.py demo    # set up .venv, migrate the example project (SQLite), run the demo
    python3 dev.py test    # set up .venv, run the test suite on SQLite, then on PostgreSQL
    python3 dev.py test --quick   # the same without the slow tests (CI runs everything)
    python3 dev.py check   # ruff (lint, format), mypy --strict, migrations, docs build

The first run creates ``.venv``. ``demo`` installs the project alone (Django and
pydantic: all the example needs); ``test`` and ``check`` install it with its ``dev``
extra (database drivers, Redis, Celery, the test and lint tools). Later runs reuse what
is installed until ``pyproject.toml`` changes.

``dev.py test`` runs the PostgreSQL and Redis tests when those servers answer (settings:
``EVENTSOURCE_TEST_PG_*``, ``EVENTSOURCE_TEST_REDIS_URL``). With
``EVENTSOURCE_REQUIRE_SERVICES=1`` (as in CI) a missing server is an error, not a skip.
On PostgreSQL the tests of the app's own SQL then run once more with Django's
``server_side_binding`` and prepared statements. Extra arguments are passed to pytest
(and skip that extra pass): ``python3 dev.py test -k outbox -x``.

This is one row of the supported matrix (this interpreter and its Django, both
databases); ``tox.ini`` names the whole matrix: Python x Django x database.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
# One stamp per install: the project alone ("demo") or with its dev extra ("dev").
STAMPS = {"demo": VENV / ".installed-demo", "dev": VENV / ".installed-dev"}


def run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    cmd = [str(a) for a in args]
    print("+", " ".join(cmd), flush=True)
    completed = subprocess.run(cmd, cwd=ROOT, env=env)
    if completed.returncode:
        sys.exit(completed.returncode)


def ensure_venv(kind: str = "dev") -> None:
    """``.venv`` with the project installed: alone (``demo``) or with the dev extra."""
    if sys.version_info < (3, 11):  # noqa: UP036 - a clear message for older interpreters
        sys.exit("django-eventsource needs Python 3.11 or newer")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    # The dev install has everything the demo needs too.
    enough = ["demo", "dev"] if kind == "demo" else ["dev"]
    if PYTHON.exists() and any(
        STAMPS[k].exists() and STAMPS[k].read_text() == digest for k in enough
    ):
        return
    if not PYTHON.exists():
        print(f"Creating {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    target = "." if kind == "demo" else ".[dev]"
    print(f"Installing the project ({'alone' if kind == 'demo' else 'with its dev extra'}) ...")
    run(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PYTHON, "-m", "pip", "install", "--quiet", "-e", target)
    STAMPS[kind].write_text(digest)


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def demo(args: list[str]) -> None:
    ensure_venv("demo")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "example_project.settings"}
    run(PYTHON, "manage.py", "migrate", "--no-input", "-v", "0", env=env)
    run(PYTHON, "manage.py", "demo", *args, env=env)


def test(args: list[str]) -> None:
    ensure_venv()
    if "--quick" in args:
        args = ["-m", "not slow", *(a for a in args if a != "--quick")]
    require = os.environ.get("EVENTSOURCE_REQUIRE_SERVICES") == "1"
    pg_host = os.environ.get("EVENTSOURCE_TEST_PG_HOST", "127.0.0.1")
    pg_port = int(os.environ.get("EVENTSOURCE_TEST_PG_PORT", "5432"))
    backends = ["sqlite"]
    if reachable(pg_host, pg_port):
        backends.append("postgres")
    elif require:
        sys.exit(f"PostgreSQL is required but not reachable on {pg_host}:{pg_port}")
    else:
        print(f"PostgreSQL not reachable on {pg_host}:{pg_port}: its tests are skipped", flush=True)
    # Two workers by default: the suite waits on databases, Redis and subprocesses a lot.
    parallel = [] if any(a == "-n" or a.startswith("-n") for a in args) else ["-n", "2"]
    for backend in backends:
        print(f"\n=== test suite on {backend} ===", flush=True)
        env = {**os.environ, "EVENTSOURCE_TEST_DB": backend}
        run(PYTHON, "-m", "pytest", *parallel, *args, env=env)
    if "postgres" in backends and not args:
        # The SQL the app writes itself, again with Django's server-side binding and
        # prepared statements (an opt-in of the PostgreSQL backend).
        print("\n=== SQL tests on postgres, server-side binding ===", flush=True)
        env = {
            **os.environ,
            "EVENTSOURCE_TEST_DB": "postgres",
            "EVENTSOURCE_TEST_PG_SERVER_SIDE_BINDING": "1",
            "EVENTSOURCE_TEST_DB_SUFFIX": os.environ.get("EVENTSOURCE_TEST_DB_SUFFIX", "") + "_ssb",
        }
        run(PYTHON, "-m", "pytest", *parallel, "-m", "own_sql", env=env)


def check(args: list[str]) -> None:
    ensure_venv()
    run(PYTHON, "-m", "ruff", "check", ".")
    run(PYTHON, "-m", "ruff", "format", "--check", ".")
    run(PYTHON, "-m", "mypy", "django_eventsource")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "example_project.settings"}
    run(PYTHON, "manage.py", "makemigrations", "--check", "--dry-run", env=env)
    run(PYTHON, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(VENV / "site"))


COMMANDS = {"demo": demo, "test": test, "check": check}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        sys.exit(2)
    COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
