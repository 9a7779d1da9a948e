"""Scaling one segmented projection over runner processes, and failing over a killed one.

Usage::

    python benchmarks/bench_scale_projections.py            # 100,000 events, PostgreSQL
    python benchmarks/bench_scale_projections.py --quick    # 20,000 events, a quick look

On a fresh PostgreSQL database (``BENCH_PG_NAME``, default ``eventsource_bench_segments``)
the store gets ``--events`` events of ``--aggregates`` accounts (one opening, then
deposits), appended through ``DjangoEventStore.append_events`` in interleaved rounds.
The projection is ``tests.testapp.segmented.SegmentedTally`` (``segments = 4``): one
``UPDATE`` per event on a per-account row, which checks the account's order (an event
lost, repeated or out of order is dead-lettered, and the run reported as inexact).

Measured, each time from a reset projection, as events per second of wall time from the
moment the runner processes (already started and set up) are released together to the
end of the last one's pass:

* the CPU-bound case - 1, 2 and 4 ``run_projections --once`` processes (each runner is
  this script's ``--runner`` mode: Django set up, then the same ``run_projections``
  function as the command); first on the freshly loaded table with autovacuum off (never
  analyzed), then after ``VACUUM ANALYZE``;
* the I/O-bound case - the same projection waiting 2 ms per event (``WaitingTally``),
  1 and 4 processes, on a database of its own (``<BENCH_PG_NAME>_io``) holding
  ``--io-events`` events of the same number of accounts;
* failover - two following runners (no ``--once``) while events are appended; one is
  killed with SIGKILL and the time is taken until every unit has handled an event appended
  right after the kill; the same measure without a kill is the baseline.

The read model is compared with a replay of the store after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import setup_django

CPU = "tests.testapp.segmented.SegmentedTally"
IO = "benchmarks.bench_scale_projections.WaitingTally"
ROUNDS = 5


def _waiting_tally() -> type[Any]:
    from tests.testapp.segmented import SegmentedTally

    class WaitingTally(SegmentedTally):
        """``SegmentedTally`` waiting 2 ms per event, as a handler calling a service would."""

        def process(self, event: Any) -> None:
            time.sleep(0.002)
            super().process(event)

    return WaitingTally


def __getattr__(name: str) -> Any:
    # The class is built on first use, once Django is set up (the runner imports it by path).
    if name == "WaitingTally":
        cls = _waiting_tally()
        globals()[name] = cls
        return cls
    raise AttributeError(name)


# -- loading and checking --------------------------------------------------------------------


def populate(events: int, aggregates: int) -> list[UUID]:
    from django_eventsource import DjangoEventStore, ExpectedVersion
    from tests.testapp.domain import AccountOpened, MoneyDeposited

    store = DjangoEventStore()
    per_account = max(events // aggregates, 2)
    accounts = [uuid4() for _ in range(aggregates)]
    chunk = -(-per_account // ROUNDS)
    for start in range(0, per_account, chunk):
        for account in accounts:
            batch: list[Any] = []
            for version in range(start + 1, min(start + chunk, per_account) + 1):
                if version == 1:
                    batch.append(
                        AccountOpened(aggregate_id=account, owner="x", aggregate_version=1)
                    )
                else:
                    amount = Decimal(version % 97 + 1)
                    batch.append(
                        MoneyDeposited(
                            aggregate_id=account, amount=amount, aggregate_version=version
                        )
                    )
            expected = ExpectedVersion.NO_STREAM if start == 0 else start
            store.append_events(account, "Account", batch, expected)
    return accounts


def exact(limit_accounts: set[UUID] | None = None) -> bool:
    """The read model equals a replay of the store (optionally of some accounts only)."""
    from django_eventsource import DjangoEventStore
    from django_eventsource.models import DeadLetter
    from tests.testapp.domain import MoneyDeposited
    from tests.testapp.models import AccountSummary

    state: dict[UUID, tuple[Decimal, int]] = {}
    for stored in DjangoEventStore().read_all():
        event = stored.event
        if limit_accounts is not None and event.aggregate_id not in limit_accounts:
            continue
        balance, seen = state.get(event.aggregate_id, (Decimal(0), 0))
        if isinstance(event, MoneyDeposited):
            balance += event.amount
        state[event.aggregate_id] = (balance, seen + 1)
    model = {r.account_id: (r.balance, r.events_seen) for r in AccountSummary.objects.all()}
    return model == state and not DeadLetter.objects.exists()


def set_segments(path: str, segments: int) -> None:
    from django.utils.module_loading import import_string

    import_string(path).segments = segments


def reset(path: str, segments: int = 4) -> None:
    """Empty the read model and rewind the checkpoints of ``segments`` units (others go)."""
    from django.test.utils import override_settings

    from django_eventsource.models import DeadLetter
    from django_eventsource.projections.maintenance import reset_projection

    set_segments(path, segments)
    with override_settings(EVENTSOURCE_PROJECTIONS=[path]):
        reset_projection(path)
    DeadLetter.objects.all().delete()


# -- runner processes --------------------------------------------------------------------------


def child_env(path: str, segments: int = 4) -> dict[str, str]:
    return {**os.environ, "BENCH_CHILD_PROJECTION": path, "BENCH_CHILD_SEGMENTS": str(segments)}


def start_runner(path: str, *args: str, segments: int = 4) -> subprocess.Popen[str]:
    """A runner process, set up and waiting for a line on its stdin before it starts."""
    runner = subprocess.Popen(
        [sys.executable, __file__, "--runner", *args],
        env=child_env(path, segments),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert runner.stdout is not None
    if runner.stdout.readline().strip() != "ready":
        raise SystemExit("runner failed to start")
    return runner


def go(runner: subprocess.Popen[str]) -> None:
    assert runner.stdin is not None
    runner.stdin.write("go\n")
    runner.stdin.flush()


def run_processes(
    path: str, processes: int, batch_size: int, segments: int = 4
) -> tuple[int, float]:
    """``processes`` runners with ``--once`` released together: (events handled, seconds).

    The time runs from the release to the end of the last runner's pass; Python and
    Django start-up are left out.
    """
    from django.db import connections

    connections.close_all()
    runners = [
        start_runner(path, "--once", "--batch-size", str(batch_size), segments=segments)
        for _ in range(processes)
    ]
    start = time.time()
    for runner in runners:
        go(runner)
    handled, end = 0, start
    for runner in runners:
        out, _ = runner.communicate()
        if runner.returncode != 0:
            raise SystemExit(f"runner failed ({runner.returncode})")
        result = json.loads(out.strip().splitlines()[-1])
        handled += result["processed"]
        end = max(end, result["ended"])
    return handled, end - start


def runner_main(once: bool, batch_size: int) -> None:
    """The ``--runner`` mode: ``run_projections`` on the projection given by the parent."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    import django
    from django.conf import settings

    django.setup()
    settings.EVENTSOURCE_PROJECTIONS = [os.environ["BENCH_CHILD_PROJECTION"]]
    import threading

    from django_eventsource._runtime import stop_on_signals
    from django_eventsource.projections.runner import run_projections
    from django_eventsource.projections.segments import load_units

    set_segments(settings.EVENTSOURCE_PROJECTIONS[0], int(os.environ["BENCH_CHILD_SEGMENTS"]))
    load_units()  # import the projection before the clock starts
    stop = threading.Event()
    print("ready", flush=True)
    sys.stdin.readline()
    with stop_on_signals(stop):
        summary = run_projections(
            once=once, batch_size=batch_size, poll_interval=0.1, stop_event=stop
        )
    print(json.dumps({"processed": summary.total_processed, "ended": time.time()}), flush=True)


