from typing import TYPE_CHECKING

from django.contrib import admin

from .models import InventoryReservation, OrderSummary, Product

if TYPE_CHECKING:
    _SummaryAdminBase = admin.ModelAdmin[OrderSummary]
    _ProductAdminBase = admin.ModelAdmin[Product]
    _ReservationAdminBase = admin.ModelAdmin[InventoryReservation]
else:  # ModelAdmin is generic only for the type checker
    _SummaryAdminBase = _ProductAdminBase = _ReservationAdminBase = admin.ModelAdmin


@admin.register(OrderSummary)
class OrderSummaryAdmin(_SummaryAdminBase):
    list_display = ("order_id", "customer", "status", "line_count", "total", "updated_at")
    list_filter = ("status",)
    search_fields = ("=order_id", "customer")


@admin.register(Product)
class ProductAdmin(_ProductAdminBase):
    list_display = ("sku", "name")
    search_fields = ("sku", "name")


@admin.register(InventoryReservation)
class InventoryReservationAdmin(_ReservationAdminBase):
    list_display = ("order_id", "sku", "quantity", "released", "reserved_at")
    list_filter = ("released",)
    search_fields = ("=order_id", "sku")
