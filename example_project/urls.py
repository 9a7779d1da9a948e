from django.contrib import admin
from django.urls import include, path

from django_eventsource.views import health

urlpatterns = [
    path("admin/", admin.site.urls),
    # JSON health report for monitoring; HTTP 503 when a threshold is crossed.
    path("eventsource/health/", health, name="eventsource-health"),
    path("", include("example_project.orders.urls")),
]