# -- the measures -------------------------------------------------------------------------------


def scaling(path: str, counts: list[int], batch_size: int, label: str) -> dict[int, float]:
    rates: dict[int, float] = {}
    reset(path, segments=1)
    handled, seconds = run_processes(path, 1, batch_size, segments=1)
    print(
        f"  {label}: reference, segments = 1, 1 process: {handled / seconds:,.0f} events/s, "
        f"read model {'exact' if exact() else 'NOT EXACT'}",
        flush=True,
    )
    for processes in counts:
        reset(path)
        handled, seconds = run_processes(path, processes, batch_size)
        ok = exact()
        rates[processes] = handled / seconds
        print(
            f"  {label}: {processes} process(es): {handled:,} events in {seconds:.1f} s = "
            f"{rates[processes]:,.0f} events/s, read model {'exact' if ok else 'NOT EXACT'}",
            flush=True,
        )
    base = rates[counts[0]]
    print("  ratios: " + ", ".join(f"{p}: {rates[p] / base:.2f}x" for p in counts[1:]), flush=True)
    return rates


def unit_positions() -> dict[str, int]:
    from django_eventsource.models import Checkpoint

    rows = Checkpoint.objects.filter(projection_name__startswith="SegmentedTally#")
    return dict(rows.values_list("projection_name", "position"))


