"""The test settings with a ``replica`` database that reads are routed to.

``EVENTSOURCE_MULTIDB`` (a JSON object alias → database NAME) names the two databases.
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
    for alias in ("default", "replica")
}
DATABASE_ROUTERS = ["tests.replica.router.ReplicaRouter"]
