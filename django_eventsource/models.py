"""Django models backing the event store, checkpoints, dead letters, outbox and snapshots."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, Self
from uuid import UUID

from django.db import IntegrityError, models, transaction
from django.db.models import Avg, Count, F, Max, Min, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Now
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .partitioning import event_bucket


class EventRecord(models.Model):
    """One stored event. ``position`` is the global, gap-tolerant order of all events."""

    position = models.BigAutoField(_("global position"), primary_key=True)
    event_id = models.UUIDField(_("event id"), unique=True)
    aggregate_type = models.CharField(_("aggregate type"), max_length=255)
    aggregate_id = models.UUIDField(_("aggregate id"))
    aggregate_version = models.PositiveIntegerField(_("aggregate version"))
    event_type = models.CharField(_("event type"), max_length=255)
    event_version = models.PositiveIntegerField(_("schema version"), default=1)
    tenant_id = models.UUIDField(_("tenant id"), null=True, blank=True)
    # NULL, not "", mirrors DomainEvent.actor_id = None ("no actor" differs from an empty id).
    actor_id = models.CharField(  # noqa: DJ001
        _("actor id"), max_length=255, null=True, blank=True
    )
    correlation_id = models.UUIDField(_("correlation id"))
    causation_id = models.UUIDField(_("causation id"), null=True, blank=True)
    occurred_at = models.DateTimeField(_("occurred at"))
    recorded_at = models.DateTimeField(_("recorded at"), db_default=Now())
    payload = models.JSONField(_("payload"), default=dict)
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)
    # Segmented projections: event_bucket(aggregate_id), written by the store at append.
    bucket = models.PositiveSmallIntegerField(
        _("bucket"),
        db_default=0,
        editable=False,
        help_text=_("Stable hash of the aggregate id (0-255) that segmented projections split on."),
    )

    class Meta:
        db_table = "eventsource_event"
        verbose_name = _("event")
        verbose_name_plural = _("events")
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(
                fields=["aggregate_id", "aggregate_type", "aggregate_version"],
                name="eventsource_event_stream_version_uniq",
            ),
        ]
        indexes = [
            models.Index(fields=["aggregate_type", "position"], name="es_event_aggtype_pos_idx"),
            models.Index(fields=["event_type", "position"], name="es_event_type_pos_idx"),
            models.Index(fields=["tenant_id", "position"], name="es_event_tenant_pos_idx"),
            models.Index(fields=["correlation_id"], name="es_event_correlation_idx"),
            models.Index(fields=["occurred_at"], name="es_event_occurred_idx"),
            models.Index(fields=["position", "bucket"], name="es_event_pos_bucket_idx"),
        ]

    def __str__(self) -> str:
        return (
            f"#{self.position} {self.event_type} "
            f"{self.aggregate_type}:{self.aggregate_id} v{self.aggregate_version}"
        )

    def save(self, *args: Any, **kwargs: Any) -> None:
        # The store writes the bucket itself; this covers rows saved through the ORM.
        self.bucket = event_bucket(self.aggregate_id)
        super().save(*args, **kwargs)

    @property
    def stream_id(self) -> str:
        return f"{self.aggregate_id}:{self.aggregate_type}"


class CheckpointQuerySet(models.QuerySet["Checkpoint"]):
    """The checkpoint queries of the runner, the repository, the admin and the health report."""

    def for_projection(self, projection_name: str) -> Self:
        return self.filter(projection_name=projection_name)

    def ensure(self, projection_name: str) -> None:
        """Create the projection's row (position 0) unless it exists."""
        if self.for_projection(projection_name).exists():
            return
        try:
            with transaction.atomic(using=self.db):
                self.create(projection_name=projection_name)
        except IntegrityError:
            pass  # created concurrently by another runner

    def advance(
        self, position: int, event_id: UUID, event_type: str, events_processed_delta: int
    ) -> int:
        """Move these checkpoints to ``position``; returns how many rows were updated."""
        now = timezone.now()
        return self.update(
            position=position,
            last_event_id=event_id,
            last_event_type=event_type,
            last_processed_at=now,
            updated_at=now,
            events_processed=F("events_processed") + events_processed_delta,
        )

    def rewind(self) -> int:
        """Send these checkpoints back to position 0, as if their projections never ran."""
        return self.update(
            position=0,
            last_event_id=None,
            last_event_type="",
            events_processed=0,
            last_processed_at=None,
            failure_streak=0,
            paused_at=None,
            last_error="",
        )

    def with_lag(self, event_types: Collection[str] | None = None) -> Self:
        """Each checkpoint with the facts its lag is read from (see ``Checkpoint.lag_events``).

        ``head_position`` and ``head_event_id`` describe the newest stored event and
        ``oldest_unread_at`` is the ``recorded_at`` of the oldest event after the
        checkpoint (``None`` when it is caught up), counting only ``event_types`` when
        given. Each is an index lookup in a subquery, so any number of checkpoints
        costs one query.
        """
        head, unread = self._lag_sources(OuterRef("position"), event_types)
        return self.annotate(
            head_position=Coalesce(Subquery(head.values("position")[:1]), 0),
            head_event_id=Subquery(head.values("event_id")[:1]),
            oldest_unread_at=Subquery(unread.values("recorded_at")[:1]),
        )

    def not_started(
        self, projection_name: str, event_types: Collection[str] | None = None
    ) -> Checkpoint:
        """An unsaved position-0 checkpoint of a projection that never ran, as ``with_lag()``
        gives it: such a projection is behind by every stored event."""
        head, unread = self._lag_sources(0, event_types)
        newest = head.using(self.db).values_list("position", "event_id").first()
        checkpoint = self.model(projection_name=projection_name)
        checkpoint.head_position, checkpoint.head_event_id = newest or (0, None)
        checkpoint.oldest_unread_at = (
            unread.using(self.db).values_list("recorded_at", flat=True).first()
        )
        return checkpoint

    @staticmethod
    def _lag_sources(
        position: OuterRef | int, event_types: Collection[str] | None
    ) -> tuple[models.QuerySet[EventRecord], models.QuerySet[EventRecord]]:
        """The newest events first, and the events after ``position`` oldest first."""
        events = EventRecord.objects.all()
        if event_types is not None:
            events = events.filter(event_type__in=event_types)
        return (
            events.order_by("-position"),
            events.filter(position__gt=position).order_by("position"),
        )


