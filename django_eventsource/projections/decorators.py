"""The ``@handles`` decorator, where the eventsource guide keeps it.

It lives in :mod:`django_eventsource.events.handlers`, shared by aggregates and projections.
"""

from ..events.handlers import handles

__all__ = ["handles"]
