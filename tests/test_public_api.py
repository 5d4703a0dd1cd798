"""The curated public API: every package's ``__all__``, pinned.

``tests/public_api.json`` is the snapshot: adding or removing a public name fails here until the
snapshot says so too, so every change of the public API shows in a diff. After a deliberate
change, rewrite it with ``.venv/bin/python -m tests.test_public_api``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

SNAPSHOT = Path(__file__).with_name("public_api.json")

MODULES = [
    "offmaps",
    "offmaps.errors",
    "offmaps.types",
    "offmaps.processes",
    "offmaps.schemas",
    "offmaps.tiling",
    "offmaps.storage",
    "offmaps.geopackage",
    "offmaps.access",
    "offmaps.settings",
    "offmaps.containers",
    "offmaps.features",
    "offmaps.sync",
    "offmaps.sources",
    "offmaps.jobs",
    "offmaps.state",
    "offmaps.catalog",
    "offmaps.replicas",
    "offmaps.offline",
    "offmaps.offline.generate",
    "offmaps.offline.areas",
    "offmaps.offline.preplanned",
    "offmaps.offline.updates",
    "offmaps.cache",
    "offmaps.cache.postgres",
    "offmaps.sample",
    "offmaps.services",
    "offmaps.server",
    "offmaps.server.graphql",
    "offmaps.client",
    "offmaps.cli",
]


def public_names() -> dict[str, list[str]]:
    """Each module's ``__all__``, sorted."""
    return {name: sorted(importlib.import_module(name).__all__) for name in MODULES}


@pytest.mark.parametrize("name", MODULES)
def test_the_public_names_are_the_pinned_ones(name: str) -> None:
    pinned: list[str] = json.loads(SNAPSHOT.read_text())[name]
    found = sorted(importlib.import_module(name).__all__)
    changed = {
        "added": sorted(set(found) - set(pinned)),
        "removed": sorted(set(pinned) - set(found)),
    }
    assert changed == {"added": [], "removed": []}, (
        f"{name}: {changed}; if deliberate, run "
        "`.venv/bin/python -m tests.test_public_api` to pin the new API"
    )


def test_every_package_is_pinned() -> None:
    packages = {
        f"offmaps.{path.parent.name}" if path.name == "__init__.py" else f"offmaps.{path.stem}"
        for path in Path(importlib.import_module("offmaps").__file__ or "").parent.glob("*")
        if (path.suffix == ".py" and not path.name.startswith("_"))
        or (path / "__init__.py").exists()
    }
    missing = packages - set(MODULES)
    assert not missing, f"unpinned packages: {sorted(missing)}"


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


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(public_names(), indent=1) + "\n")
    print(f"pinned {len(MODULES)} modules in {SNAPSHOT}")
