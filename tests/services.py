"""Throwaway PostgreSQL clusters and Redis servers, for fault tests and the fault script.

Fault tests stop and restart servers; they must never touch the shared ones a test run
uses, so each of these runs on a free port of its own and is deleted afterwards. The
PostgreSQL clusters come from Debian's postgresql-common (``pg_createcluster``, run as
root or as the ``postgres`` user) with trust authentication; ``scripts/fault_run.py``
uses the same helpers.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

#: Name prefix of the clusters created here (a cluster is ``<prefix>_<pid>_<token>``).
CLUSTER_PREFIX = "esfault"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, up: bool = True, timeout: float = 30.0) -> None:
    """Wait until something listens on ``port`` (or, with ``up=False``, nothing does)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                listening = True
        except OSError:
            listening = False
        if listening == up:
            return
        if time.monotonic() > deadline:
            state = "listening" if up else "closed"
            raise TimeoutError(f"port {port} not {state} after {timeout}s")
        time.sleep(0.05)


def postgres_tools_available() -> bool:
    """Whether throwaway clusters can be made here (postgresql-common and a server)."""
    return shutil.which("pg_createcluster") is not None and _newest_version() is not None


def _newest_version() -> str | None:
    versions = [p.name for p in Path("/usr/lib/postgresql").glob("*") if p.name.isdigit()]
    return max(versions, key=int) if versions else None


def _run(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")


def _drop_abandoned_clusters() -> None:
    """Drop clusters left behind by test processes that were killed before cleaning up."""
    listing = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False
    )
    for line in listing.stdout.splitlines():
        version, name, *_ = line.split()
        parts = name.split("_")
        if len(parts) != 3 or parts[0] != CLUSTER_PREFIX or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            subprocess.run(["pg_dropcluster", "--stop", version, name], check=False)
        except PermissionError:
            pass


@dataclass
class ThrowawayPostgres:
    """A PostgreSQL cluster of its own on a free port: start, stop, drop."""

    version: str
    name: str
    port: int

    @classmethod
    def create(cls) -> ThrowawayPostgres:
        """Create and start a new cluster (a few seconds)."""
        version = _newest_version()
        if version is None:
            raise RuntimeError("no PostgreSQL server installed under /usr/lib/postgresql")
        _drop_abandoned_clusters()
        cluster = cls(version, f"{CLUSTER_PREFIX}_{os.getpid()}_{uuid4().hex[:6]}", free_port())
        # Durability settings off: the cluster lives for one test run, and its restarts
        # are clean shutdowns, which write everything anyway.
        _run(
            "pg_createcluster",
            *("-p", str(cluster.port), "--start"),
            *("-o", "fsync=off", "-o", "synchronous_commit=off", "-o", "full_page_writes=off"),
            *(version, cluster.name),
            *("--", "--auth=trust"),
        )
        wait_for_port(cluster.port)
        return cluster

    def start(self) -> None:
        _run("pg_ctlcluster", self.version, self.name, "start")
        wait_for_port(self.port)

    def stop(self) -> None:
        """Stop the server: it disconnects every session, as a restart does."""
        _run("pg_ctlcluster", self.version, self.name, "stop", "--", "-m", "fast")
        wait_for_port(self.port, up=False)

    def drop(self) -> None:
        subprocess.run(["pg_dropcluster", "--stop", self.version, self.name], check=False)

    def database_settings(self, **options: Any) -> dict[str, Any]:
        """A ``DATABASES`` entry for the cluster's ``postgres`` database."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "postgres",
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            **options,
        }

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"


@dataclass
class ThrowawayRedis:
    """A ``redis-server`` of its own on a free port, with an append-only file, so that a
    stopped server comes back with its streams."""

    port: int = field(default_factory=free_port)
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="esredis")))
    process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--dir", str(self.directory), "--save", ""),
                *("--appendonly", "yes", "--appendfsync", "everysec"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        """Shut the server down (it writes its append-only file first)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
