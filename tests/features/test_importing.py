"""``import_features``: real files GDAL writes, in every format the issue names, and bad ones."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio.raw
import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from offmaps.errors import ImportFeaturesError, LayerExistsError
from offmaps.features import FieldType
from offmaps.features.geopackage import GeoPackageStore
from offmaps.features.importing import import_features, valid_name
from offmaps.features.model import FeatureQuery, GeometryType

FORMATS = {
    "GPKG": "sites.gpkg",
    "GeoJSON": "sites.geojson",
    "ESRI Shapefile": "sites.shp",
    "FlatGeobuf": "sites.fgb",
}


def write(path: Path, geometries: Sequence[BaseGeometry], driver: str, **fields: Any) -> Path:
    kinds = {g.geom_type for g in geometries}
    pyogrio.raw.write(
        path,
        shapely.to_wkb(np.array(geometries, dtype=object)),
        [np.asarray(values) for values in fields.values()],
        list(fields),
        crs="EPSG:4326",
        geometry_type=kinds.pop() if len(kinds) == 1 else "Unknown",
        driver=driver,
    )
    return path


def sites(path: Path, driver: str) -> Path:
    return write(
        path,
        [Point(24.9 + i / 100, 60.1) for i in range(2500)],
        driver,
        name=[f"site {i}" for i in range(2500)],
        depth=[i * 0.5 for i in range(2500)],
        osm_id=np.arange(2500, dtype=np.int64),
        installed=np.array(["2020-01-02"] * 2500, dtype="datetime64[D]"),
    )


@pytest.fixture
def store(tmp_path: Path) -> GeoPackageStore:
    return GeoPackageStore.create(tmp_path / "service.gpkg")


@pytest.mark.parametrize("driver", list(FORMATS))
def test_every_format_imports_with_types_rows_and_progress(
    tmp_path: Path, store: GeoPackageStore, driver: str
) -> None:
    source = sites(tmp_path / FORMATS[driver], driver)
    calls: list[tuple[int, int]] = []
    result = import_features(store, source, progress=lambda d, t: calls.append((d, t)))
    assert result.rows == 2500
    assert calls[-1] == (2500, 2500)
    assert len(calls) == 3  # one per batch of 1,000
    schema = store.get_layer("sites")
    assert schema.geometry_type is GeometryType.POINT
    types = schema.field_types()
    assert types["name"] is FieldType.TEXT
    assert types["depth"] is FieldType.REAL
    assert types["osm_id"] is FieldType.INTEGER
    page = store.query("sites", FeatureQuery(filters=("osm_id = 7",)))
    (feature,) = page.features
    assert feature.properties["name"] == "site 7"
    assert feature.properties["depth"] == 3.5
    # FlatGeobuf keeps dates as date-times
    assert str(feature.properties["installed"])[:10] == str(date(2020, 1, 2))
    assert feature.geometry is not None
    assert feature.geometry.equals_exact(Point(24.97, 60.1), 1e-9)


def test_polygons_and_multipolygons_mixed_become_a_multipolygon_layer(
    tmp_path: Path, store: GeoPackageStore
) -> None:
    square = Polygon([(0, 0), (1, 0), (1, 1), (0, 1)])
    source = write(
        tmp_path / "mixed.geojson",
        [square, MultiPolygon([square, Polygon([(2, 2), (3, 2), (3, 3)])])],
        "GeoJSON",
        name=["a", "b"],
    )
    result = import_features(store, source)
    assert result.schema.geometry_type is GeometryType.MULTIPOLYGON
    kinds = {
        f.geometry.geom_type for f in store.query("mixed", FeatureQuery()).features if f.geometry
    }
    assert kinds == {"MultiPolygon"}


def test_truly_mixed_geometry_types_are_refused_and_nothing_is_left(
    tmp_path: Path, store: GeoPackageStore
) -> None:
    source = write(
        tmp_path / "mixed.geojson",
        [Point(0, 0), LineString([(0, 0), (1, 1)])],
        "GeoJSON",
        name=["a", "b"],
    )
    with pytest.raises(ImportFeaturesError, match="mixes"):
        import_features(store, source)
    assert store.list_layers() == ()


def test_names_are_made_valid(tmp_path: Path, store: GeoPackageStore) -> None:
    source = write(
        tmp_path / "Road Names.geojson",
        [Point(0, 0)],
        "GeoJSON",
        **{"Street Name": ["x"], "1st": ["y"], "fid": ["z"]},
    )
    result = import_features(store, source)
    assert result.schema.name == "Road_Names"
    assert {f.name for f in result.schema.fields} == {"Street_Name", "f_1st", "fid_"}
    assert valid_name("") == "field"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "not a file GDAL can read"),
        (b"\x00\x01garbage" * 100, "not a file GDAL can read"),
        (b'{"type": "FeatureCollection", "features": [', "not a file GDAL can read"),
    ],
)
def test_unreadable_files_are_a_one_line_error(
    tmp_path: Path, store: GeoPackageStore, content: bytes | None, message: str
) -> None:
    path = tmp_path / "bad.geojson"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImportFeaturesError, match=message):
        import_features(store, path)
    assert store.list_layers() == ()


def test_a_file_with_several_layers_needs_one_chosen(
    tmp_path: Path, store: GeoPackageStore
) -> None:
    path = tmp_path / "two.gpkg"
    for layer in ("a", "b"):
        pyogrio.raw.write(
            path,
            np.array([shapely.to_wkb(Point(0, 0))], dtype=object),
            [np.array(["x"])],
            ["name"],
            crs="EPSG:4326",
            geometry_type="Point",
            layer=layer,
            driver="GPKG",
            append=path.exists(),
        )
    with pytest.raises(ImportFeaturesError, match="2 layers"):
        import_features(store, path)
    with pytest.raises(ImportFeaturesError, match="no layer 'c'"):
        import_features(store, path, layer="c")
    assert import_features(store, path, layer="b").rows == 1
    with pytest.raises(LayerExistsError):
        import_features(store, path, layer="b")