def marker_positions(accounts: list[UUID]) -> dict[str, int]:
    """Append one deposit per account; the last position each unit must reach."""
    from django_eventsource import DjangoEventStore
    from django_eventsource.models import EventRecord
    from django_eventsource.partitioning import event_bucket
    from django_eventsource.projections.segments import bucket_range, unit_name
    from tests.testapp.domain import MoneyDeposited

    store = DjangoEventStore()
    targets: dict[str, int] = {}
    for account in accounts:
        version = EventRecord.objects.filter(aggregate_id=account).count()
        result = store.append_events(
            account,
            "Account",
            [
                MoneyDeposited(
                    aggregate_id=account, amount=Decimal(1), aggregate_version=version + 1
                )
            ],
            version,
        )
        bucket = event_bucket(account)
        index = next(i for i in range(4) if bucket_range(i, 4)[0] <= bucket < bucket_range(i, 4)[1])
        name = unit_name("SegmentedTally", index, 4)
        targets[name] = max(targets.get(name, 0), int(result.global_position))
    return targets


def time_until_caught_up(targets: dict[str, int], timeout: float = 60) -> float:
    start = time.perf_counter()
    while True:
        positions = unit_positions()
        if all(positions.get(name, 0) >= target for name, target in targets.items()):
            return time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            return float("inf")
        time.sleep(0.005)


def failover(accounts: list[UUID], batch_size: int) -> None:
    """Two following runners; the time for every unit to handle fresh events, with a kill."""
    reset(CPU)
    runners = [start_runner(CPU, "--batch-size", str(batch_size)) for _ in range(2)]
    for runner in runners:
        go(runner)
    try:
        # Catch up first, so both are following (holding nothing between passes).
        caught = time_until_caught_up(marker_positions(accounts[:64]), timeout=600)
        print(f"  catch-up by two following runners: {caught:.1f} s", flush=True)
        baseline = [time_until_caught_up(marker_positions(accounts[:64])) for _ in range(3)]
        runners[0].send_signal(signal.SIGKILL)
        runners[0].wait()
        after_kill = time_until_caught_up(marker_positions(accounts[:64]))
    finally:
        for runner in runners:
            if runner.poll() is None:
                runner.send_signal(signal.SIGTERM)
                runner.communicate(timeout=60)
    ok = exact()
    print(
        f"  every unit handled events appended after SIGKILL of one of two runners in "
        f"{after_kill:.2f} s (without a kill: {max(baseline):.2f} s at most); "
        f"read model {'exact' if ok else 'NOT EXACT'}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 events, 2,000 I/O-bound")
    parser.add_argument("--events", type=int)
    parser.add_argument("--io-events", type=int)
    parser.add_argument("--aggregates", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--runner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--io-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.runner:
        runner_main(args.once, args.batch_size)
        return
    events = args.events or (20_000 if args.quick else 100_000)
    io_events = args.io_events or (4_000 if args.quick else 10_000)
    if args.io_only:
        io_phase(io_events, args.aggregates, args.batch_size)
        return
    os.environ.setdefault("BENCH_PG_NAME", "eventsource_bench_segments")
    setup_django("postgres")
    from django.db import connection

    print(f"Segmented projection (segments = 4), {events:,} events of {args.aggregates:,} accounts")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE eventsource_event SET (autovacuum_enabled = false)")
    accounts = populate(events, args.aggregates)
    print(f"  loaded in {time.perf_counter() - started:.1f} s", flush=True)
    cpu_counts = [1, 2, 4]
    fresh = scaling(CPU, cpu_counts, args.batch_size, "CPU-bound, never-analyzed table")
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE eventsource_event RESET (autovacuum_enabled)")
        cursor.execute("VACUUM ANALYZE eventsource_event")
    analyzed = scaling(CPU, cpu_counts, args.batch_size, "CPU-bound, analyzed table")

    print("Failover (PostgreSQL advisory locks)", flush=True)
    failover(accounts, args.batch_size)

    # The I/O-bound case on a database of its own with fewer events (2 ms each adds up).
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--io-only",
            "--io-events",
            str(io_events),
            "--aggregates",
            str(args.aggregates),
            "--batch-size",
            str(args.batch_size),
        ],
        env={**os.environ, "BENCH_PG_NAME": os.environ["BENCH_PG_NAME"] + "_io"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    print(out, end="", flush=True)
    io = json.loads(out.strip().splitlines()[-1])

    print("\nSummary (targets: I/O-bound >= 3x with 4; CPU-bound >= 1.3x with 2, >= 1.8x with 4)")
    for label, rates in (("CPU fresh", fresh), ("CPU analyzed", analyzed)):
        print(
            f"  {label}: 2 processes {rates[2] / rates[1]:.2f}x, "
            f"4 processes {rates[4] / rates[1]:.2f}x"
        )
    print(f"  I/O-bound: 4 processes {io['4'] / io['1']:.2f}x")


def io_phase(events: int, aggregates: int, batch_size: int) -> None:
    setup_django("postgres")
    from django.db import connection

    populate(events, aggregates)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE eventsource_event")
    print(f"I/O-bound (2 ms per event), {events:,} events of {aggregates:,} accounts", flush=True)
    rates = scaling(IO, [1, 4], batch_size, "I/O-bound")
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
