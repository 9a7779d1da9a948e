"""Save → relay → projection in the three-database project; prints a JSON report.

Run by ``tests/test_multidb.py`` as ``python -m tests.multidb.run``, after ``migrate`` on
every alias.
"""

from __future__ import annotations

import json
import os
import threading
from decimal import Decimal
from uuid import uuid4

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.multidb.settings")
django.setup()

from django.db import connections  # noqa: E402

from django_eventsource import AggregateRepository, InMemoryEventBus  # noqa: E402
from django_eventsource.outbox.relay import publish_outbox  # noqa: E402
from django_eventsource.projections.exclusivity import AdvisoryLocks, exclusivity_for  # noqa: E402
from django_eventsource.projections.runner import run_projections  # noqa: E402
from django_eventsource.stores.django import DjangoEventStore  # noqa: E402
from tests.testapp.domain import Account  # noqa: E402
from tests.testapp.models import AccountSummary  # noqa: E402


def tables(alias: str) -> list[str]:
    with connections[alias].cursor() as cursor:
        names = connections[alias].introspection.table_names(cursor)
    return sorted(n for n in names if n.startswith(("eventsource_", "testapp_", "auth_user")))


def woken_by_an_append(repository: AggregateRepository[Account]) -> bool | None:
    """Whether a runner's wait on the checkpoints' database wakes up on an append to the
    events database (PostgreSQL LISTEN/NOTIFY); None where there is nothing to listen to."""
    guard = exclusivity_for("readmodels", listen=True)
    if not isinstance(guard, AdvisoryLocks):
        return None
    try:
        stop = threading.Event()
        guard.wait(0.0, stop)  # opens the listening connection before the append
        waiter = threading.Thread(target=guard.wait, args=(120.0, stop))
        waiter.start()
        account = Account(uuid4())
        account.open("Grace")
        repository.save(account)
        waiter.join(60.0)  # the wait returns at the notification, or after 120 s
        woke = not waiter.is_alive()
        stop.set()
        waiter.join()
        return woke
    finally:
        guard.close()


def main() -> None:
    repository = AggregateRepository(DjangoEventStore(), Account)
    account_id = uuid4()
    account = Account(account_id)
    account.open("Ada", Decimal("10"))
    account.deposit(Decimal("5"))
    repository.save(account)

    published: list[str] = []
    bus = InMemoryEventBus()
    bus.subscribe_to_all_events(lambda event: published.append(str(event.event_id)))
    relayed = publish_outbox(once=True, bus=bus)
    summary = run_projections(once=True)
    row = AccountSummary.objects.get(account_id=account_id)
    woke = woken_by_an_append(repository)
    print(
        json.dumps(
            {
                "relayed": relayed.published,
                "published": len(published),
                "projected": summary.processed,
                "balance": str(row.balance),
                "events_seen": row.events_seen,
                "woken_by_append": woke,
                "tables": {alias: tables(alias) for alias in ("default", "events", "readmodels")},
            }
        )
    )


if __name__ == "__main__":
    main()
