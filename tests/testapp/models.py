"""Read models used by the test projections (no migrations: created by syncdb in tests)."""

from django.db import models


class AccountSummary(models.Model):
    """Read model of ``tests.testapp.projections.AccountSummaryProjection``."""

    account_id = models.UUIDField(primary_key=True)
    owner = models.CharField(max_length=255, blank=True, default="")
    balance = models.DecimalField(max_digits=20, decimal_places=2, default=0)
    events_seen = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.owner or self.account_id}: {self.balance}"


class HandledEvent(models.Model):
    """One row per event a test projection handled: duplicates show up as repeated ids."""

    projection = models.CharField(max_length=255)
    event_id = models.UUIDField()
    position = models.BigIntegerField(null=True)
    causation_id = models.UUIDField(null=True)
    correlation_id = models.UUIDField(null=True)

    def __str__(self) -> str:
        return f"{self.projection}: {self.event_id}"


class AccountActivity(models.Model):
    """One summary row per account: events seen, running total, last seen (benchmarks)."""

    account_id = models.UUIDField(primary_key=True)
    events = models.PositiveIntegerField(default=0)
    total = models.DecimalField(max_digits=20, decimal_places=2, default=0)
    last_seen = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"{self.account_id}: {self.events} events, {self.total}"
