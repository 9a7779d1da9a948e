"""Read models and reaction tables of the orders example.

Nothing here is the source of truth: ``OrderSummary`` is rebuilt from the events by
``OrderSummaryProjection`` (a batch projection), ``DailyOrderStats`` by
``DailyOrderStatsProjection`` (an inline one) and ``InventoryReservation`` is written by
a bus handler when the outbox relay publishes order events.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.utils.translation import gettext_lazy as _


class Product(models.Model):
    """Catalogue entry; the summary projection looks products up to name the items."""

    sku = models.CharField(_("SKU"), max_length=64, unique=True)
    name = models.CharField(_("name"), max_length=200)

    class Meta:
        verbose_name = _("product")
        verbose_name_plural = _("products")
        ordering = ["sku"]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"


class OrderSummary(models.Model):
    """One row per order, kept up to date by ``OrderSummaryProjection``."""

    order_id = models.UUIDField(_("order id"), unique=True)
    customer = models.CharField(_("customer"), max_length=200)
    status = models.CharField(_("status"), max_length=20)
    line_count = models.PositiveIntegerField(_("lines"), default=0)
    total = models.DecimalField(_("total"), max_digits=12, decimal_places=2, default=Decimal("0"))
    items = models.TextField(_("items"), blank=True, default="")
    updated_at = models.DateTimeField(_("updated at"))

    class Meta:
        verbose_name = _("order summary")
        verbose_name_plural = _("order summaries")
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["status"], name="orders_summary_status_idx")]

    def __str__(self) -> str:
        return f"{self.order_id} {self.customer} ({self.status})"


class DailyOrderStats(models.Model):
    """Orders created, shipped and cancelled per day; kept by ``DailyOrderStatsProjection``."""

    day = models.DateField(_("day"), unique=True)
    created = models.PositiveIntegerField(_("created"), default=0)
    shipped = models.PositiveIntegerField(_("shipped"), default=0)
    cancelled = models.PositiveIntegerField(_("cancelled"), default=0)

    class Meta:
        verbose_name = _("daily order statistics")
        verbose_name_plural = _("daily order statistics")
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"{self.day}: {self.created} created, {self.shipped} shipped"


class InventoryReservation(models.Model):
    """Stock held for an order line; written by the bus reaction to ``OrderLineAdded``.

    Delivery through the bus is at-least-once, so the event id is the idempotency key.
    """

    event_id = models.UUIDField(_("event id"), unique=True)
    order_id = models.UUIDField(_("order id"), db_index=True)
    sku = models.CharField(_("SKU"), max_length=64)
    quantity = models.PositiveIntegerField(_("quantity"))
    released = models.BooleanField(_("released"), default=False)
    reserved_at = models.DateTimeField(_("reserved at"), auto_now_add=True)

    class Meta:
        verbose_name = _("inventory reservation")
        verbose_name_plural = _("inventory reservations")
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku} for {self.order_id}"
