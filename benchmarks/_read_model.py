"""The read-model half of ``bench_projections.py``: one summary row per aggregate.

Each event of an account adds 1 to its ``events``, a deposit's amount to its ``total``
and sets ``last_seen`` (``tests.testapp.models.AccountActivity``). Built four ways:

* raw reference - psycopg 3 / ``sqlite3`` only: empty the summary table and rewind
  the checkpoint (as ``reset_projection`` does; timed in both), then per page, lock the
  checkpoint row, read
  the page (position, aggregate id, type, time, payload; the driver decodes UUIDs,
  timestamps and JSON on PostgreSQL, ``json.loads`` and ``fromisoformat`` on SQLite), fold
  it in Python into one entry per account, write those with one multi-row
  ``INSERT … ON CONFLICT DO UPDATE`` that adds to the stored row, move the checkpoint,
  commit;
* batch projection - ``reset_projection(…, rebuild=True)`` of
  ``BatchActivityProjection`` (``handle_batch``: fold the page, ``in_bulk`` the page's
  rows, one ``bulk_create(update_conflicts=True)``), pages of the same size;
* per-event projection - ``ActivityProjection`` (an ``UPDATE … SET events = events + 1``
  per deposit) through the runner's batches, over the first ``per_event`` events only
  (the whole log would take minutes at that rate);
* inline - ``AggregateRepository.save`` of one deposit with an inline projection applied
  in the save's transaction, against the same saves with ``inline`` off: the summary
  row written with one SQL upsert (``InlineActivityUpsert``), and with the ORM's
  ``filter().update()`` of ``F()`` expressions (``InlineActivityProjection``).
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4

RAW_NAME = "RawReadModelReference"
PAGE = 5000


class RawFold:
    """The reference: the same work through the bare driver."""

    def __init__(self, backend: str) -> None:
        from benchmarks._harness import raw_connection

        self.postgres = backend == "postgres"
        self.conn, self.ph = raw_connection(backend)

    def close(self) -> None:
        self.conn.close()

    def reset(self) -> None:
        ph = self.ph
        with self._transaction() as cur:
            cur.execute("DELETE FROM testapp_accountactivity")
            cur.execute(
                f"DELETE FROM eventsource_checkpoint WHERE projection_name = {ph}", [RAW_NAME]
            )
            cur.execute(
                "INSERT INTO eventsource_checkpoint (projection_name, position, last_event_type, "
                "events_processed, updated_at, lease_owner, failure_streak, last_error) "
                f"VALUES ({ph}, 0, '', 0, CURRENT_TIMESTAMP, '', 0, '')",
                [RAW_NAME],
            )

    def _transaction(self) -> Any:
        conn = self.conn
        if self.postgres:
            return _PgTransaction(conn)
        return _SqliteTransaction(conn)

    def run(self, page: int = PAGE) -> int:
        """Fold every event into the summary table; returns the number of events."""
        ph = self.ph
        done = 0
        deposit = "MoneyDeposited"
        while True:
            with self._transaction() as cur:
                lock = "" if not self.postgres else " FOR UPDATE"
                cur.execute(
                    f"SELECT position FROM eventsource_checkpoint WHERE projection_name = {ph}"
                    + lock,
                    [RAW_NAME],
                )
                position = cur.fetchone()[0]
                cur.execute(
                    "SELECT position, aggregate_id, event_type, occurred_at, payload "
                    f"FROM eventsource_event WHERE position > {ph} ORDER BY position LIMIT {ph}",
                    [position, page],
                )
                rows = cur.fetchall()
                if not rows:
                    return done
                folded: dict[Any, list[Any]] = {}
                for _, aggregate_id, event_type, occurred_at, payload in rows:
                    if not self.postgres:
                        payload = json.loads(payload)
                        occurred_at = datetime.fromisoformat(occurred_at)
                    entry = folded.get(aggregate_id)
                    if entry is None:
                        entry = folded[aggregate_id] = [0, Decimal(0), None]
                    entry[0] += 1
                    if event_type == deposit:
                        entry[1] += Decimal(payload["amount"])
                    entry[2] = occurred_at
                values: list[Any] = []
                for aggregate_id, (count, total, seen) in folded.items():
                    if self.postgres:
                        values += (aggregate_id, count, total, seen)
                    else:
                        values += (aggregate_id, count, str(total), seen.isoformat(" "))
                cur.execute(
                    "INSERT INTO testapp_accountactivity (account_id, events, total, last_seen) "
                    f"VALUES {', '.join([f'({ph}, {ph}, {ph}, {ph})'] * len(folded))} "
                    "ON CONFLICT (account_id) DO UPDATE SET "
                    "events = testapp_accountactivity.events + excluded.events, "
                    "total = testapp_accountactivity.total + excluded.total, "
                    "last_seen = excluded.last_seen",
                    values,
                )
                cur.execute(
                    f"UPDATE eventsource_checkpoint SET position = {ph} "
                    f"WHERE projection_name = {ph}",
                    [rows[-1][0], RAW_NAME],
                )
                done += len(rows)


class _PgTransaction:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def __enter__(self) -> Any:
        self.cur = self.conn.cursor()
        return self.cur

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self.cur.close()
        if exc_type is None:
            self.conn.commit()
        else:
            self.conn.rollback()


class _SqliteTransaction:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def __enter__(self) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn.cursor()

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def summary_rows() -> dict[str, tuple[int, Decimal]]:
    """The read model, for checking that every way built the same one."""
    from tests.testapp.models import AccountActivity

    return {str(row.account_id): (row.events, row.total) for row in AccountActivity.objects.all()}


def raw_rate(backend: str) -> tuple[float, dict[str, tuple[int, Decimal]]]:
    raw = RawFold(backend)
    try:
        # The reset is timed, as it is in ``batch_rate`` (``reset_projection`` empties
        # the read model and rewinds the checkpoint before it replays).
        start = time.perf_counter()
        raw.reset()
        count = raw.run()
        elapsed = time.perf_counter() - start
    finally:
        raw.close()
    return count / elapsed, summary_rows()


def batch_rate() -> tuple[float, dict[str, tuple[int, Decimal]]]:
    from django.test.utils import override_settings

    from django_eventsource.projections.maintenance import reset_projection

    path = "tests.testapp.projections.BatchActivityProjection"
    with override_settings(EVENTSOURCE_PROJECTIONS=[path]):
        start = time.perf_counter()
        summary = reset_projection("BatchActivityProjection", rebuild=True, batch_size=PAGE)
        elapsed = time.perf_counter() - start
    return summary.total_processed / elapsed, summary_rows()


def per_event_rate(limit: int) -> float:
    """``ActivityProjection`` through the runner's batches (500), up to position ``limit``."""
    from django.test.utils import override_settings

    from django_eventsource.projections.batch import run_batch
    from django_eventsource.projections.maintenance import reset_projection
    from django_eventsource.projections.runner import batch_context, checkpoint_db, load_projections

    path = "tests.testapp.projections.ActivityProjection"
    with override_settings(EVENTSOURCE_PROJECTIONS=[path]):
        reset_projection("ActivityProjection")
        (projection,) = load_projections()
        ctx = batch_context(checkpoint_db())
        done = 0
        start = time.perf_counter()
        while done < limit:
            result = run_batch(projection, ctx)
            if result.count == 0:
                break
            done += result.count
        return done / (time.perf_counter() - start)


