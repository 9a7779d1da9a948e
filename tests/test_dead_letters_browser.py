"""An operator repairs a sequence of dead letters from the admin, in a real (headless) browser.

Opens the dead letter, sees the events parked behind it, retries it after the fix and
sees the whole sequence resolved. Needs Debian's ``chromium`` and ``chromium-driver``
(see ``tests/browser.py``).
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from django_eventsource import DjangoEventStore
from django_eventsource.models import DeadLetter
from django_eventsource.projections.runner import run_projections
from tests.browser import ARTIFACTS, WAIT_SECONDS
from tests.factories import account_history
from tests.test_admin_browser import DepositLedger

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def failed_sequence(settings: Any) -> DeadLetter:
    settings.EVENTSOURCE_PROJECTIONS = ["tests.test_admin_browser.DepositLedger"]
    settings.EVENTSOURCE_MAX_RETRIES = 1
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    DepositLedger.broken = True
    DepositLedger.handled = []
    history = account_history(deposits=3)
    DjangoEventStore().append_events(history[0].aggregate_id, "Account", history, 0)

    summary = run_projections(once=True)

    assert (summary.dead_lettered, summary.parked) == (1, 2)
    return DeadLetter.objects.get(parked=False)


def test_an_operator_sees_the_parked_events_and_retries_the_whole_sequence(
    browser: Any, live_server: Any, failed_sequence: DeadLetter
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_SECONDS)
    password = uuid4().hex
    User.objects.create_superuser("operator", "ops@example.com", password)

    listing = live_server.url + reverse("admin:django_eventsource_deadletter_changelist")
    browser.get(listing + "?parked__exact=0")
    wait.until(ec.presence_of_element_located((By.ID, "id_username"))).send_keys("operator")
    browser.find_element(By.ID, "id_password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()

    row = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#result_list tbody tr")))
    assert "2 waiting" in row.text
    assert "RuntimeError: ledger column 'amount' is missing" in row.text
    row.find_element(By.CSS_SELECTOR, "th a, td a").click()

    wait.until(ec.title_contains("View dead letter"))
    summary = browser.find_element(By.CSS_SELECTOR, ".eventsource-sequence-summary")
    assert "2 events wait behind the head" in summary.text
    states = [
        cell.text
        for cell in browser.find_elements(
            By.CSS_SELECTOR, ".eventsource-sequence tbody td:last-child"
        )
    ]
    assert states == ["head: failed", "parked", "parked"]

    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "admin-dead-letter-sequence.png"))
    DepositLedger.broken = False  # the fix is deployed
    browser.find_element(By.CSS_SELECTOR, "button[name=retry]").click()

    success = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".messagelist .success")))
    assert "3 dead letters handled and resolved" in success.text
    fields = browser.find_element(By.CSS_SELECTOR, "#content-main").text
    assert "No event waits behind this dead letter." in fields
    assert not browser.find_elements(By.CSS_SELECTOR, "button[name=retry]")

    browser.save_screenshot(str(ARTIFACTS / "admin-dead-letter-sequence-retry.png"))
    assert not DeadLetter.objects.open().exists()
    assert DepositLedger.handled == [
        str(letter.event_id) for letter in DeadLetter.objects.order_by("global_position")
    ]
