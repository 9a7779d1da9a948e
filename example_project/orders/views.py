"""Pages of the orders example: the order list (read model), a form placing an order,
and one order's history (its events, as JSON)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from django import forms
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from django_eventsource import AggregateRepository, DjangoEventStore, event_context
from django_eventsource.projections.runner import run_projections

from .domain import Order
from .models import InventoryReservation, OrderSummary, Product

#: What the order form sells: SKU → (name, unit price). The demo command uses the same.
PRICES = {
    "BEANS-1KG": ("Coffee beans, 1 kg", Decimal("18.50")),
    "GRINDER": ("Hand grinder", Decimal("45.00")),
    "MUG": ("Stoneware mug", Decimal("9.90")),
    "FILTERS": ("Paper filters x100", Decimal("4.20")),
    "KETTLE": ("Gooseneck kettle", Decimal("39.00")),
}


class OrderForm(forms.Form):
    customer = forms.CharField(max_length=200, initial="Ada")
    sku = forms.ChoiceField(
        label="Product",
        choices=[(sku, f"{name} ({price})") for sku, (name, price) in PRICES.items()],
    )
    quantity = forms.IntegerField(min_value=1, max_value=99, initial=1)


def order_list(request: HttpRequest) -> HttpResponse:
    """Orders as the projection sees them (eventually consistent with the store)."""
    orders = OrderSummary.objects.all()[:200]
    return render(request, "orders/order_list.html", {"orders": orders, "form": OrderForm()})


def place_order(request: HttpRequest) -> HttpResponse:
    """Save a new order as events (``OrderCreated``, ``OrderLineAdded``), then show it."""
    form = OrderForm(request.POST or None)
    if request.method != "POST" or not form.is_valid():
        status = 400 if request.method == "POST" else 200
        return render(request, "orders/place_order.html", {"form": form}, status=status)
    sku = form.cleaned_data["sku"]
    # The summary projection names the items from the catalogue.
    Product.objects.get_or_create(sku=sku, defaults={"name": PRICES[sku][0]})
    repository = AggregateRepository(DjangoEventStore(), Order)
    with event_context(actor_id="web"):
        order = repository.create_new(uuid4())
        order.create(customer=form.cleaned_data["customer"])
        order.add_line(sku, quantity=form.cleaned_data["quantity"], unit_price=PRICES[sku][1])
        repository.save(order)
    return HttpResponseRedirect(reverse("orders:history", args=[order.aggregate_id]))


@require_POST
def catch_up(request: HttpRequest, order_id: UUID) -> HttpResponse:
    """Run the projections once (what ``manage.py run_projections --once`` does)."""
    run_projections(once=True)
    return HttpResponseRedirect(reverse("orders:history", args=[order_id]))


def _events(order_id: UUID) -> list[dict[str, Any]]:
    stream = DjangoEventStore().get_events(order_id, "Order")
    if stream.is_empty:
        raise Http404("No such order")
    return [event.to_dict() for event in stream.events]


def order_history(request: HttpRequest, order_id: UUID) -> HttpResponse:
    """Every stored event of one order, read from the event store, and its read model row."""
    events = _events(order_id)
    context = {
        "order_id": order_id,
        "summary": OrderSummary.objects.filter(order_id=order_id).first(),
        "events": [
            {
                "version": event["aggregate_version"],
                "type": event["event_type"],
                "occurred_at": event["occurred_at"],
                "json": json.dumps(event, indent=2, sort_keys=True, cls=DjangoJSONEncoder),
            }
            for event in events
        ],
        "reservations": InventoryReservation.objects.filter(order_id=order_id),
    }
    return render(request, "orders/order_history.html", context)


def order_events_json(request: HttpRequest, order_id: UUID) -> JsonResponse:
    """One order's events as JSON, as the store keeps them (``DomainEvent.to_dict()``)."""
    return JsonResponse(
        {"order_id": str(order_id), "events": _events(order_id)}, encoder=DjangoJSONEncoder
    )
