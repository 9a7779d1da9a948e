"""The ``EventSubscriber`` protocol, where the eventsource guide keeps it.

It lives in :mod:`django_eventsource.events.handlers`.
"""

from ..events.handlers import EventSubscriber

__all__ = ["EventSubscriber"]
