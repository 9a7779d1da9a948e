"""The operator's admin in a real (headless) Chromium window 1,400 px wide.

Screenshots go to ``test-artifacts/`` at the repository root (kept out of git; CI keeps
the folder with the run). Needs Debian's ``chromium`` and ``chromium-driver``
(``scripts/install-browser.sh``); without them the tests are skipped, unless
``EVENTSOURCE_REQUIRE_SERVICES=1`` (CI), where their absence fails them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from django_eventsource import DjangoEventStore
from django_eventsource.models import EventRecord, OutboxMessage
from tests.browser import ARTIFACTS, WAIT_SECONDS, WIDTH
from tests.factories import account_history
from tests.test_admin import outbox_row

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def operator(browser: Any, live_server: Any, settings: Any) -> Any:
    """The browser, logged in to the admin as a superuser."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EVENTSOURCE_PROJECTIONS = []
    password = uuid4().hex
    User.objects.create_superuser("operator", "ops@example.com", password)
    browser.get(live_server.url + reverse("admin:login"))
    wait = WebDriverWait(browser, WAIT_SECONDS)
    wait.until(ec.presence_of_element_located((By.ID, "id_username"))).send_keys("operator")
    browser.find_element(By.ID, "id_password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    wait.until(ec.presence_of_element_located((By.ID, "site-name")))
    browser.live_url = live_server.url
    return browser


def open_page(browser: Any, path: str, until_css: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(browser.live_url + path)
    return WebDriverWait(browser, WAIT_SECONDS).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, until_css))
    )


