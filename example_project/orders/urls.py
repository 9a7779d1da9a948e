from django.urls import path

from . import views

app_name = "orders"

urlpatterns = [
    path("", views.order_list, name="list"),
    path("orders/<uuid:order_id>/", views.order_history, name="history"),
]
