from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "example_project.orders"
    label = "orders"
    verbose_name = "Orders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Importing the domain registers the event classes.
        from . import domain  # noqa: F401
        from .reactions import register_reactions

        register_reactions()
