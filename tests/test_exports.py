"""The package root: one list of public names, each importable, nothing else by accident."""

from __future__ import annotations

import importlib

import pytest

import django_eventsource

#: Names DESIGN pins at the root, plus the operational entry points.
ENTRY_POINTS = {"run_projections", "publish_outbox", "get_event_bus"}


def test_every_name_in_all_resolves_to_an_object_defined_in_the_package() -> None:
    for name in django_eventsource.__all__:
        value = getattr(django_eventsource, name)
        if name != "__version__":
            module = getattr(value, "__module__", None) or type(value).__module__
            assert module.startswith("django_eventsource."), (name, module)


def test_the_entry_points_are_exported() -> None:
    assert set(django_eventsource.__all__) >= ENTRY_POINTS
    assert callable(django_eventsource.run_projections)
    assert callable(django_eventsource.publish_outbox)
    assert callable(django_eventsource.get_event_bus)


def test_helpers_outside_the_contract_are_importable_from_their_modules_only() -> None:
    for dotted in (
        "django_eventsource.exceptions.InvalidEventError",
        "django_eventsource.projections.base.RetryPolicy",
        "django_eventsource.bus.memory.InMemoryEventBusStats",
        "django_eventsource.events.serialization.EventSourceJSONEncoder",
        "django_eventsource.types.AggregateId",
    ):
        module, _, name = dotted.rpartition(".")
        assert hasattr(importlib.import_module(module), name), dotted
        assert name not in django_eventsource.__all__, name


def test_all_has_no_duplicates_and_dir_shows_every_name() -> None:
    assert len(django_eventsource.__all__) == len(set(django_eventsource.__all__))
    assert set(django_eventsource.__all__) <= set(dir(django_eventsource))


def test_unknown_attributes_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        django_eventsource.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
