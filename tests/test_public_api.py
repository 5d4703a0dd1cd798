"""The curated public API: every name in ``__all__`` exists, and nothing private leaks."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "offmaps",
    "offmaps.errors",
    "offmaps.types",
    "offmaps.tiling",
    "offmaps.geopackage",
    "offmaps.containers",
    "offmaps.features",
    "offmaps.storage",
    "offmaps.schemas",
    "offmaps.sample",
    "offmaps.client",
    "offmaps.offline",
    "offmaps.sync",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist_and_are_public(name: str) -> None:
    module = importlib.import_module(name)
    exported: list[str] = module.__all__
    for attribute in exported:
        assert hasattr(module, attribute), attribute
        assert not attribute.startswith("_") or attribute == "__version__"


def test_every_error_derives_from_the_root() -> None:
    errors = importlib.import_module("offmaps.errors")
    for attribute in errors.__all__:
        assert issubclass(getattr(errors, attribute), errors.OffmapsError | errors.OffmapsWarning)
