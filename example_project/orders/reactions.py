"""Reactions: work done when the outbox relay publishes order events to the bus.

Unlike a projection, a reaction has no checkpoint of its own: the bus delivers each event
at least once, so handlers use the event id as their idempotency key.

``OrdersConfig.ready()`` registers the handlers with ``django_eventsource.bus.consumers``.
With the Redis bus, ``consume_events`` runs them; with the in-process bus
(``EVENTSOURCE_EVENT_BUS = "memory"``, the default settings) they are subscribed to it, so
they run inside ``publish_outbox``.
"""

from __future__ import annotations

from django_eventsource import DomainEvent
from django_eventsource.bus.consumers import register_handler

from .domain import OrderCancelled, OrderLineAdded
from .models import InventoryReservation


def reserve_inventory(event: DomainEvent) -> None:
    """Hold stock for a new order line (once per event, however often it is delivered)."""
    if not isinstance(event, OrderLineAdded):
        return
    InventoryReservation.objects.get_or_create(
        event_id=event.event_id,
        defaults={"order_id": event.aggregate_id, "sku": event.sku, "quantity": event.quantity},
    )


def release_inventory(event: DomainEvent) -> None:
    """Give back the stock held for a cancelled order."""
    if not isinstance(event, OrderCancelled):
        return
    InventoryReservation.objects.filter(order_id=event.aggregate_id).update(released=True)


def register_reactions() -> None:
    """Register the handlers with the consumer registry (called once, from ``ready()``)."""
    register_handler(OrderLineAdded, reserve_inventory)
    register_handler(OrderCancelled, release_inventory)
