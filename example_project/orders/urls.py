from django.urls import path

from . import views

app_name = "orders"

urlpatterns = [
    path("", views.order_list, name="list"),
    path("orders/new/", views.place_order, name="place"),
    path("orders/<uuid:order_id>/", views.order_history, name="history"),
    path("orders/<uuid:order_id>/events.json", views.order_events_json, name="events_json"),
    path("orders/<uuid:order_id>/catch-up/", views.catch_up, name="catch_up"),
]
