"""``manage.py demo``: the whole event-sourcing flow of the orders example, end to end.

Each run creates new orders (new ids), so it can be repeated on the same database.
"""

from __future__ import annotations

import os
import random
import sys
import time
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from django_eventsource import (
    AggregateRepository,
    DjangoDLQRepository,
    DjangoEventStore,
    DjangoOutboxRepository,
    event_context,
)
from django_eventsource.bus import get_event_bus
from django_eventsource.conf import conf
from django_eventsource.models import OutboxMessage
from django_eventsource.outbox.relay import publish_outbox
from django_eventsource.projections.maintenance import retry_dead_letters
from django_eventsource.projections.runner import run_projections

from ...domain import Order
from ...models import InventoryReservation, OrderSummary, Product
from ...projections import OrderSummaryProjection

CATALOGUE = {
    "BEANS-1KG": ("Coffee beans, 1 kg", Decimal("18.50")),
    "GRINDER": ("Hand grinder", Decimal("45.00")),
    "MUG": ("Stoneware mug", Decimal("9.90")),
    "FILTERS": ("Paper filters x100", Decimal("4.20")),
    "KETTLE": ("Gooseneck kettle", Decimal("39.00")),
}
CUSTOMERS = ["Ada", "Grace", "Linus", "Guido", "Barbara", "Ken", "Margaret", "Dennis"]


