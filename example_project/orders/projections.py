"""``OrderSummaryProjection``: the ``OrderSummary`` read model, built from order events."""

from __future__ import annotations

from django.db.models import F

from django_eventsource import DeclarativeProjection, handles

from .domain import OrderCancelled, OrderCreated, OrderLineAdded, OrderShipped
from .models import OrderSummary, Product


class UnknownProductError(LookupError):
    """An order line names a SKU that is not (yet) in the catalogue."""


class OrderSummaryProjection(DeclarativeProjection):
    """Keeps one ``OrderSummary`` row per order.

    Run by ``run_projections`` (listed in ``EVENTSOURCE_PROJECTIONS``). Handlers write
    with the ORM; the runner commits them together with the checkpoint, so each event
    counts exactly once. A line whose SKU is missing from the catalogue raises
    ``UnknownProductError``: after the retries the event becomes a dead letter, and
    ``retry_dead_letters`` applies it once the product exists.
    """

    @handles(OrderCreated)
    def on_created(self, event: OrderCreated) -> None:
        OrderSummary.objects.update_or_create(
            order_id=event.aggregate_id,
            defaults={
                "customer": event.customer,
                "status": "created",
                "updated_at": event.occurred_at,
            },
        )

    @handles(OrderLineAdded)
    def on_line_added(self, event: OrderLineAdded) -> None:
        product = Product.objects.filter(sku=event.sku).first()
        if product is None:
            raise UnknownProductError(f"No product with SKU {event.sku!r} in the catalogue")
        summary = OrderSummary.objects.select_for_update().get(order_id=event.aggregate_id)
        item = f"{event.quantity} x {product.name}"
        summary.items = f"{summary.items}, {item}" if summary.items else item
        summary.line_count = F("line_count") + 1
        summary.total = F("total") + event.unit_price * event.quantity
        summary.updated_at = event.occurred_at
        summary.save(update_fields=["items", "line_count", "total", "updated_at"])

    @handles(OrderShipped)
    def on_shipped(self, event: OrderShipped) -> None:
        self._set_status(event, "shipped")

    @handles(OrderCancelled)
    def on_cancelled(self, event: OrderCancelled) -> None:
        self._set_status(event, "cancelled")

    def reset(self) -> None:
        """Forget every summary; ``reset_projection --rebuild`` then replays all events."""
        OrderSummary.objects.all().delete()

    @staticmethod
    def _set_status(event: OrderShipped | OrderCancelled, status: str) -> None:
        OrderSummary.objects.filter(order_id=event.aggregate_id).update(
            status=status, updated_at=event.occurred_at
        )
