"""Settings are read through ``conf`` at call time, so ``override_settings`` applies."""

from __future__ import annotations

import pytest
from django.test import override_settings

from django_eventsource.conf import DEFAULTS, conf


def test_an_unset_setting_falls_back_to_its_default() -> None:
    assert conf.OUTBOX_ENABLED is False
    assert conf.PROJECTIONS == []
    assert conf.default("MAX_RETRIES") == DEFAULTS["MAX_RETRIES"] == 3


def test_project_settings_take_precedence_over_defaults() -> None:
    # tests/settings.py sets a fast poll interval for the suite.
    assert conf.POLL_INTERVAL == 0.05
    assert conf.default("POLL_INTERVAL") == 1.0


def test_override_settings_is_honoured_at_call_time() -> None:
    with override_settings(EVENTSOURCE_MAX_RETRIES=9, EVENTSOURCE_EVENT_BUS="memory"):
        assert conf.MAX_RETRIES == 9
        assert conf.EVENT_BUS == "memory"
    assert conf.MAX_RETRIES == 3
    assert conf.EVENT_BUS is None


@override_settings(EVENTSOURCE_PROJECTION_BATCH_SIZE=7)
def test_override_settings_works_as_a_decorator() -> None:
    assert conf.PROJECTION_BATCH_SIZE == 7


def test_an_unknown_setting_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="MAX_RETRY"):
        conf.MAX_RETRY  # noqa: B018
    with pytest.raises(AttributeError, match="MAX_RETRY"):
        conf.default("MAX_RETRY")


def test_every_documented_setting_is_listed() -> None:
    pinned = {
        "PROJECTIONS",
        "EVENT_BUS",
        "REDIS_URL",
        "OUTBOX_ENABLED",
        "PROJECTION_BATCH_SIZE",
        "POLL_INTERVAL",
        "MAX_RETRIES",
        "RETRY_BACKOFF",
    }
    assert pinned <= set(dir(conf))
