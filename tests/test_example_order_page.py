"""The example project's pages as a visitor uses them: place an order, see its events as
JSON and the read model catch up; the health view answers. Runs the project in a
subprocess on its own SQLite database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import json, re
import django
django.setup()
from django.test import Client
from example_project.orders.models import OrderSummary

client = Client()
form = client.get("/orders/new/")
placed = client.post("/orders/new/", {"customer": "Grace", "sku": "MUG", "quantity": "3"})
order_page = client.get(placed["Location"])
before = order_page.content.decode()
order_id = placed["Location"].rstrip("/").rsplit("/", 1)[-1]
caught_up = client.post(f"/orders/{order_id}/catch-up/", follow=True).content.decode()
events = client.get(f"/orders/{order_id}/events.json").json()
health = client.get("/eventsource/health/")
bad = client.post("/orders/new/", {"customer": "", "sku": "MUG", "quantity": "0"})
print(json.dumps({
    "form": form.status_code,
    "placed": placed.status_code,
    "order_page": order_page.status_code,
    "json_block": '&quot;event_type&quot;: &quot;OrderLineAdded&quot;' in before,
    "read_model": re.search(r'<p id="read-model">(.*?)</p>', caught_up, re.S).group(1),
    "summary_rows": OrderSummary.objects.filter(order_id=order_id).count(),
    "event_types": [e["event_type"] for e in events["events"]],
    "payload": events["events"][1].get("quantity"),
    "health_status": health.status_code,
    "health_keys": sorted(health.json()),
    "bad": bad.status_code,
}))
"""


def test_placing_an_order_shows_its_events_as_json_and_the_read_model(tmp_path: Path) -> None:
    if settings.DB_BACKEND == "postgres":
        pytest.skip("the example project's SQLite tests run in the SQLite suite")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))}
    env.pop("REDIS_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        EXAMPLE_SQLITE_PATH=str(tmp_path / "db.sqlite3"),
    )

    def run(*args: str) -> str:
        completed = subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr
        return completed.stdout

    run("manage.py", "migrate", "--no-input", "-v", "0")
    result = json.loads(run("-c", SCRIPT).splitlines()[-1])

    assert (result["form"], result["placed"], result["order_page"]) == (200, 302, 200)
    assert result["json_block"]
    assert result["event_types"] == ["OrderCreated", "OrderLineAdded"]
    assert result["payload"] == 3
    assert result["summary_rows"] == 1
    assert "Grace" in result["read_model"] and "1 line" in result["read_model"]
    assert result["health_status"] in (200, 503)
    assert {"status", "projections", "outbox_pending"} <= set(result["health_keys"])
    assert result["bad"] == 400
