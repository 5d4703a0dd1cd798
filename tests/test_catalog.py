"""The catalog: which files in the data folder become services, and the names it accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from offmaps.catalog import (
    VECTOR_TILES_SUFFIX,
    Catalog,
    GeoPackageServices,
    PostGISServices,
    open_feature_services,
)
from offmaps.errors import FeatureStoreError
from offmaps.features.geopackage import GeoPackageStore
from offmaps.schemas import WebMap


@pytest.mark.parametrize(
    "name",
    ["", "City", "city-2", "2city", "city;drop schema public", "../city", "a" * 64, "ci ty"],
)
def test_feature_service_names_that_are_not_schema_names_are_refused(
    tmp_path: Path, name: str
) -> None:
    catalog = Catalog(tmp_path)
    with pytest.raises(FeatureStoreError, match="feature service name"):
        catalog.create_feature_service(name)
    assert list((tmp_path / "features").iterdir()) == []
    catalog.close()


def test_a_service_is_created_once_and_gets_vector_tiles(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    catalog.create_feature_service("city_2")
    with pytest.raises(FeatureStoreError, match="exists already"):
        catalog.create_feature_service("city_2")
    assert "city_2" + VECTOR_TILES_SUFFIX in catalog.tile_sources
    catalog.close()


def test_existing_files_are_loaded_and_odd_names_ignored(tmp_path: Path) -> None:
    (tmp_path / "features").mkdir()
    for stem in ("roads", "Bad-Name"):
        GeoPackageStore.create(tmp_path / "features" / f"{stem}.gpkg").close()
    catalog = Catalog(tmp_path)
    assert set(catalog.feature_services) == {"roads"}
    catalog.close()


def test_the_public_tile_layers_follow_web_map_writes(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    assert catalog.public_tile_layers() == frozenset()

    def document(public: bool) -> WebMap:
        layer = {"type": "raster_tile", "id": "b", "title": "Basemap", "service": "basemap"}
        return WebMap.model_validate(
            {
                "format_version": "1.0",
                "item": {"title": "m"},
                "basemap": {"title": "b", "layers": [layer]},
                "sharing": {"public": public},
            }
        )

    stored = catalog.webmaps.create(document(public=True), owner="a")
    assert catalog.public_tile_layers() == {"basemap"}
    assert stored.id is not None
    catalog.webmaps.replace(stored.id, document(public=False))
    assert catalog.public_tile_layers() == frozenset()
    catalog.webmaps.replace(stored.id, document(public=True))
    assert catalog.public_tile_layers() == {"basemap"}
    catalog.webmaps.delete(stored.id)
    assert catalog.public_tile_layers() == frozenset()
    catalog.close()


def test_feature_backends_are_chosen_by_the_scheme_of_the_url(tmp_path: Path) -> None:
    assert open_feature_services(tmp_path, None) == GeoPackageServices(tmp_path / "features")
    url = "postgresql://u:p@127.0.0.1/db"
    assert open_feature_services(tmp_path, url) == PostGISServices(url)
    for bad in ("mysql://u@h/db", "file:///etc", "nonsense"):
        with pytest.raises(FeatureStoreError, match="features_url must be a postgresql://"):
            open_feature_services(tmp_path, bad)
