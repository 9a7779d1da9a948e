"""Headless Chromium for the browser tests (the ``browser`` fixture of ``conftest``).

Needs Debian's ``chromium`` and ``chromium-driver`` (``scripts/install-browser.sh``).
Without them the tests are skipped, unless ``EVENTSOURCE_REQUIRE_SERVICES=1`` (CI),
where their absence fails them. Screenshots go to ``test-artifacts/`` at the repository
root (kept out of git; CI keeps the folder with the run).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
WAIT_SECONDS = 20
#: The window's width in CSS pixels (scrollbars hidden, so all of it is the page's).
WIDTH = 1400


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """A WebDriver of a fresh headless Chromium profile, quit on exit."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        message = f"{', '.join(missing)} missing: run scripts/install-browser.sh"
        if os.environ.get("EVENTSOURCE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="eventsource-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--window-size={WIDTH},1000",
            f"--user-data-dir={profile}",
        ):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        driver.implicitly_wait(0)
        try:
            yield driver
        finally:
            driver.quit()
