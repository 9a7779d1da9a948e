"""The example project works as documented: ``manage.py demo`` runs the whole flow and the
pages render. Each test runs the project in subprocesses on its own database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

# Each test runs the project's commands in subprocesses: seconds, not milliseconds.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def manage(*args: str, env: dict[str, str]) -> str:
    completed = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    command = " ".join(args)
    assert completed.returncode == 0, f"{command}:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout


def example_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))}
    env.update(DJANGO_SETTINGS_MODULE="example_project.settings", **extra)
    env.pop("REDIS_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    return env


@pytest.fixture(scope="module")
def sqlite_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if settings.DB_BACKEND == "postgres":
        # The example runs on its own database; test_demo_runs_on_postgresql covers this run.
        pytest.skip("the example project's SQLite tests run in the SQLite suite")
    env = example_env(EXAMPLE_SQLITE_PATH=str(tmp_path_factory.mktemp("example") / "db.sqlite3"))
    manage("migrate", "--no-input", "-v", "0", env=env)
    return env


@pytest.fixture(scope="module")
def demo_output(sqlite_env: dict[str, str]) -> str:
    return manage("demo", "--orders", "6", "--seed", "7", env=sqlite_env)


def test_demo_creates_the_requested_orders(demo_output: str) -> None:
    assert "orders created: 6 (" in demo_output


def test_demo_shows_one_order_reloaded_with_its_events(demo_output: str) -> None:
    assert "One order, reloaded from its events" in demo_output
    assert "v1 OrderCreated" in demo_output
    assert "v2 OrderLineAdded" in demo_output


def test_demo_catches_the_projection_up(demo_output: str) -> None:
    assert "projection caught up: 6/6 orders of this run in OrderSummary" in demo_output


def test_demo_publishes_the_outbox_and_the_reaction_reserves_inventory(demo_output: str) -> None:
    published = next(line for line in demo_output.splitlines() if "outbox published:" in line)
    count, _, pending = published.split("outbox published: ")[1].partition(" of ")
    assert int(count) > 0
    assert pending.startswith(f"{count} pending")
    reaction = next(line for line in demo_output.splitlines() if "inventory reservations" in line)
    assert int(reaction.split("reaction: ")[1].split()[0]) >= 6


def test_demo_produces_a_dead_letter_and_resolves_it_by_retrying(demo_output: str) -> None:
    assert "1 event dead-lettered" in demo_output
    assert "UnknownProductError" in demo_output
    assert "dead letter retried: 1 resolved, 0 still failing" in demo_output
    assert "1 line (1 x Limited edition roast), total 99.00" in demo_output


def test_demo_can_run_again_on_the_same_database(
    demo_output: str, sqlite_env: dict[str, str]
) -> None:
    again = manage("demo", "--orders", "2", env=sqlite_env)
    assert "projection caught up: 2/2 orders of this run" in again
    assert "dead letter retried: 1 resolved, 0 still failing" in again


PAGES_SCRIPT = """
import django
django.setup()
from django.contrib.auth.models import User
from django.test import Client
from example_project.orders.models import OrderSummary
client = Client()
order = OrderSummary.objects.exclude(line_count=0).first()
for url in ("/", f"/orders/{order.order_id}/", "/orders/00000000-0000-0000-0000-000000000000/"):
    response = client.get(url)
    print(url, response.status_code, response.content.decode().count("<tr>"))
admin_user, _ = User.objects.get_or_create(
    username="pages-test", defaults={"is_staff": True, "is_superuser": True}
)
client.force_login(admin_user)
for url in ("/admin/orders/ordersummary/", "/admin/orders/inventoryreservation/",
            "/admin/orders/product/", "/admin/django_eventsource/eventrecord/"):
    print(url, client.get(url).status_code)
"""


def test_order_pages_render_from_the_read_model_and_the_store(
    demo_output: str, sqlite_env: dict[str, str]
) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", PAGES_SCRIPT],
        cwd=ROOT,
        env=sqlite_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    list_page, history_page, missing_page, *admin_pages = completed.stdout.splitlines()
    _, status, rows = list_page.split()
    assert status == "200" and int(rows) >= 7  # a header row plus one row per order
    _, status, rows = history_page.split()
    assert status == "200" and int(rows) >= 3  # a header row, OrderCreated, a line
    assert missing_page.split()[1] == "404"
    assert [page.split()[1] for page in admin_pages] == ["200"] * 4, admin_pages


@pytest.fixture
def postgres_database() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    name = f"example_{uuid.uuid4().hex[:12]}"
    base = {
        "host": os.environ.get("EVENTSOURCE_TEST_PG_HOST", "127.0.0.1"),
        "port": os.environ.get("EVENTSOURCE_TEST_PG_PORT", "5432"),
        "user": os.environ.get("EVENTSOURCE_TEST_PG_USER", "postgres"),
        "password": os.environ.get("EVENTSOURCE_TEST_PG_PASSWORD", ""),
    }
    try:
        admin = psycopg.connect(dbname="postgres", autocommit=True, connect_timeout=3, **base)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield (
                f"postgres://{base['user']}:{base['password']}@{base['host']}:{base['port']}/{name}"
            )
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_demo_runs_on_postgresql(postgres_database: str) -> None:
    env = example_env(DATABASE_URL=postgres_database)
    manage("migrate", "--no-input", "-v", "0", env=env)
    output = manage("demo", "--orders", "4", env=env)
    assert "database: postgresql" in output
    assert "projection caught up: 4/4 orders of this run in OrderSummary" in output
    assert "dead letter retried: 1 resolved, 0 still failing" in output
