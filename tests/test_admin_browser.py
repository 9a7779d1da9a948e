"""An operator repairs a failed projection from the admin, in a real (headless) browser.

Needs Debian's ``chromium`` and ``chromium-driver`` (``scripts/install-browser.sh``).
Without them the test is skipped, unless ``EVENTSOURCE_REQUIRE_SERVICES=1`` (CI), where
their absence fails it.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from django_eventsource import DeclarativeProjection, DjangoEventStore, handles
from django_eventsource.models import DeadLetter
from django_eventsource.projections.runner import run_projections
from tests.browser import ARTIFACTS, WAIT_SECONDS
from tests.factories import account_history
from tests.testapp.domain import MoneyDeposited

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


class DepositLedger(DeclarativeProjection):
    """Fails on deposits while ``broken`` is set: the bug the operator fixes."""

    broken = True
    handled: list[str] = []

    @handles(MoneyDeposited)
    def on_deposit(self, event: MoneyDeposited) -> None:
        if DepositLedger.broken:
            raise RuntimeError("ledger column 'amount' is missing")
        DepositLedger.handled.append(str(event.event_id))

    def reset(self) -> None:
        DepositLedger.handled.clear()


@pytest.fixture
def failed_deposit(settings: Any) -> DeadLetter:
    settings.EVENTSOURCE_PROJECTIONS = ["tests.test_admin_browser.DepositLedger"]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    DepositLedger.broken = True
    DepositLedger.handled = []
    history = account_history(deposits=1)
    DjangoEventStore().append_events(history[0].aggregate_id, "Account", history, 0)

    summary = run_projections(once=True)

    assert summary.dead_lettered == 1
    return DeadLetter.objects.get()


def test_an_operator_retries_a_dead_letter_after_fixing_its_cause(
    browser: Any, live_server: Any, failed_deposit: DeadLetter
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_SECONDS)
    password = uuid4().hex
    User.objects.create_superuser("operator", "ops@example.com", password)

    dead_letters = live_server.url + reverse("admin:django_eventsource_deadletter_changelist")
    browser.get(dead_letters)
    wait.until(ec.presence_of_element_located((By.ID, "id_username"))).send_keys("operator")
    browser.find_element(By.ID, "id_password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()

    row = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#result_list tbody tr")))
    assert "failed" in row.text
    assert "MoneyDeposited" in row.text

    DepositLedger.broken = False  # the fix is deployed
    row.find_element(By.CSS_SELECTOR, "input.action-select").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("retry_selected")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()

    success = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".messagelist .success")))
    assert "1 dead letter handled and resolved" in success.text
    row = browser.find_element(By.CSS_SELECTOR, "#result_list tbody tr")
    assert "resolved" in row.text

    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "admin-dead-letter-retry.png"))
    failed_deposit.refresh_from_db()
    assert failed_deposit.status == DeadLetter.Status.RESOLVED
    assert failed_deposit.resolved_by == "operator"
    assert DepositLedger.handled == [str(failed_deposit.event_id)]
