"""Shared plumbing for the benchmark scripts: Django setup, timing and the result table.

Every script prints one table: the operation, the library's figure, the reference
figure (raw driver doing the same SQL/Redis work), and their ratio.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def setup_django(backend: str) -> None:
    """Configure Django on ``backend`` ("postgres" or "sqlite") with a fresh, migrated schema."""
    os.environ["BENCH_DB"] = backend
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    if backend == "postgres":
        import psycopg

        name = os.environ.get("BENCH_PG_NAME", "eventsource_bench")
        with psycopg.connect(
            host=os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
            port=os.environ.get("BENCH_PG_PORT", "5432"),
            user=os.environ.get("BENCH_PG_USER", "postgres"),
            dbname="postgres",
            autocommit=True,
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    else:
        from benchmarks import settings as bench_settings

        path = Path(bench_settings.DATABASES["default"]["NAME"])  # type: ignore[index]
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", run_syncdb=True, verbosity=0)


def raw_connection(backend: str, *, autocommit: bool = False) -> tuple[Any, str]:
    """A bare driver connection to Django's database, and the driver's placeholder.

    psycopg 3 on PostgreSQL, preparing statements exactly when Django does (never by
    default, after ``prepare_threshold`` executions with server-side binding), so a
    comparison measures the library, not a connection setting; ``sqlite3`` otherwise,
    in autocommit mode (transactions are opened with ``BEGIN``).
    """
    from django.db import connection

    settings = connection.settings_dict
    if backend == "postgres":
        import psycopg

        conn: Any = psycopg.connect(
            host=settings["HOST"],
            port=settings["PORT"],
            user=settings["USER"],
            dbname=settings["NAME"],
            autocommit=autocommit,
        )
        options = settings.get("OPTIONS", {})
        conn.prepare_threshold = (
            options.get("prepare_threshold") if options.get("server_side_binding") else None
        )
        return conn, "%s"
    import sqlite3

    conn = sqlite3.connect(
        settings["NAME"], isolation_level=None, timeout=30, check_same_thread=False
    )
    return conn, "?"


def timed(func: Callable[[], object], repeat: int = 5) -> float:
    """Median wall time in seconds of ``repeat`` calls of ``func``."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


@dataclass
class Row:
    operation: str
    library: float
    reference: float
    unit: str
    target: str = ""
    higher_is_better: bool = False

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.library / self.reference if self.reference else float("nan")
        return self.library / self.reference if self.reference else float("nan")


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    header = f"{'operation':<44} {'library':>14} {'reference':>14} {'ratio':>8}  target"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.operation:<44} {r.library:>11.3f} {r.unit:<2} {r.reference:>11.3f} {r.unit:<2} "
            f"{r.ratio:>7.2f}x  {r.target}"
        )
