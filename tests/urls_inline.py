"""A view that saves an aggregate and reads an inline projection's row in the same request."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from django.http import HttpRequest, JsonResponse
from django.urls import path

from django_eventsource import AggregateRepository, DjangoEventStore
from tests.testapp.domain import Account
from tests.testapp.models import AccountSummary


def deposit(request: HttpRequest, account_id: UUID) -> JsonResponse:
    repository = AggregateRepository(DjangoEventStore(), Account)
    account = repository.load(account_id)
    account.deposit(Decimal(request.POST["amount"]))
    repository.save(account)
    row = AccountSummary.objects.get(account_id=account_id)
    return JsonResponse({"balance": str(row.balance), "events_seen": row.events_seen})


urlpatterns = [path("accounts/<uuid:account_id>/deposit", deposit)]