class Checkpoint(models.Model):
    """How far a projection has read: the last processed global position."""

    projection_name = models.CharField(_("projection"), max_length=255, unique=True)
    position = models.BigIntegerField(_("position"), default=0)
    last_event_id = models.UUIDField(_("last event id"), null=True, blank=True)
    last_event_type = models.CharField(_("last event type"), max_length=255, blank=True, default="")
    events_processed = models.BigIntegerField(_("events processed"), default=0)
    last_processed_at = models.DateTimeField(_("last processed at"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    lease_owner = models.CharField(
        _("lease owner"),
        max_length=255,
        blank=True,
        default="",
        help_text=_(
            "Runner currently processing this projection "
            "(SQLite and other non-PostgreSQL backends)."
        ),
    )
    lease_expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True)
    failure_streak = models.PositiveIntegerField(
        _("consecutive failures"),
        default=0,
        help_text=_("Events dead-lettered in a row since the last one handled."),
    )
    paused_at = models.DateTimeField(
        _("paused at"),
        null=True,
        blank=True,
        help_text=_(
            "Set when the projection paused after EVENTSOURCE_PROJECTION_PAUSE_AFTER "
            "consecutive failures; the runner skips it until it is resumed."
        ),
    )
    last_error = models.TextField(_("last error"), blank=True, default="")

    objects = CheckpointQuerySet.as_manager()

    # Set on the rows of CheckpointQuerySet.with_lag() and not_started().
    head_position: int
    head_event_id: UUID | None
    oldest_unread_at: datetime | None

    class Meta:
        db_table = "eventsource_checkpoint"
        verbose_name = _("checkpoint")
        verbose_name_plural = _("checkpoints")
        ordering = ["projection_name"]

    def __str__(self) -> str:
        return f"{self.projection_name} @ {self.position}"

    @property
    def paused(self) -> bool:
        """Whether the runner skips this projection until it is resumed."""
        return self.paused_at is not None

    @property
    def lag_events(self) -> int:
        """Positions between the checkpoint and the newest stored event (``with_lag()`` rows).

        Positions left unused by rolled-back transactions count too, so it is an upper
        bound; it costs no count of the events.
        """
        return max(self.head_position - self.position, 0)

    def lag_seconds(self, now: datetime | None = None) -> float:
        """Age of the oldest event the projection has not processed (0.0 when caught up)."""
        if self.oldest_unread_at is None:
            return 0.0
        return max(((now or timezone.now()) - self.oldest_unread_at).total_seconds(), 0.0)


class DeadLetterQuerySet(models.QuerySet["DeadLetter"]):
    """The dead-letter queries of the repository, the runner, the admin and the health report."""

    def for_projection(self, projection_name: str) -> Self:
        return self.filter(projection_name=projection_name)

    def failed(self) -> Self:
        """Failed entries, the events parked behind them excluded."""
        return self.filter(status=DeadLetter.Status.FAILED, parked=False)

    def open(self) -> Self:
        """Entries still to deal with: failed, being retried, or parked behind one of those."""
        return self.exclude(status=DeadLetter.Status.RESOLVED)

    def heads(self) -> Self:
        """Open entries that are the head of their sequence (the parked ones excluded)."""
        return self.open().filter(parked=False)

    def parked_events(self) -> Self:
        """Open entries waiting, never handled, behind the head of their sequence."""
        return self.open().filter(parked=True)

    def in_sequence(self, projection_name: str, sequence_key: str) -> Self:
        """The open entries of one sequence, head first (in the events' global order)."""
        return (
            self.open()
            .filter(projection_name=projection_name, sequence_key=sequence_key)
            .order_by("global_position", "id")
        )

    def waiting_counts(self) -> dict[tuple[str, str], int]:
        """Parked entries per ``(projection_name, sequence_key)``, in one query."""
        rows = (
            self.parked_events()
            .order_by()
            .values_list("projection_name", "sequence_key")
            .annotate(waiting=Count("id"))
        )
        return {(name, key): int(waiting) for name, key, waiting in rows}

    def resolved(self, before: datetime | None = None) -> Self:
        """Resolved entries (only those resolved before ``before`` when given)."""
        rows = self.filter(status=DeadLetter.Status.RESOLVED)
        return rows if before is None else rows.filter(resolved_at__lt=before)

    def mark_retrying(self) -> int:
        return self.update(status=DeadLetter.Status.RETRYING)

    def mark_resolved(self, resolved_by: str) -> int:
        return self.update(
            status=DeadLetter.Status.RESOLVED, resolved_at=timezone.now(), resolved_by=resolved_by
        )

    def status_summary(self) -> dict[str, Any]:
        """``failed``, ``retrying`` and ``parked`` counts, ``projections`` (distinct names
        among them) and ``oldest`` (the earliest ``first_failed_at``), in one query."""
        status = DeadLetter.Status
        return self.open().aggregate(
            failed=Count("id", filter=Q(status=status.FAILED, parked=False)),
            retrying=Count("id", filter=Q(status=status.RETRYING, parked=False)),
            parked=Count("id", filter=Q(parked=True)),
            projections=Count("projection_name", distinct=True),
            oldest=Min("first_failed_at"),
        )

    def per_projection(self) -> models.QuerySet[DeadLetter, Any]:
        """``projection_name``, ``failures``, ``oldest`` and ``newest`` failure per
        projection, most failures first."""
        return (
            self.order_by()
            .values("projection_name")
            .annotate(
                failures=Count("id"), oldest=Min("first_failed_at"), newest=Max("last_failed_at")
            )
            .order_by("-failures", "projection_name")
        )


class DeadLetter(models.Model):
    """An event a projection could not handle after its retries."""

    class Status(models.TextChoices):
        FAILED = "failed", _("failed")
        RETRYING = "retrying", _("retrying")
        RESOLVED = "resolved", _("resolved")

    event_id = models.UUIDField(_("event id"))
    projection_name = models.CharField(_("projection"), max_length=255)
    event_type = models.CharField(_("event type"), max_length=255)
    global_position = models.BigIntegerField(_("global position"), null=True, blank=True)
    event_data = models.JSONField(_("event data"), default=dict)
    error_message = models.TextField(_("error message"), blank=True, default="")
    error_stacktrace = models.TextField(_("stack trace"), blank=True, default="")
    retry_count = models.PositiveIntegerField(_("attempts"), default=0)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.FAILED
    )
    first_failed_at = models.DateTimeField(_("first failed at"), db_default=Now())
    last_failed_at = models.DateTimeField(_("last failed at"), db_default=Now())
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True)
    resolved_by = models.CharField(_("resolved by"), max_length=255, blank=True, default="")
    sequence_key = models.CharField(
        _("sequence"),
        max_length=255,
        blank=True,
        default="",
        help_text=_(
            "The projection's sequence_key(event), by default the aggregate id. Later events "
            "with the same key wait behind an open dead letter."
        ),
    )
    parked = models.BooleanField(
        _("parked"),
        default=False,
        help_text=_("Never handled: waiting behind the head of its sequence."),
    )

    objects = DeadLetterQuerySet.as_manager()

    class Meta:
        db_table = "eventsource_dead_letter"
        verbose_name = _("dead letter")
        verbose_name_plural = _("dead letters")
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["event_id", "projection_name"], name="eventsource_dead_letter_uniq"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "projection_name"], name="es_dlq_status_proj_idx"),
            models.Index(fields=["projection_name", "status"], name="es_dlq_proj_status_idx"),
            models.Index(
                fields=["projection_name", "sequence_key", "global_position"],
                name="es_dlq_sequence_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.projection_name}: {self.event_type} {self.event_id} ({self.status})"


class OutboxMessageQuerySet(models.QuerySet["OutboxMessage"]):
    """The outbox rows the repository, the admin and the health report ask for."""

    def pending(self) -> Self:
        return self.filter(status=OutboxMessage.Status.PENDING)

    def failed(self) -> Self:
        return self.filter(status=OutboxMessage.Status.FAILED)

    def published_before(self, cutoff: datetime) -> Self:
        return self.filter(status=OutboxMessage.Status.PUBLISHED, published_at__lt=cutoff)

    def unclaimed(self) -> Self:
        """Rows no relay holds (a relay that holds a row publishes or releases it)."""
        return self.filter(claimed_by="")

    def release(self) -> int:
        """Drop the relays' claims on these rows, counting no attempt."""
        return self.update(claimed_by="", claimed_at=None)

    def count_attempt(self, error: str) -> int:
        """Count one failed attempt and record ``error``; the rows keep their status."""
        return self.update(
            retry_count=F("retry_count") + 1,
            last_error=error,
            first_failed_at=Coalesce("first_failed_at", Now()),
        )

    def mark_failed(self, error: str) -> int:
        """Give up on these rows: ``failed`` with ``error``, released, kept visible."""
        return self.update(
            status=OutboxMessage.Status.FAILED, last_error=error, claimed_by="", claimed_at=None
        )

    def requeue(self) -> int:
        """Make these rows pending and due now, with their attempt count back at zero
        and their give-up clock stopped."""
        return self.update(
            status=OutboxMessage.Status.PENDING,
            retry_count=0,
            next_attempt_at=None,
            first_failed_at=None,
            claimed_by="",
            claimed_at=None,
        )

    def status_summary(self) -> dict[str, Any]:
        """``pending``, ``published`` and ``failed`` counts, ``oldest_pending`` (the
        oldest pending row's ``created_at``) and ``avg_retries`` (the mean
        ``retry_count`` of the pending rows), in one query; both are ``None`` when
        nothing is pending."""
        status = OutboxMessage.Status
        pending = Q(status=status.PENDING)
        return self.aggregate(
            pending=Count("id", filter=pending),
            published=Count("id", filter=Q(status=status.PUBLISHED)),
            failed=Count("id", filter=Q(status=status.FAILED)),
            oldest_pending=Min("created_at", filter=pending),
            avg_retries=Avg("retry_count", filter=pending),
        )


class OutboxMessage(models.Model):
    """An event waiting to be published to the event bus (transactional outbox)."""

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        PUBLISHED = "published", _("published")
        FAILED = "failed", _("failed")

    event_id = models.UUIDField(_("event id"), unique=True)
    event_type = models.CharField(_("event type"), max_length=255)
    aggregate_id = models.UUIDField(_("aggregate id"))
    aggregate_type = models.CharField(_("aggregate type"), max_length=255)
    aggregate_version = models.PositiveIntegerField(_("aggregate version"), default=0)
    tenant_id = models.UUIDField(_("tenant id"), null=True, blank=True)
    event_data = models.JSONField(_("event data"), default=dict)
    created_at = models.DateTimeField(_("created at"), db_default=Now())
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    published_at = models.DateTimeField(_("published at"), null=True, blank=True)
    retry_count = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True, default="")
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    first_failed_at = models.DateTimeField(
        _("first failed at"),
        null=True,
        blank=True,
        help_text=_(
            "When the first failed publishing attempt happened; "
            "EVENTSOURCE_OUTBOX_GIVE_UP_AFTER counts from here."
        ),
    )
    claimed_by = models.CharField(_("claimed by"), max_length=255, blank=True, default="")
    claimed_at = models.DateTimeField(_("claimed at"), null=True, blank=True)

    objects = OutboxMessageQuerySet.as_manager()

    class Meta:
        db_table = "eventsource_outbox"
        verbose_name = _("outbox message")
        verbose_name_plural = _("outbox messages")
        ordering = ["id"]
        indexes = [
            # Only pending rows are indexed for the relay's queries: marking a row
            # published then touches no relay index, and a claim (which changes only
            # unindexed columns) can be a heap-only update on PostgreSQL.
            models.Index(
                fields=["id"],
                name="es_outbox_pending_id_idx",
                condition=models.Q(status="pending"),
            ),
            models.Index(fields=["status", "published_at"], name="es_outbox_published_idx"),
            # The relay's per-aggregate order check looks only at pending rows of a
            # stream; without the condition it would also walk days of published rows.
            models.Index(
                fields=["aggregate_type", "aggregate_id", "aggregate_version"],
                name="es_outbox_pending_stream_idx",
                condition=models.Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} ({self.status})"


class Snapshot(models.Model):
    """The latest saved state of one aggregate."""

    aggregate_type = models.CharField(_("aggregate type"), max_length=255)
    aggregate_id = models.UUIDField(_("aggregate id"))
    version = models.PositiveIntegerField(_("version"))
    schema_version = models.PositiveIntegerField(_("state schema version"), default=1)
    state = models.JSONField(_("state"))
    tenant_id = models.UUIDField(_("tenant id"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"))

    class Meta:
        db_table = "eventsource_snapshot"
        verbose_name = _("snapshot")
        verbose_name_plural = _("snapshots")
        constraints = [
            models.UniqueConstraint(
                fields=["aggregate_type", "aggregate_id"], name="eventsource_snapshot_uniq"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.aggregate_type}:{self.aggregate_id} v{self.version}"
