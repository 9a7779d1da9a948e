"""The orders domain: events and the Order aggregate."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from pydantic import BaseModel

from django_eventsource import DeclarativeAggregate, DomainEvent, handles, register_event


@register_event
class OrderCreated(DomainEvent):
    aggregate_type: str = "Order"
    customer: str


@register_event
class OrderLineAdded(DomainEvent):
    aggregate_type: str = "Order"
    sku: str
    quantity: int
    unit_price: Decimal


@register_event
class OrderShipped(DomainEvent):
    aggregate_type: str = "Order"
    tracking_number: str


@register_event
class OrderCancelled(DomainEvent):
    aggregate_type: str = "Order"
    reason: str = ""


class OrderLine(BaseModel):
    sku: str
    quantity: int
    unit_price: Decimal


class OrderState(BaseModel):
    order_id: UUID
    customer: str = ""
    status: str = "new"
    lines: list[OrderLine] = []
    tracking_number: str = ""

    @property
    def total(self) -> Decimal:
        return sum((line.unit_price * line.quantity for line in self.lines), Decimal("0"))


class OrderError(ValueError):
    """A command was refused by the Order aggregate."""


class Order(DeclarativeAggregate[OrderState]):
    aggregate_type = "Order"

    def _get_initial_state(self) -> OrderState:
        return OrderState(order_id=self.aggregate_id)

    # -- commands ------------------------------------------------------------------------

    def create(self, customer: str) -> None:
        if self.version:
            raise OrderError("order already exists")
        self.raise_event(OrderCreated, customer=customer)

    def add_line(self, sku: str, quantity: int, unit_price: Decimal) -> None:
        if self.state.status != "created":
            raise OrderError(f"cannot add lines to a {self.state.status} order")
        if quantity < 1:
            raise OrderError("quantity must be at least 1")
        self.raise_event(OrderLineAdded, sku=sku, quantity=quantity, unit_price=unit_price)

    def ship(self, tracking_number: str) -> None:
        if self.state.status != "created" or not self.state.lines:
            raise OrderError("only a created order with lines can be shipped")
        self.raise_event(OrderShipped, tracking_number=tracking_number)

    def cancel(self, reason: str = "") -> None:
        if self.state.status in ("shipped", "cancelled"):
            raise OrderError(f"cannot cancel a {self.state.status} order")
        self.raise_event(OrderCancelled, reason=reason)

    # -- event handlers ------------------------------------------------------------------

    @handles(OrderCreated)
    def _on_created(self, event: OrderCreated) -> None:
        self._state = self._state.model_copy(
            update={"customer": event.customer, "status": "created"}
        )

    @handles(OrderLineAdded)
    def _on_line_added(self, event: OrderLineAdded) -> None:
        line = OrderLine(sku=event.sku, quantity=event.quantity, unit_price=event.unit_price)
        self._state = self._state.model_copy(update={"lines": [*self._state.lines, line]})

    @handles(OrderShipped)
    def _on_shipped(self, event: OrderShipped) -> None:
        self._state = self._state.model_copy(
            update={"status": "shipped", "tracking_number": event.tracking_number}
        )

    @handles(OrderCancelled)
    def _on_cancelled(self, event: OrderCancelled) -> None:
        self._state = self._state.model_copy(update={"status": "cancelled"})
