"""Pages of the orders example: the order list (read model) and one order's history (events)."""

from __future__ import annotations

from uuid import UUID

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from django_eventsource import DjangoEventStore

from .models import InventoryReservation, OrderSummary


def order_list(request: HttpRequest) -> HttpResponse:
    """Orders as the projection sees them (eventually consistent with the store)."""
    orders = OrderSummary.objects.all()[:200]
    return render(request, "orders/order_list.html", {"orders": orders})


def order_history(request: HttpRequest, order_id: UUID) -> HttpResponse:
    """Every stored event of one order, read from the event store."""
    stream = DjangoEventStore().get_events(order_id, "Order")
    if stream.is_empty:
        raise Http404("No such order")
    context = {
        "order_id": order_id,
        "summary": OrderSummary.objects.filter(order_id=order_id).first(),
        "events": [
            {
                "version": event.aggregate_version,
                "type": event.event_type,
                "occurred_at": event.occurred_at,
                "data": event.payload(),
            }
            for event in stream.events
        ],
        "reservations": InventoryReservation.objects.filter(order_id=order_id),
    }
    return render(request, "orders/order_history.html", context)
