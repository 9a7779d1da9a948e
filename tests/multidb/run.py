"""Save → relay → projection in the three-database project; prints a JSON report.

Run by ``tests/test_multidb.py`` as ``python -m tests.multidb.run``, after ``migrate`` on
every alias.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from uuid import uuid4

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.multidb.settings")
django.setup()

from django.db import connections  # noqa: E402

from django_eventsource import AggregateRepository, InMemoryEventBus  # noqa: E402
from django_eventsource.outbox.relay import publish_outbox  # noqa: E402
from django_eventsource.projections.runner import run_projections  # noqa: E402
from django_eventsource.stores.django import DjangoEventStore  # noqa: E402
from tests.testapp.domain import Account  # noqa: E402
from tests.testapp.models import AccountSummary  # noqa: E402


def tables(alias: str) -> list[str]:
    with connections[alias].cursor() as cursor:
        names = connections[alias].introspection.table_names(cursor)
    return sorted(n for n in names if n.startswith(("eventsource_", "testapp_", "auth_user")))


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
    print(
        json.dumps(
            {
                "relayed": relayed.published,
                "published": len(published),
                "projected": summary.processed,
                "balance": str(row.balance),
                "events_seen": row.events_seen,
                "tables": {alias: tables(alias) for alias in ("default", "events", "readmodels")},
            }
        )
    )


if __name__ == "__main__":
    main()