class Command(BaseCommand):
    help = (
        "Run the orders example end to end: save orders as events, reload one, catch up "
        "the projections, publish the outbox to the bus, then produce and retry a dead letter."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--orders", type=int, default=20, help="Number of orders to create (default: 20)."
        )
        parser.add_argument(
            "--seed", type=int, default=None, help="Random seed, for a repeatable run."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        count: int = options["orders"]
        if count < 1:
            raise CommandError("--orders must be at least 1")
        self.verbosity = int(options["verbosity"])
        self.rng = random.Random(options["seed"])
        self.repository = AggregateRepository(DjangoEventStore(), Order)
        self.stdout.write(
            self.style.MIGRATE_HEADING(
                f"django-eventsource demo · database: {connection.vendor} · "
                f"bus: {type(get_event_bus()).__name__} · "
                f"outbox: {'on' if conf.OUTBOX_ENABLED else 'off'}"
            )
        )
        for sku, (name, _price) in CATALOGUE.items():
            Product.objects.get_or_create(sku=sku, defaults={"name": name})

        with event_context(actor_id="demo"):
            order_ids = self.create_orders(count)
            self.show_order(self.showcase_id or order_ids[0])
        self.catch_up_projections(order_ids)
        self.publish_outbox(order_ids)
        with event_context(actor_id="demo"):
            self.dead_letter_and_retry()
        python = _python_as_typed()
        self.stdout.write(self.style.SUCCESS("\nDemo finished. Next:"))
        self.stdout.write(
            f"   {python} manage.py createsuperuser   # a login for the admin\n"
            f"   {python} manage.py runserver\n"
            "   then open http://127.0.0.1:8000/ (orders: place one, see its events) and\n"
            "   http://127.0.0.1:8000/admin/django_eventsource/ (events, dashboard)"
        )

    # -- steps ---------------------------------------------------------------------------

    def step(self, title: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"\n{title}"))

    def create_orders(self, count: int) -> list[UUID]:
        self.step(f"1. Creating {count} orders")
        started = time.perf_counter()
        order_ids: list[UUID] = []
        shipped = cancelled = events = 0
        self.showcase_id: UUID | None = None
        for n in range(1, count + 1):
            order = self.repository.create_new(uuid4())
            order.create(customer=self.rng.choice(CUSTOMERS))
            for sku in self.rng.sample(sorted(CATALOGUE), k=self.rng.randint(1, 3)):
                order.add_line(sku, quantity=self.rng.randint(1, 3), unit_price=CATALOGUE[sku][1])
            events += len(order.uncommitted_events)
            self.repository.save(order)
            # A second unit of work on the reloaded aggregate: ship or cancel some orders.
            outcome = self.rng.random()
            if outcome < 0.5 or outcome > 0.8:
                order = self.repository.load(order.aggregate_id)
                if outcome < 0.5:
                    order.ship(tracking_number=f"TRK{self.rng.randint(10**6, 10**7 - 1)}")
                    shipped += 1
                    self.showcase_id = self.showcase_id or order.aggregate_id
                else:
                    order.cancel(reason="customer changed their mind")
                    cancelled += 1
                events += len(order.uncommitted_events)
                self.repository.save(order)
            order_ids.append(order.aggregate_id)
            if n % max(1, count // 4) == 0 and n < count:
                self.stdout.write(f"   {n}/{count} orders saved …")
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"   orders created: {count} ({events} events, {shipped} shipped, "
            f"{cancelled} cancelled) in {elapsed:.2f}s"
        )
        return order_ids

    def show_order(self, order_id: UUID) -> None:
        self.step("2. One order, reloaded from its events")
        order = self.repository.load(order_id)
        state = order.state
        self.stdout.write(
            f"   Order {order_id}: customer={state.customer} status={state.status} "
            f"lines={len(state.lines)} total={state.total} version={order.version}"
        )
        for event in self.repository.event_store.get_events(order_id, "Order").events:
            fields = " ".join(f"{key}={value}" for key, value in event.payload().items())
            self.stdout.write(f"     v{event.aggregate_version} {event.event_type:<15} {fields}")

    def catch_up_projections(self, order_ids: list[UUID]) -> None:
        self.step("3. Catching up the projections (run_projections --once)")
        summary = run_projections(once=True, progress=self.progress)
        for name, count in summary.processed.items():
            self.stdout.write(f"   {name}: {count} events processed")
        found = OrderSummary.objects.filter(order_id__in=order_ids).count()
        self.stdout.write(
            f"   projection caught up: {found}/{len(order_ids)} orders of this run in "
            f"OrderSummary ({OrderSummary.objects.count()} rows in total)"
        )

    def publish_outbox(self, order_ids: list[UUID]) -> None:
        self.step("4. Publishing the outbox to the event bus (publish_outbox --once)")
        pending = DjangoOutboxRepository().get_stats().pending_count
        of_this_run = OutboxMessage.objects.pending().filter(aggregate_id__in=order_ids).count()
        report = publish_outbox(
            once=True, progress=lambda totals: self.progress(f"{totals.published} published")
        )
        earlier = pending - of_this_run
        left_over = f", {earlier} left by an earlier run" if earlier > 0 else ""
        self.stdout.write(
            f"   outbox published: {report.published} of {pending} pending messages "
            f"({of_this_run} for this run's orders{left_over})"
        )
        reservations = InventoryReservation.objects.filter(order_id__in=order_ids)
        self.stdout.write(
            f"   reaction: {reservations.count()} inventory reservations for this run's lines "
            f"({reservations.filter(released=True).count()} released by cancellations)"
        )

    def dead_letter_and_retry(self) -> None:
        self.step("5. A dead letter, fixed and retried")
        sku = f"LIMITED-{uuid4().hex[:6].upper()}"
        order = self.repository.create_new(uuid4())
        order.create(customer="Edsger")
        order.add_line(sku, quantity=1, unit_price=Decimal("99.00"))
        event_ids = {event.event_id for event in order.uncommitted_events}
        self.repository.save(order)
        self.stdout.write(f"   saved an order with a line for {sku}, which is not in the catalogue")

        projection_name = OrderSummaryProjection().name
        run_projections([projection_name], once=True)
        letters = [
            entry
            for entry in DjangoDLQRepository().get_failed_events(projection_name)
            if entry.event_id in event_ids
        ]
        self.stdout.write(
            self.style.WARNING(f"   run_projections: {len(letters)} event dead-lettered")
        )
        for letter in letters:
            self.stdout.write(
                self.style.WARNING(
                    f"   dead letter #{letter.id}: {letter.event_type} after "
                    f"{letter.retry_count} attempts: {letter.error_message}"
                )
            )
        Product.objects.create(sku=sku, name="Limited edition roast")
        self.stdout.write(f"   added {sku} to the catalogue; retrying the dead letters")
        report = retry_dead_letters(
            projection=projection_name, ids=[letter.id for letter in letters], resolved_by="demo"
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"   dead letter retried: {report.resolved} resolved, {report.failed} still failing"
            )
        )
        summary_row = OrderSummary.objects.get(order_id=order.aggregate_id)
        self.stdout.write(
            f"   OrderSummary of that order: {summary_row.line_count} line "
            f"({summary_row.items}), total {summary_row.total}"
        )

    def progress(self, message: str) -> None:
        if self.verbosity > 1:
            self.stdout.write(f"   … {message}")


def _python_as_typed() -> str:
    """This interpreter as the reader would type it: relative when inside the project."""
    relative = os.path.relpath(sys.executable)
    return sys.executable if relative.startswith("..") else relative
