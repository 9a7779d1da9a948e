"""The package root's export list and its lazy import map agree."""

import django_eventsource


def test_every_lazily_exported_name_is_listed_in_all() -> None:
    assert set(django_eventsource.__all__) == set(django_eventsource._EXPORTS) | {"__version__"}


def test_unknown_attributes_raise_attribute_error() -> None:
    try:
        django_eventsource.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
