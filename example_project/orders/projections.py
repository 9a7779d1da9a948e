"""The orders read models: ``OrderSummary`` (a batch projection, run by the runner) and
``DailyOrderStats`` (an inline projection, written in the transaction of each save)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import F

from django_eventsource import BatchProjection, DeclarativeProjection, DomainEvent, handles

from .domain import OrderCancelled, OrderCreated, OrderLineAdded, OrderShipped
from .models import DailyOrderStats, OrderSummary, Product


class UnknownProductError(LookupError):
    """An order line names a SKU that is not (yet) in the catalogue."""


class OrderSummaryProjection(BatchProjection):
    """Keeps one ``OrderSummary`` row per order, a page of events at a time.

    Run by ``run_projections`` (listed in ``EVENTSOURCE_PROJECTIONS``). ``handle_batch``
    reads the page's orders and products once, folds the events into the rows in memory
    and writes them back with one multi-row upsert; the runner commits that together
    with the checkpoint, so each event counts exactly once.

    A line whose SKU is missing from the catalogue raises ``UnknownProductError``: the
    runner narrows the page down to that event, which becomes a dead letter after its
    retries, while the rest of the page is applied. ``retry_dead_letters`` applies it
    once the product exists.
    """

    def subscribed_to(self) -> list[type[DomainEvent]]:
        return [OrderCreated, OrderLineAdded, OrderShipped, OrderCancelled]

    def handle_batch(self, events: list[DomainEvent]) -> None:
        order_ids = {event.aggregate_id for event in events}
        rows = {row.order_id: row for row in OrderSummary.objects.filter(order_id__in=order_ids)}
        skus = {event.sku for event in events if isinstance(event, OrderLineAdded)}
        names = dict(Product.objects.filter(sku__in=skus).values_list("sku", "name"))
        for event in events:
            if isinstance(event, OrderCreated):
                rows[event.aggregate_id] = OrderSummary(
                    order_id=event.aggregate_id,
                    customer=event.customer,
                    status="created",
                    line_count=0,
                    total=Decimal("0"),
                    items="",
                    updated_at=event.occurred_at,
                )
                continue
            row = rows.get(event.aggregate_id)
            if isinstance(event, OrderLineAdded):
                self._add_line(row, event, names)
            elif row is not None:
                row.status = "shipped" if isinstance(event, OrderShipped) else "cancelled"
                row.updated_at = event.occurred_at
        OrderSummary.objects.bulk_create(
            list(rows.values()),
            update_conflicts=True,
            unique_fields=["order_id"],
            update_fields=["customer", "status", "line_count", "total", "items", "updated_at"],
        )

    @staticmethod
    def _add_line(row: OrderSummary | None, event: OrderLineAdded, names: dict[str, str]) -> None:
        name = names.get(event.sku)
        if name is None:
            raise UnknownProductError(f"No product with SKU {event.sku!r} in the catalogue")
        if row is None:
            raise OrderSummary.DoesNotExist(f"No summary for order {event.aggregate_id}")
        item = f"{event.quantity} x {name}"
        row.items = f"{row.items}, {item}" if row.items else item
        row.line_count += 1
        row.total += event.unit_price * event.quantity
        row.updated_at = event.occurred_at

    def reset(self) -> None:
        """Forget every summary; ``reset_projection --rebuild`` then replays all events."""
        OrderSummary.objects.all().delete()


class DailyOrderStatsProjection(DeclarativeProjection):
    """Counts orders created, shipped and cancelled per day, in the saving transaction.

    ``inline = True``: ``AggregateRepository.save`` applies it before it returns, so a
    page rendered right after a save already counts that save. If a handler raised, the
    save would fail and store nothing. Events the inline path leaves behind (a rebuild,
    events appended while the runner was behind) are applied by ``run_projections``.
    """

    inline = True

    @handles(OrderCreated)
    def on_created(self, event: OrderCreated) -> None:
        self._count(event, created=F("created") + 1)

    @handles(OrderShipped)
    def on_shipped(self, event: OrderShipped) -> None:
        self._count(event, shipped=F("shipped") + 1)

    @handles(OrderCancelled)
    def on_cancelled(self, event: OrderCancelled) -> None:
        self._count(event, cancelled=F("cancelled") + 1)

    def reset(self) -> None:
        DailyOrderStats.objects.all().delete()

    @staticmethod
    def _count(event: DomainEvent, **increments: Any) -> None:
        day = event.occurred_at.date()
        DailyOrderStats.objects.get_or_create(day=day)
        DailyOrderStats.objects.filter(day=day).update(**increments)
