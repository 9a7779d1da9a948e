"""run_projections through PgBouncer in transaction mode, with leases and polling.

Behind a transaction-mode pooler a session advisory lock and LISTEN stay on whichever
server connection ran them; ``EVENTSOURCE_PROJECTION_LOCK = "lease"`` keeps one runner
per projection with ``Checkpoint`` leases instead. Two runners share a pool of two server
connections here: one owns the projection at a time, the other takes over when it stops,
every event is handled once, and nothing stays locked after both have stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

from django_eventsource import DjangoEventStore, ExpectedVersion
from django_eventsource.models import Checkpoint, EventRecord
from tests.conftest import REQUIRE_SERVICES
from tests.factories import account_history
from tests.processes import start_run_projections, stop
from tests.services import free_port, wait_for_port
from tests.testapp.models import HandledEvent

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PROJECTION = "tests.testapp.projections.AccountSummaryProjection"
NAME = "AccountSummaryProjection"


@pytest.fixture
def pgbouncer_port() -> Iterator[int]:
    """A PgBouncer in transaction mode in front of the test server, on a port of its own."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        if REQUIRE_SERVICES:
            pytest.fail("pgbouncer is required but not installed")
        pytest.skip("pgbouncer is not installed")
    server = connection.settings_dict
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="es-pgbouncer-"))
    (directory / "users.txt").write_text(f'"{server["USER"]}" ""\n')
    (directory / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server['HOST']} port={server['PORT']}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
        "unix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 50\n"
        f"logfile = {directory / 'pgbouncer.log'}\n"
    )
    command = [binary, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        shutil.chown(directory, "postgres")
        for item in directory.iterdir():
            shutil.chown(item, "postgres")
        command[1:1] = ["-u", "postgres"]
    bouncer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port)
        yield port
    finally:
        stop(bouncer, timeout=30)
        shutil.rmtree(directory, ignore_errors=True)


def _until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _save_accounts(count: int) -> int:
    """Save ``count`` accounts of three events; returns the last position."""
    store = DjangoEventStore()
    for _ in range(count):
        events = account_history(deposits=2)
        store.append_events(events[0].aggregate_id, "Account", events, ExpectedVersion.NO_STREAM)
    return store.get_global_position()


def _position() -> int:
    return (
        Checkpoint.objects.filter(projection_name=NAME).values_list("position", flat=True).first()
        or 0
    )


def _owner_pid() -> int | None:
    owner = Checkpoint.objects.filter(projection_name=NAME).values_list("lease_owner", flat=True)
    parts = (owner.first() or "").split(":")
    return int(parts[1]) if len(parts) == 3 else None


def _handled_once() -> None:
    ids = list(HandledEvent.objects.values_list("event_id", flat=True))
    assert sorted(ids) == sorted(EventRecord.objects.values_list("event_id", flat=True))


def test_runners_through_transaction_pooling_share_one_projection_and_leave_no_lock(
    pgbouncer_port: int,
) -> None:
    server = connection.settings_dict
    pooled = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": server["NAME"],
        "USER": server["USER"],
        "HOST": "127.0.0.1",
        "PORT": str(pgbouncer_port),
        # Transaction pooling keeps no cursor across transactions.
        "DISABLE_SERVER_SIDE_CURSORS": True,
    }
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "EVENTSOURCE_TEST_PROJECTIONS": PROJECTION,
        "EVENTSOURCE_TEST_SETTINGS": json.dumps(
            {
                "DATABASES": {"default": pooled},
                "EVENTSOURCE_PROJECTION_LOCK": "lease",
                "EVENTSOURCE_PROJECTION_LEASE_SECONDS": 5.0,
            }
        ),
    }

    def runner(*args: str) -> subprocess.Popen[bytes]:
        return start_run_projections(env, *args)

    total = _save_accounts(100)
    first, second = runner(), runner()
    try:
        _until(lambda: _position() == total, "the projection to catch up")
        _handled_once()
        owner = _owner_pid()
        assert owner in (first.pid, second.pid)
        standby = second if owner == first.pid else first
        active = first if standby is second else second

        # The owner stops; the other runner takes the projection over.
        active.send_signal(signal.SIGTERM)
        assert active.wait(60) == 0
        total = _save_accounts(100)
        _until(lambda: _position() == total, "the other runner to take over")
        assert _owner_pid() == standby.pid
        _handled_once()
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(60)

    # Nothing is left behind: no lease, no advisory lock on any server connection.
    assert _owner_pid() is None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        assert cursor.fetchone()[0] == 0
    total = _save_accounts(100)
    later = runner("--once")
    assert later.wait(120) == 0, later.stderr.read().decode() if later.stderr else ""
    assert _position() == total
    _handled_once()
