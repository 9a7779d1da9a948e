"""Reads through a read-replica router: prints what the event store saw, as JSON.

The replica is a database of its own holding a stale, diverging copy: one event at a
position the primary has not reached. On PostgreSQL a transaction on the primary holds
position 3 open while the store computes its safe mark.
"""

from __future__ import annotations

import json
import os
import threading

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.replica.settings")
django.setup()

from django.db import connections, transaction  # noqa: E402

from django_eventsource import ExpectedVersion  # noqa: E402
from django_eventsource.stores.django import DjangoEventStore  # noqa: E402
from tests.factories import account_history  # noqa: E402


def main() -> None:
    # The replica's stale copy: five events of another aggregate.
    stale = account_history(deposits=4)
    DjangoEventStore(using="replica").append_events(
        stale[0].aggregate_id, "Account", stale, ExpectedVersion.NO_STREAM
    )
    store = DjangoEventStore()  # follows the router: reads would go to the replica
    events = account_history(deposits=1)
    aggregate = events[0].aggregate_id
    store.append_events(aggregate, "Account", events, ExpectedVersion.NO_STREAM)

    report: dict[str, object] = {
        "read_alias": store.db_for_read(),
        "stream_version": store.get_stream_version(aggregate, "Account"),
        "loaded": len(store.get_events(aggregate, "Account").events),
        "read_all": [s.global_position for s in store.read_all()],
    }
    if connections["default"].vendor == "postgresql":
        holding, release = threading.Event(), threading.Event()

        def writer() -> None:
            with transaction.atomic():
                later = account_history(deposits=0)
                DjangoEventStore(using="default").append_events(
                    later[0].aggregate_id, "Account", later, ExpectedVersion.NO_STREAM
                )
                holding.set()
                release.wait(60)
            connections.close_all()

        thread = threading.Thread(target=writer)
        thread.start()
        holding.wait(60)
        report["safe_mark_while_open"] = store.safe_high_water_mark()
        release.set()
        thread.join()
        report["safe_mark_after_commit"] = store.safe_high_water_mark()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
