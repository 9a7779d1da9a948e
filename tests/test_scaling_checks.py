"""E030: the settings of partitions, leases and the projection lock kind."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_eventsource.checks import check_scaling_settings

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("EVENTSOURCE_REDIS_PARTITIONS", 0),
        ("EVENTSOURCE_REDIS_PARTITIONS", 1025),
        ("EVENTSOURCE_REDIS_PARTITIONS", "4"),
        ("EVENTSOURCE_REDIS_PARTITIONS", True),
        ("EVENTSOURCE_REDIS_PARTITION_LEASE", 0),
        ("EVENTSOURCE_OUTBOX_CLAIM_LEASE", -1),
        ("EVENTSOURCE_OUTBOX_CLAIM_LEASE", "10"),
        ("EVENTSOURCE_PROJECTION_LOCK", "session"),
    ],
)
def test_a_bad_scaling_setting_is_e030(setting: str, value: object) -> None:
    with override_settings(**{setting: value}):
        messages = check_scaling_settings()
        assert [m.id for m in messages] == ["django_eventsource.E030"]
        assert setting in messages[0].msg
        with pytest.raises(SystemCheckError, match=r"django_eventsource\.E030"):
            call_command("check")


@override_settings(
    EVENTSOURCE_REDIS_PARTITIONS=1024,
    EVENTSOURCE_REDIS_PARTITION_LEASE=0.5,
    EVENTSOURCE_OUTBOX_CLAIM_LEASE=3,
    EVENTSOURCE_PROJECTION_LOCK="lease",
)
def test_good_scaling_settings_pass() -> None:
    assert check_scaling_settings() == []


def test_the_defaults_pass() -> None:
    assert check_scaling_settings() == []
