"""Vector tiles made on the fly from feature layers."""

from __future__ import annotations

from pathlib import Path

import mapbox_vector_tile
import pytest
from shapely.geometry import LineString, Point, Polygon

from offmaps.errors import TileNotFoundError
from offmaps.features import FieldType
from offmaps.features.geopackage import GeoPackageStore
from offmaps.features.model import Field, GeometryType, Insert, LayerSchema
from offmaps.sources.vector import FeatureVectorTiles
from offmaps.tiling import get_tms
from offmaps.types import Tile

SITES = LayerSchema("sites", (Field("name", FieldType.TEXT),), GeometryType.POINT)
ROADS = LayerSchema("roads", (), GeometryType.LINESTRING, srid=3067)
AREAS = LayerSchema("areas", (Field("name", FieldType.TEXT),), GeometryType.POLYGON)
TABLE = LayerSchema("visits", (Field("n", FieldType.INTEGER),))


@pytest.fixture
def store(tmp_path: Path) -> GeoPackageStore:
    store = GeoPackageStore.create(tmp_path / "s.gpkg")
    for schema in (SITES, ROADS, TABLE):
        store.create_layer(schema)
    store.apply_edits(
        [
            Insert("sites", {"name": "kauppatori"}, Point(24.9525, 60.1675)),
            # Helsinki centre in ETRS-TM35FIN
            Insert("roads", {}, LineString([(385_000, 6_671_000), (387_000, 6_673_000)])),
        ]
    )
    return store


def tile_at(lon: float, lat: float, z: int) -> Tile:
    t = get_tms("WebMercatorQuad").tile(lon, lat, z)
    return Tile(t.x, t.y, t.z)


def test_tile_holds_features_of_every_spatial_layer(store: GeoPackageStore) -> None:
    source = FeatureVectorTiles("s-vt", store)
    assert source.info.vector_layers == ("sites", "roads")
    decoded = mapbox_vector_tile.decode(source.get_tile(tile_at(24.9525, 60.1675, 14)))
    assert set(decoded) == {"sites", "roads"}
    (site,) = decoded["sites"]["features"]
    assert site["properties"]["name"] == "kauppatori"
    assert "globalid" in site["properties"]
    x, y = site["geometry"]["coordinates"]
    assert 0 <= x <= 4096
    assert 0 <= y <= 4096


def test_tiles_follow_edits(store: GeoPackageStore) -> None:
    source = FeatureVectorTiles("s-vt", store)
    far = tile_at(25.5, 60.5, 12)
    with pytest.raises(TileNotFoundError):
        source.get_tile(far)
    store.apply_edits([Insert("sites", {"name": "new"}, Point(25.5, 60.5))])
    decoded = mapbox_vector_tile.decode(source.get_tile(far))
    assert [f["properties"]["name"] for f in decoded["sites"]["features"]] == ["new"]


@pytest.mark.parametrize("tile", [Tile(0, 0, 3), Tile(0, 0, 25), Tile(2**14, 0, 14)])
def test_out_of_range_tiles_are_not_found(store: GeoPackageStore, tile: Tile) -> None:
    source = FeatureVectorTiles("s-vt", store)
    with pytest.raises(TileNotFoundError):
        source.get_tile(tile)


def test_a_polygon_crossing_itself_is_drawn_not_a_failure(tmp_path: Path) -> None:
    """GEOS cannot clip an invalid polygon (OpenStreetMap extracts hold some): it is made valid
    first, and the tile holds it."""
    store = GeoPackageStore.create(tmp_path / "a.gpkg")
    store.create_layer(AREAS)
    west, south = 24.95, 60.165
    bow_tie = Polygon(
        [(west, south), (west + 0.01, south + 0.005), (west + 0.01, south), (west, south + 0.005)]
    )
    assert not bow_tie.is_valid
    store.apply_edits([Insert("areas", {"name": "crossed"}, bow_tie)])
    source = FeatureVectorTiles("a-vt", store)
    decoded = mapbox_vector_tile.decode(source.get_tile(tile_at(west + 0.005, south + 0.001, 12)))
    assert [f["properties"]["name"] for f in decoded["areas"]["features"]] == ["crossed"]
