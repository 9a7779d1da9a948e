"""Routes the event store to ``events`` and the read side to ``readmodels``.

The outbox goes with the events: the store writes its rows in the append transaction, so
they must live in the same database. Checkpoints, dead letters and the test read models
share ``readmodels``, so a projection batch commits the read model and its checkpoint
together. Everything else (auth, admin, sessions) stays on ``default``.
"""

from __future__ import annotations

from typing import Any

#: ``(app_label, model_name)`` → alias.
PLACES = {
    ("django_eventsource", "eventrecord"): "events",
    ("django_eventsource", "outboxmessage"): "events",
    ("django_eventsource", "snapshot"): "events",
    ("django_eventsource", "checkpoint"): "readmodels",
    ("django_eventsource", "deadletter"): "readmodels",
    ("testapp", "accountsummary"): "readmodels",
    ("testapp", "handledevent"): "readmodels",
}


def _alias(model: Any) -> str:
    meta = model._meta
    return PLACES.get((meta.app_label, meta.model_name), "default")


class SplitRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str:
        return _alias(model)

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return _alias(model)

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        return _alias(type(obj1)) == _alias(type(obj2)) or None

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        if model_name is None:
            # No model named: an operation the router cannot place (Django's default
            # then runs it everywhere).
            return None
        return PLACES.get((app_label, model_name), "default") == db
