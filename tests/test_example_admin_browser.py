"""The example project's admin, served by ``runserver``, repairs a dead letter in a browser.

The example's order-summary projection dead-letters an order line whose SKU is not in the
catalogue. The operator logs in, sees the dead letter, the product is added (the fix), and
"Retry selected" resolves it. Chromium as in ``tests/browser.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from tests.browser import ARTIFACTS, WAIT_SECONDS

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SETUP = """
from decimal import Decimal
from uuid import UUID
from django.contrib.auth.models import User
from django_eventsource import AggregateRepository, DjangoEventStore
from django_eventsource.projections.runner import run_projections
from example_project.orders.domain import Order

User.objects.create_superuser("operator", "ops@example.com", "{password}")
repository = AggregateRepository(DjangoEventStore(), Order)
order = repository.create_new(UUID("{order_id}"))
order.create(customer="Grace")
order.add_line("{sku}", 2, Decimal("4.50"))
repository.save(order)
summary = run_projections(once=True)
assert summary.dead_lettered == 1, summary
"""

FIX = """
from example_project.orders.models import Product
Product.objects.create(sku="{sku}", name="Walnut desk")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True
    )


@pytest.fixture
def example_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}
    }
    env |= {
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "EXAMPLE_SQLITE_PATH": str(tmp_path / "example.sqlite3"),
        "DJANGO_DEBUG": "0",
    }
    facts = {"password": uuid4().hex, "order_id": str(uuid4()), "sku": f"DESK-{uuid4().hex[:6]}"}
    _manage(env, "migrate", "--no-input")
    _manage(env, "shell", "-c", SETUP.format(**facts))
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload", "--insecure"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the example project's server did not start") from None
                time.sleep(0.1)  # polling a port that is coming up, with a deadline
        yield f"http://127.0.0.1:{port}", env, facts
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_an_operator_retries_the_example_projects_dead_letter_in_its_admin(
    browser: Any,
    example_server: tuple[str, dict[str, str], dict[str, str]],
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    base_url, env, facts = example_server
    wait = WebDriverWait(browser, WAIT_SECONDS)

    browser.get(f"{base_url}/admin/django_eventsource/deadletter/")
    wait.until(ec.presence_of_element_located((By.ID, "id_username"))).send_keys("operator")
    browser.find_element(By.ID, "id_password").send_keys(facts["password"])
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()

    row = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#result_list tbody tr")))
    assert "failed" in row.text
    assert "OrderLineAdded" in row.text

    _manage(env, "shell", "-c", FIX.format(**facts))  # the missing product is added
    row.find_element(By.CSS_SELECTOR, "input.action-select").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("retry_selected")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()

    success = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".messagelist .success")))
    assert "1 dead letter handled and resolved" in success.text
    row = browser.find_element(By.CSS_SELECTOR, "#result_list tbody tr")
    assert "resolved" in row.text
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "example-admin-dead-letter-retry.png"))

    browser.get(f"{base_url}/admin/orders/ordersummary/")
    summary = wait.until(ec.presence_of_element_located((By.ID, "result_list")))
    assert "Grace" in summary.text
