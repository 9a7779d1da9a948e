#!/usr/bin/env python
"""Fault run: the whole pipeline under kill -9, a database restart and a Redis outage.

    python scripts/fault_run.py [--seed N] [--duration SECONDS] [--writers N]

It creates a PostgreSQL cluster and a Redis server of its own on free ports (the shared
servers are never touched), migrates the database, then runs for ``--duration`` seconds:

* writer processes save accounts and deposits (outbox enabled, Redis bus);
* ``run_projections`` (``AccountSummaryProjection``, which journals every event it
  handles), ``publish_outbox`` and ``consume_events`` (whose handler journals every
  delivery) run as subprocesses of ``tests/settings.py``, restarted like a process
  manager would when they exit;
* each of the three is killed with SIGKILL at random moments and started again, the
  database is stopped and started once, and Redis is stopped for a while.

Then it waits until everything written has been projected, published and consumed (or
``--settle-timeout`` passes), and prints what it found: events written, events lost at
each stage, duplicates, order violations, dead letters and the time to recover. The
random moments come from ``--seed``, so a run can be repeated. The exit status is 1 when
an event was lost, published out of order, or the pipeline did not settle.

Needs root (or the ``postgres`` user) for ``pg_createcluster``, and ``redis-server``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from uuid import uuid4

if TYPE_CHECKING:
    from django_eventsource import DomainEvent

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as scripts/fault_run.py: tests.* lives in the root
    sys.path.insert(0, str(ROOT))

# The consumers decode only registered event types: importing this module (for its
# handler) registers the test domain's.
import tests.testapp.domain  # noqa: E402, F401

PROJECTION = "AccountSummaryProjection"
CONSUMER = "consumer"
STREAM_PREFIX = "fault"


def record_delivery(event: DomainEvent) -> None:
    """The consumers' handler (``EVENTSOURCE_EVENT_HANDLERS``): one row per delivery."""
    from tests.testapp.models import HandledEvent

    HandledEvent.objects.create(
        projection=CONSUMER, event_id=event.event_id, position=event.aggregate_version
    )


def write_events(seconds: float, seed: int) -> None:
    """A writer process: accounts opened and deposited to, one save per event."""
    import django

    django.setup()
    from django.db import InterfaceError, OperationalError, connection

    from django_eventsource import AggregateRepository, DjangoEventStore
    from tests.testapp.domain import Account

    rng = random.Random(seed)
    repository = AggregateRepository(DjangoEventStore(), Account)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        account = repository.create_new(uuid4())
        try:
            account.open("fault run")
            repository.save(account)
            for _ in range(rng.randint(1, 6)):
                time.sleep(rng.uniform(0, 0.02))
                account.deposit(Decimal(rng.randint(1, 100)))
                repository.save(account)
        except (OperationalError, InterfaceError):
            # The database is restarting: whether the last save committed is unknown,
            # so this account is left as it is and the next one starts afresh.
            connection.close()
            time.sleep(0.5)


# -- the run ------------------------------------------------------------------------------


@dataclass
class Worker:
    """One supervised subprocess."""

    name: str
    command: list[str]
    log: Path
    restart_on_exit: bool = True
    process: subprocess.Popen[bytes] | None = None
    kills: int = 0
    exits: list[str] = field(default_factory=list)
    log_file: IO[bytes] | None = None


