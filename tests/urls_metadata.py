"""Views that open an account, used to test ``EventMetadataMiddleware``."""

from __future__ import annotations

from uuid import uuid4

from django.http import HttpRequest, JsonResponse
from django.urls import path

from django_eventsource import AggregateRepository, DjangoEventStore
from tests.testapp.domain import Account


def _repository() -> AggregateRepository[Account]:
    return AggregateRepository(DjangoEventStore(), Account)


def open_account(request: HttpRequest) -> JsonResponse:
    account = _repository().create_new(uuid4())
    account.open("ada")
    _repository().save(account)
    return JsonResponse({"account_id": str(account.aggregate_id)})


async def open_account_async(request: HttpRequest) -> JsonResponse:
    account = _repository().create_new(uuid4())
    account.open("ada")
    await _repository().asave(account)
    return JsonResponse({"account_id": str(account.aggregate_id)})


urlpatterns = [
    path("accounts/", open_account),
    path("accounts/async/", open_account_async),
]
