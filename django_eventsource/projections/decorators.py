"""The ``@handles`` decorator and its helpers, where the eventsource guide keeps them.

They live in :mod:`django_eventsource.events.handlers`, shared by aggregates and projections.
"""

from ..events.handlers import (
    get_handled_event_type,
    get_handled_event_types,
    handles,
    is_event_handler,
)

__all__ = ["get_handled_event_type", "get_handled_event_types", "handles", "is_event_handler"]
