"""The test settings with three databases: ``default``, ``events`` and ``readmodels``.

``EVENTSOURCE_MULTIDB`` (a JSON object alias → database NAME) names the databases; the
engine and the connection follow ``EVENTSOURCE_TEST_DB`` as in ``tests.settings``.
"""

from __future__ import annotations

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES as _BASE

_names = json.loads(os.environ.get("EVENTSOURCE_MULTIDB", "{}"))
_template = {key: value for key, value in _BASE["default"].items() if key != "TEST"}
DATABASES = {
    alias: {**_template, "NAME": _names.get(alias, f"{_template['NAME']}_{alias}")}
    for alias in ("default", "events", "readmodels")
}
DATABASE_ROUTERS = ["tests.multidb.router.SplitRouter"]
EVENTSOURCE_OUTBOX_ENABLED = True
EVENTSOURCE_EVENT_BUS = "memory"
EVENTSOURCE_PROJECTIONS = ["tests.testapp.projections.AccountSummaryProjection"]