def compare(backend: str, rounds: int, fresh: bool) -> tuple[float, float, bool]:
    """Median raw and batch rates over ``rounds`` alternating runs; whether they agree."""
    raws: list[float] = []
    batches: list[float] = []
    agree = True
    for _ in range(rounds):
        raw, raw_rows = raw_rate(backend)
        batch, batch_rows = batch_rate()
        raws.append(raw)
        batches.append(batch)
        agree = agree and raw_rows == batch_rows
    return statistics.median(raws), statistics.median(batches), agree


def inline_rates(saves: int, rounds: int, name: str) -> tuple[float, float, bool]:
    """Single-deposit saves per second without and with the inline projection ``name``
    of ``tests.testapp.projections`` (medians)."""
    from django.test.utils import override_settings

    from django_eventsource import AggregateRepository, DjangoEventStore
    from django_eventsource.models import Checkpoint
    from tests.testapp import projections
    from tests.testapp.domain import Account
    from tests.testapp.models import AccountActivity

    projection = getattr(projections, name)
    store = DjangoEventStore()
    repository = AggregateRepository(store, Account)
    path = f"tests.testapp.projections.{name}"
    with override_settings(EVENTSOURCE_PROJECTIONS=[path]):
        accounts = []
        for n in range(20):
            account = repository.create_new(uuid4())
            account.open(owner=f"bench{n}")
            repository.save(account)
            accounts.append(account)
        # The inline path applies a save only when the projection is caught up: start it
        # at the head of the log (its rows for the other accounts do not matter here).
        Checkpoint.objects.update_or_create(
            projection_name=name,
            defaults={"position": store.get_global_position()},
        )
        AccountActivity.objects.filter(account_id__in=[a.aggregate_id for a in accounts]).delete()
        AccountActivity.objects.bulk_create(
            [AccountActivity(account_id=a.aggregate_id) for a in accounts]
        )
        samples: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(rounds):
            for inline in (False, True):
                projection.inline = inline
                # Saves without the inline path left the checkpoint behind: put it back
                # at the head, as the runner would, so that the inline saves apply.
                Checkpoint.objects.filter(projection_name=name).update(
                    position=store.get_global_position()
                )
                start = time.perf_counter()
                for i in range(saves):
                    account = accounts[i % len(accounts)]
                    account.deposit(Decimal(1))
                    repository.save(account)
                samples[inline].append(saves / (time.perf_counter() - start))
        projection.inline = True
        applied = sum(
            AccountActivity.objects.filter(
                account_id__in=[a.aggregate_id for a in accounts]
            ).values_list("events", flat=True)
        )  # only the inline rounds count
    return (
        statistics.median(samples[False]),
        statistics.median(samples[True]),
        applied == saves * rounds,
    )
