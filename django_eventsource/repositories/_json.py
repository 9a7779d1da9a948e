"""JSON helpers, where the eventsource guide keeps them (internal).

They live in :mod:`django_eventsource.events.serialization`.
"""

from ..events.serialization import EventSourceJSONEncoder, json_dumps, json_loads

__all__ = ["EventSourceJSONEncoder", "json_dumps", "json_loads"]
