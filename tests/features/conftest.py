"""The ``store`` fixture: a fresh, empty feature store of every backend.

The PostGIS backend needs a PostgreSQL server with PostGIS: ``make test`` starts one with
``scripts/services.sh`` and passes its URL in ``OFFMAPS_TEST_POSTGRES_URL``. Without it the PostGIS
tests fail loudly; they are never skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from offmaps.features.store import FeatureStore

BACKENDS = ["geopackage", "postgis"]


def postgres_url() -> str:
    """The test server's URL, or a loud failure when ``make test`` did not start one."""
    url = os.environ.get("OFFMAPS_TEST_POSTGRES_URL")
    if not url:
        pytest.fail(
            "OFFMAPS_TEST_POSTGRES_URL is not set: run the tests with `make test`, which starts "
            "PostgreSQL/PostGIS with scripts/services.sh"
        )
    return url


def open_backend(backend: str, tmp_path: Path) -> FeatureStore:
    """A new empty store of ``backend``: a GeoPackage file, or a fresh PostgreSQL schema."""
    if backend == "geopackage":
        from offmaps.features.geopackage import GeoPackageStore  # noqa: PLC0415

        return GeoPackageStore.create(tmp_path / "service.gpkg")
    from offmaps.features.postgis import PostGISStore  # noqa: PLC0415

    return PostGISStore.create(postgres_url(), schema=f"test_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeatureStore]:
    """A fresh, empty store of each backend, dropped afterwards."""
    backend: str = request.param
    opened = open_backend(backend, tmp_path)
    try:
        yield opened
    finally:
        drop = getattr(opened, "drop", None)
        if drop is not None:
            drop()
        opened.close()