class Supervisor:
    """Starts workers, restarts the ones that exit, kills them on request."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.workers: dict[str, Worker] = {}

    def add(self, worker: Worker) -> None:
        self.workers[worker.name] = worker
        self.start(worker)

    def start(self, worker: Worker) -> None:
        if worker.log_file is None:
            worker.log_file = worker.log.open("ab")
        worker.process = subprocess.Popen(
            worker.command,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=worker.log_file,
        )

    def kill(self, name: str) -> None:
        """SIGKILL and start again at once (a crash under a process manager)."""
        worker = self.workers[name]
        if worker.process is not None and worker.process.poll() is None:
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait()
            worker.kills += 1
        self.start(worker)

    def poll(self) -> None:
        for worker in self.workers.values():
            process = worker.process
            if process is None or process.poll() is None:
                continue
            if process.returncode != 0:
                worker.exits.append(_last_error_line(worker.log))
            if worker.restart_on_exit:
                self.start(worker)
            else:
                worker.process = None

    def writers_done(self) -> bool:
        return all(w.process is None for w in self.workers.values() if not w.restart_on_exit)

    def stop(self) -> None:
        running = [w for w in self.workers.values() if w.process and w.process.poll() is None]
        for worker in running:
            assert worker.process is not None
            worker.process.send_signal(signal.SIGTERM)
        for worker in running:
            assert worker.process is not None
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        for worker in self.workers.values():
            if worker.log_file is not None:
                worker.log_file.close()


def _last_error_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line.strip()[:160]
    return lines[-1].strip()[:160] if lines else "(no output)"


@dataclass
class Figures:
    """The progress of the pipeline at one moment, as the database records it."""

    written: int
    projected: int
    unpublished_rows: int
    consumed: int

    @property
    def settled(self) -> bool:
        return self.written == self.projected == self.consumed and self.unpublished_rows == 0


def _figures(dsn: str) -> Figures | None:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2) as connection:
            row = connection.execute(
                """
                SELECT (SELECT count(*) FROM eventsource_event),
                       (SELECT count(DISTINCT event_id) FROM testapp_handledevent
                         WHERE projection = %s),
                       (SELECT count(*) FROM eventsource_outbox WHERE status <> 'published'),
                       (SELECT count(DISTINCT event_id) FROM testapp_handledevent
                         WHERE projection = %s)
                """,
                [PROJECTION, CONSUMER],
            ).fetchone()
    except psycopg.Error:
        return None
    assert row is not None
    return Figures(*row)


@dataclass
class Recovery:
    """How long the pipeline took to handle everything written before a fault ended.

    A kill during an outage ends with the outage (``ended_at`` is set then).
    """

    fault: str
    ended_at: float | None
    target: int | None = None
    done_at: dict[str, float] = field(default_factory=dict)

    def update(self, figures: Figures, now: float) -> None:
        if self.ended_at is None:
            return
        if self.target is None:
            self.target = figures.written
        published = figures.written - figures.unpublished_rows
        for stage, count in (
            ("projections", figures.projected),
            ("outbox", published),
            ("consumers", figures.consumed),
        ):
            if count >= self.target:
                self.done_at.setdefault(stage, now)

    @property
    def seconds(self) -> float | None:
        if len(self.done_at) < 3 or self.ended_at is None:
            return None
        return max(self.done_at.values()) - self.ended_at

    def describe(self) -> str:
        if self.seconds is None or self.ended_at is None:
            return f"did not recover ({self.fault})"
        ended_at = self.ended_at
        stages = ", ".join(f"{stage} {at - ended_at:.1f}" for stage, at in self.done_at.items())
        return f"{self.seconds:.1f} s ({self.fault}; {stages})"


class Monitor:
    """Polls the figures and times the recovery after each fault."""

    def __init__(self, dsn: str, timeline: Path) -> None:
        self.dsn = dsn
        self.timeline = timeline
        self.started = time.monotonic()
        self.recoveries: list[Recovery] = []
        self.figures: Figures | None = None
        self._next_poll = 0.0
        self._outages = 0

    def outage_started(self) -> None:
        self._outages += 1

    def fault_ended(self, fault: str, *, outage: bool = False) -> None:
        now = time.monotonic()
        if outage:
            self._outages -= 1
        self.recoveries.append(Recovery(fault, None if self._outages else now))
        if not self._outages:
            for recovery in self.recoveries:
                if recovery.ended_at is None:
                    recovery.ended_at = now

    def poll(self) -> None:
        now = time.monotonic()
        if now < self._next_poll:
            return
        self._next_poll = now + 0.25
        figures = _figures(self.dsn)
        if figures is None:
            return
        self.figures = figures
        with self.timeline.open("a") as timeline:
            timeline.write(
                f"{now - self.started:.2f},{figures.written},{figures.projected},"
                f"{figures.unpublished_rows},{figures.consumed}\n"
            )
        for recovery in self.recoveries:
            recovery.update(figures, now)

    def worst(self, prefix: str) -> str:
        """The slowest recovery of the faults named ``prefix…``, per stage in seconds."""
        recoveries = [r for r in self.recoveries if r.fault.startswith(prefix)]
        if not recoveries:
            return "no such fault"
        unfinished = [r for r in recoveries if r.seconds is None]
        if unfinished:
            return unfinished[0].describe()
        return max(recoveries, key=lambda r: r.seconds or 0.0).describe()


def _report(dsn: str, redis_url: str) -> dict[str, Any]:
    import psycopg
    import redis

    with psycopg.connect(dsn) as connection:
        written = {
            str(event_id)
            for (event_id,) in connection.execute("SELECT event_id FROM eventsource_event")
        }
        journal = connection.execute(
            "SELECT projection, event_id FROM testapp_handledevent"
        ).fetchall()
        dead_letters = connection.execute("SELECT count(*) FROM eventsource_dead_letter").fetchone()
        outbox: dict[str, int] = dict(
            connection.execute(
                "SELECT status, count(*) FROM eventsource_outbox GROUP BY status"
            ).fetchall()
        )
    projected = Counter(str(e) for p, e in journal if p == PROJECTION)
    consumed = Counter(str(e) for p, e in journal if p == CONSUMER)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    entries = client.xrange(f"{STREAM_PREFIX}:events")
    redis_dead_letters = int(client.xlen(f"{STREAM_PREFIX}:dlq"))
    client.close()
    published = Counter(fields["event_id"] for _, fields in entries)
    # Order per aggregate: each event's first publication comes after its predecessor's.
    out_of_order = 0
    last_version: dict[str, int] = {}
    seen: set[str] = set()
    for _, fields in entries:
        if fields["event_id"] in seen:
            continue
        seen.add(fields["event_id"])
        version = int(fields["aggregate_version"])
        if version < last_version.get(fields["aggregate_id"], 0):
            out_of_order += 1
        last_version[fields["aggregate_id"]] = version
    return {
        "written": len(written),
        "not projected": len(written - set(projected)),
        "not published": len(written - set(published)),
        "not consumed": len(written - set(consumed)),
        "projected twice": sum(1 for n in projected.values() if n > 1),
        "published twice": sum(1 for n in published.values() if n > 1),
        "delivered twice": sum(1 for n in consumed.values() if n > 1),
        "out of order": out_of_order,
        "projection dead letters": int(dead_letters[0]) if dead_letters else 0,
        "redis dead letters": redis_dead_letters,
        "outbox failed": int(outbox.get("failed", 0)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="Seed of the random moments.")
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of writing.")
    parser.add_argument("--writers", type=int, default=2, help="Writer processes.")
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs of each worker.")
    parser.add_argument("--db-down", type=float, default=3.0, help="Seconds the database is down.")
    parser.add_argument("--redis-down", type=float, default=10.0, help="Seconds Redis is down.")
    parser.add_argument("--settle-timeout", type=float, default=120.0)
    parser.add_argument("--write-for", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_for is not None:
        write_events(args.write_for, args.seed)
        return 0
    return run(args)


def run(args: argparse.Namespace) -> int:
    from tests.services import ThrowawayPostgres, ThrowawayRedis, postgres_tools_available

    if not (postgres_tools_available() and ThrowawayRedis.available()):
        print("fault_run.py needs pg_createcluster (postgresql-common) and redis-server")
        return 2
    rng = random.Random(args.seed)
    run_dir = Path(tempfile.mkdtemp(prefix="fault_run_"))
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    say(f"seed {args.seed}; logs and figures.csv in {run_dir}")
    cluster = ThrowawayPostgres.create()
    server = ThrowawayRedis()
    supervisor: Supervisor | None = None
    monitor: Monitor | None = None
    settled = False
    report: dict[str, Any] = {}
    try:
        server.start()
        settings = {
            "DATABASES": {"default": cluster.database_settings(CONN_MAX_AGE=60)},
            "EVENTSOURCE_OUTBOX_ENABLED": True,
            "EVENTSOURCE_EVENT_BUS": "redis",
            "EVENTSOURCE_REDIS_URL": server.url,
            "EVENTSOURCE_REDIS_STREAM_PREFIX": STREAM_PREFIX,
            "EVENTSOURCE_REDIS_MAX_STREAM_LENGTH": None,
            "EVENTSOURCE_REDIS_CLAIM_IDLE_MS": 5000,
            "EVENTSOURCE_OUTBOX_CLAIM_TIMEOUT": 10.0,
            "EVENTSOURCE_OUTBOX_RETRY_BACKOFF": 0.2,
            "EVENTSOURCE_OUTBOX_RETRY_BACKOFF_MAX": 5.0,
            "EVENTSOURCE_POLL_INTERVAL": 0.2,
            "EVENTSOURCE_PROJECTIONS": [f"tests.testapp.projections.{PROJECTION}"],
            "EVENTSOURCE_EVENT_HANDLERS": ["scripts.fault_run.record_delivery"],
            "LOGGING": {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {"stderr": {"class": "logging.StreamHandler"}},
                "loggers": {"django_eventsource": {"handlers": ["stderr"], "level": "WARNING"}},
            },
        }
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "EVENTSOURCE_TEST_SETTINGS": json.dumps(settings),
        }
        manage = [sys.executable, "manage.py"]
        subprocess.run(
            [*manage, "migrate", "--run-syncdb", "--verbosity", "0"], cwd=ROOT, env=env, check=True
        )
        say(f"PostgreSQL {cluster.name} on port {cluster.port}, Redis on port {server.port}")

        supervisor = Supervisor(env)
        workers = {
            "run_projections": [*manage, "run_projections", "--verbosity", "0"],
            "publish_outbox": [*manage, "publish_outbox", "--verbosity", "0"],
            "consume_events": [*manage, "consume_events", "--verbosity", "0"],
        }
        for name, command in workers.items():
            supervisor.add(Worker(name, command, run_dir / f"{name}.log"))
        for n in range(args.writers):
            command = [
                sys.executable,
                "scripts/fault_run.py",
                *("--write-for", str(args.duration), "--seed", str(args.seed * 100 + n)),
            ]
            supervisor.add(
                Worker(f"writer-{n}", command, run_dir / f"writer-{n}.log", restart_on_exit=False)
            )

        monitor = Monitor(cluster.dsn, run_dir / "figures.csv")
        schedule = _schedule(rng, args, cluster, server, supervisor, monitor, say)
        writing_started = time.monotonic()
        while schedule or not supervisor.writers_done():
            elapsed = time.monotonic() - writing_started
            while schedule and schedule[0][0] <= elapsed:
                _, action = schedule.pop(0)
                action()
            supervisor.poll()
            monitor.poll()
            time.sleep(0.05)
        say("writers done and faults over; waiting for the pipeline to settle")
        monitor.fault_ended("end of writing")
        monitor.figures = None  # polled before the last writer had finished
        deadline = time.monotonic() + args.settle_timeout
        while time.monotonic() < deadline:
            supervisor.poll()
            monitor.poll()
            if monitor.figures is not None and monitor.figures.settled:
                break
            time.sleep(0.05)
        settled = monitor.figures is not None and monitor.figures.settled
        say("settled" if settled else "did not settle")
        supervisor.stop()
        report = _report(cluster.dsn, server.url)
    finally:
        if supervisor is not None:
            supervisor.stop()
        server.close()
        cluster.drop()

    _print_report(args, report, supervisor, monitor)
    healthy = settled and not any(
        report[key] for key in ("not projected", "not published", "not consumed", "out of order")
    )
    return 0 if healthy else 1


def _schedule(
    rng: random.Random,
    args: argparse.Namespace,
    cluster: Any,
    server: Any,
    supervisor: Supervisor,
    monitor: Monitor,
    say: Callable[[str], None],
) -> list[tuple[float, Callable[[], None]]]:
    """The faults, at seeded seconds into the writing: kills anywhere, the database
    restart in the first half and the Redis outage in the second, so that the two
    outages do not overlap. Each fault's end starts a recovery timer."""
    duration = args.duration
    actions: list[tuple[float, Callable[[], None]]] = []

    def act(message: str, effect: Callable[[], None], ends: str = "") -> Callable[[], None]:
        def run() -> None:
            say(message)
            effect()
            if ends.startswith("kill"):
                monitor.fault_ended(ends)
            elif ends:
                monitor.fault_ended(ends, outage=True)
            else:
                monitor.outage_started()

        return run

    for name in ("run_projections", "publish_outbox", "consume_events"):
        for _ in range(args.kills):
            moment = rng.uniform(0.1, 0.9) * duration
            kill = functools.partial(supervisor.kill, name)
            actions.append((moment, act(f"kill -9 {name}", kill, f"kill -9 {name}")))
    db_stop = rng.uniform(0.2, 0.4) * duration
    actions.append((db_stop, act("database stopped", cluster.stop)))
    actions.append(
        (db_stop + args.db_down, act("database started", cluster.start, "database restart"))
    )
    redis_stop = rng.uniform(0.55, 0.75) * duration
    actions.append((redis_stop, act("Redis stopped", server.stop)))
    actions.append(
        (redis_stop + args.redis_down, act("Redis started", server.start, "Redis outage"))
    )
    return sorted(actions, key=lambda action: action[0])


