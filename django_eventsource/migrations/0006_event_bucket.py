"""Events get a ``bucket`` (a stable hash of the aggregate id) for segmented projections.

Existing rows are backfilled in Python (the hash is BLAKE2b, which the databases do not
offer), one ``UPDATE`` per bucket and chunk of aggregates.
"""

from typing import Any

from django.db import migrations, models

from django_eventsource.partitioning import event_bucket

_CHUNK = 500


def backfill_buckets(apps: Any, schema_editor: Any) -> None:
    event = apps.get_model("django_eventsource", "EventRecord")
    alias = schema_editor.connection.alias
    rows = event.objects.using(alias)
    by_bucket: dict[int, list[Any]] = {}
    for aggregate_id in rows.order_by().values_list("aggregate_id", flat=True).distinct():
        by_bucket.setdefault(event_bucket(aggregate_id), []).append(aggregate_id)
    by_bucket.pop(0, None)  # the column's default already
    for bucket, members in sorted(by_bucket.items()):
        for start in range(0, len(members), _CHUNK):
            rows.filter(aggregate_id__in=members[start : start + _CHUNK]).update(bucket=bucket)

class Migration(migrations.Migration):
    dependencies = [
        ("django_eventsource", "0005_sequenced_dead_letters_and_pause"),
    ]

    operations = [
        migrations.AddField(
            model_name="eventrecord",
            name="bucket",
            field=models.PositiveSmallIntegerField(
                db_default=0,
                editable=False,
                help_text="Stable hash of the aggregate id (0-255) that segmented projections split on.",
                verbose_name="bucket",
            ),
        ),
        migrations.RunPython(
            backfill_buckets,
            migrations.RunPython.noop,
            hints={"model_name": "eventrecord"},
            elidable=False,
        ),
        migrations.AddIndex(
            model_name="eventrecord",
            index=models.Index(fields=["position", "bucket"], name="es_event_pos_bucket_idx"),
        ),
    ]