def wait_for(browser: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT_SECONDS).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def screenshot(browser: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    suffix = "" if name.startswith("admin-dashboard") else f"-{django_settings.DB_BACKEND}"
    browser.save_screenshot(str(ARTIFACTS / f"{name}{suffix}.png"))


def page_overflow(browser: Any) -> int:
    """How many pixels the page is wider than the window (0: no horizontal scrollbar)."""
    return int(
        browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
    )


def test_the_outbox_detail_page_retries_a_failed_message(operator: Any) -> None:
    row = outbox_row(
        OutboxMessage.Status.FAILED,
        retry_count=12,
        last_error="ConnectionError: Error 111 connecting to redis:6379. Connection refused.",
    )

    title = open_page(
        operator, reverse("admin:django_eventsource_outboxmessage_change", args=[row.pk]), "h1"
    )
    assert title.text == "View outbox message"
    operator.find_element("id", "eventsource-retry").click()

    message = wait_for(operator, ".messagelist .success")
    assert "1 message will be published on the next relay pass." in message.text
    screenshot(operator, "admin-outbox-retry")
    row.refresh_from_db()
    assert (row.status, row.retry_count) == ("pending", 0)
    # A pending row waits for the relay: no delete button, and the page says why.
    assert not operator.find_elements("css selector", ".deletelink")
    assert "cannot be deleted here" in operator.find_element("css selector", "#content").text


def test_a_long_payload_and_traceback_wrap_inside_the_page(operator: Any) -> None:
    long_word = "x" * 1500  # a 1,500-character line without spaces: only wrapping fits it
    history = account_history(deposits=1)
    DjangoEventStore().append_events(history[0].aggregate_id, "Account", history, 0)
    event = EventRecord.objects.get(event_id=history[1].event_id)
    EventRecord.objects.filter(pk=event.pk).update(payload={"amount": "1", "note": long_word})
    traceback = "Traceback (most recent call last):\n" + "  File " + "/very/long/path" * 120
    row = OutboxMessage.objects.create(
        event_id=uuid4(),
        event_type="MoneyDeposited",
        aggregate_id=uuid4(),
        aggregate_type="Account",
        event_data={"payload": long_word},
        status=OutboxMessage.Status.FAILED,
        last_error=traceback,
    )

    for name, path in (
        (
            "admin-event-long-payload",
            reverse("admin:django_eventsource_eventrecord_change", args=[event.pk]),
        ),
        (
            "admin-outbox-long-traceback",
            reverse("admin:django_eventsource_outboxmessage_change", args=[row.pk]),
        ),
    ):
        open_page(operator, path, "pre.eventsource-pre")
        blocks = operator.find_elements("css selector", "pre.eventsource-pre")
        assert blocks
        for pre in blocks:
            sizes = operator.execute_script(
                """
                const pre = arguments[0];
                const row = pre.closest('.form-row');
                const box = pre.getBoundingClientRect();
                const rowBox = row.getBoundingClientRect();
                return {scroll: pre.scrollWidth, client: pre.clientWidth,
                        right: box.right, rowRight: rowBox.right, width: box.width,
                        window: document.documentElement.clientWidth};
                """,
                pre,
            )
            # Wrapped: nothing wider than the block itself, and the block ends inside
            # its row (the row's overflow: hidden would cut anything beyond).
            assert sizes["scroll"] <= sizes["client"] + 1, (name, sizes)
            assert sizes["right"] <= sizes["rowRight"] + 1, (name, sizes)
            assert sizes["width"] > 300, (name, sizes)
        assert page_overflow(operator) == 0
        operator.execute_script("arguments[0].scrollIntoView()", blocks[-1])
        screenshot(operator, name)
    body = operator.find_element("css selector", "pre.eventsource-text").text
    assert "/very/long/path" in body


def test_the_events_list_fits_a_1400px_window(operator: Any) -> None:
    for tenant in (uuid4(), None):
        history = account_history(deposits=3, tenant_id=tenant)
        DjangoEventStore().append_events(history[0].aggregate_id, "Account", history, 0)

    open_page(operator, reverse("admin:django_eventsource_eventrecord_changelist"), "#result_list")
    screenshot(operator, "admin-events-list-1400px")

    assert operator.execute_script("return window.innerWidth") == WIDTH
    assert page_overflow(operator) == 0
    # The list's own box scrolls sideways when the table is wider than the page has room.
    widths = operator.execute_script(
        """
        const results = document.querySelector('.results');
        const table = document.querySelector('#result_list').getBoundingClientRect();
        return {scroll: results.scrollWidth, client: results.clientWidth,
                tableRight: table.right, boxRight: results.getBoundingClientRect().right};
        """
    )
    assert widths["scroll"] <= widths["client"], widths
    assert widths["tableRight"] <= widths["boxRight"] + 1, widths
    short = operator.find_element("css selector", "td.field-aggregate .eventsource-id")
    assert len(short.get_attribute("title")) == 36  # the full UUID on hover
    assert short.text.endswith("…")


def _load_events(count: int) -> list[int]:
    """``count`` events in streams of ten, written in bulk; their positions, oldest first."""
    now = timezone.now()
    rows = []
    for index in range(count):
        if index % 10 == 0:
            aggregate = uuid4()
        rows.append(
            EventRecord(
                event_id=uuid4(),
                aggregate_type="Account",
                aggregate_id=aggregate,
                aggregate_version=index % 10 + 1,
                event_type="MoneyDeposited",
                correlation_id=uuid4(),
                occurred_at=now - timedelta(seconds=count - index),
                payload={"amount": str(index)},
            )
        )
    EventRecord.objects.bulk_create(rows, batch_size=2000)
    return list(EventRecord.objects.order_by("position").values_list("position", flat=True))


def test_paging_reaches_events_older_than_the_newest_10000(operator: Any) -> None:
    positions = _load_events(10_050)
    target = positions[150]  # 9,899 events are newer than this one, 150 older

    open_page(operator, reverse("admin:django_eventsource_eventrecord_changelist"), "#result_list")
    field = operator.find_element("id", "eventsource-position")
    field.send_keys(str(target))
    operator.find_element("css selector", "#eventsource-jump [type=submit]").click()
    wait_for(operator, ".eventsource-pager .newer")

    listed = [
        int(cell.text)
        for cell in operator.find_elements("css selector", "#result_list th.field-event_position")
    ]
    assert listed == positions[150:50:-1]
    screenshot(operator, "admin-events-deep-position")

    operator.find_element("css selector", ".eventsource-pager .oldest").click()
    wait_for(operator, ".eventsource-pager .newer")
    listed = [
        int(cell.text)
        for cell in operator.find_elements("css selector", "#result_list th.field-event_position")
    ]
    assert listed == positions[99::-1]  # the 100 oldest, newest first
    assert not operator.find_elements("css selector", ".eventsource-pager .older")

    operator.find_element("css selector", ".eventsource-pager .newer").click()
    wait_for(operator, ".eventsource-pager .older")
    listed = [
        int(cell.text)
        for cell in operator.find_elements("css selector", "#result_list th.field-event_position")
    ]
    assert listed == positions[199:99:-1]
    screenshot(operator, "admin-events-deep-newer")


def test_the_dashboard_shows_where_everything_stands(operator: Any, settings: Any) -> None:
    settings.EVENTSOURCE_PROJECTIONS = ["tests.testapp.projections.AccountSummaryProjection"]
    history = account_history(deposits=2)
    DjangoEventStore().append_events(history[0].aggregate_id, "Account", history, 0)
    failed = OutboxMessage.objects.create(
        event_id=uuid4(),
        event_type="MoneyDeposited",
        aggregate_id=uuid4(),
        aggregate_type="Account",
        status=OutboxMessage.Status.FAILED,
        last_error="boom",
    )

    open_page(operator, reverse("admin:app_list", args=["django_eventsource"]), "#content")
    operator.find_element("css selector", ".eventsource-dashboard-link a").click()
    row = wait_for(operator, 'tr[data-projection="AccountSummaryProjection"]')

    assert "never ran" in row.text
    assert row.find_element("css selector", "td.status").text in ("running", "behind")
    outbox = operator.find_element("id", "eventsource-outbox")
    assert "failed" in outbox.text
    assert page_overflow(operator) == 0
    screenshot(operator, "admin-dashboard")

    outbox.find_element("css selector", 'a[href$="status__exact=failed"]').click()
    wait_for(operator, "#result_list")
    assert str(failed.pk) in operator.find_element("css selector", "#result_list tbody").text