def _print_report(
    args: argparse.Namespace,
    report: dict[str, Any],
    supervisor: Supervisor | None,
    monitor: Monitor | None,
) -> None:
    workers = supervisor.workers if supervisor else {}
    kills = ", ".join(f"{name} {w.kills}x" for name, w in workers.items() if w.kills)
    exits = "; ".join(
        f"{name} {len(w.exits)}x ({w.exits[-1]})" for name, w in workers.items() if w.exits
    )

    def recovery(prefix: str) -> str:
        return monitor.worst(prefix) if monitor else "not measured"

    rows = [
        ("Events written", f"{report['written']:,}"),
        ("Lost: not projected", report["not projected"]),
        ("Lost: not published", report["not published"]),
        ("Lost: not consumed", report["not consumed"]),
        ("Projected twice", report["projected twice"]),
        ("Published twice", report["published twice"]),
        ("Delivered twice (by event_id)", report["delivered twice"]),
        ("Published out of order (per aggregate)", report["out of order"]),
        (
            "Dead letters: projection / Redis / outbox failed",
            f"{report['projection dead letters']} / {report['redis dead letters']} / "
            f"{report['outbox failed']}",
        ),
        ("Faults: kill -9", kills or "none"),
        ("Faults: database", f"stopped once for {args.db_down:.0f} s"),
        ("Faults: Redis", f"stopped once for {args.redis_down:.0f} s"),
        ("Exited on their own (restarted)", exits or "none"),
        ("Time to recover: database restart", recovery("database restart")),
        ("Time to recover: Redis outage", recovery("Redis outage")),
        ("Time to recover: kill -9 (slowest)", recovery("kill -9")),
        ("Time to settle after the writers stopped", recovery("end of writing")),
    ]
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    print()
    print(
        f"`python scripts/fault_run.py --seed {args.seed} --duration {args.duration:.0f} "
        f"--writers {args.writers}` ({date})"
    )
    print()
    print("| Check | Result |")
    print("|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    sys.exit(main())
