"""The sample's sources are built from the real Helsinki OSM extract and fit together."""

from __future__ import annotations

import csv
import gzip
import io
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import mapbox_vector_tile
import numpy as np
import pyogrio
import pytest
from PIL import Image

from offmaps.containers import open_reader
from offmaps.errors import DestinationExistsError, ImportFeaturesError
from offmaps.sample import SampleSources, build_sample_sources
from offmaps.sample._osm import parse_other_tags
from offmaps.types import TileCompression, TileFormat
from tests.data import data_path

GPKG_APPLICATION_ID = 0x47504B47  # "GPKG"
GPKG_1_2_USER_VERSION = 10200


class Built:
    """One build of the sources, and every progress report it made."""

    def __init__(self, sources: SampleSources, reports: list[tuple[float, str]]) -> None:
        self.sources = sources
        self.reports = reports


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    reports: list[tuple[float, str]] = []
    out = tmp_path_factory.mktemp("sample") / "sources"
    sources = build_sample_sources(
        data_path("osm/Helsinki.osm.pbf"), out, progress=lambda f, m: reports.append((f, m))
    )
    return Built(sources, reports)


def _read(path: Path, layer: str) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    meta, _, geometries, fields = pyogrio.raw.read(path, layer=layer)
    return meta, geometries, dict(zip(meta["fields"], fields, strict=True))


def test_sites_are_real_osm_points_with_unique_ids(built: Built) -> None:
    src = built.sources
    info = pyogrio.read_info(src.sites, layer=src.sites_layer)
    assert info["geometry_type"] == "Point"
    assert info["crs"] == "EPSG:4326"
    types = dict(zip(info["fields"], info["ogr_types"], strict=True))
    assert types == {
        "osm_id": "OFTInteger64",
        "kind": "OFTString",
        "name": "OFTString",
        "condition": "OFTString",
        "last_inspected": "OFTDate",
    }
    _, _, columns = _read(src.sites, src.sites_layer)
    ids = columns["osm_id"]
    assert 100 <= len(ids) <= 2000
    assert len(set(ids.tolist())) == len(ids)
    assert all(columns["kind"])
    assert "bench" in set(columns["kind"])


def test_every_inspection_refers_to_an_existing_site(built: Built) -> None:
    src = built.sources
    info = pyogrio.read_info(src.sites, layer="inspections")
    assert info["geometry_type"] is None
    assert info["ogr_types"] == ["OFTInteger64", "OFTDate", "OFTString", "OFTString", "OFTString"]
    _, geometries, rows = _read(src.sites, "inspections")
    assert geometries is None
    _, _, sites = _read(src.sites, src.sites_layer)
    assert set(rows["site_osm_id"].tolist()) <= set(sites["osm_id"].tolist())
    assert len(rows["site_osm_id"]) >= len(sites["osm_id"])
    assert set(rows["result"]) == {"ok", "repair", "replace"}
    assert all(rows["inspector"])
    assert all(rows["notes"])


def test_site_condition_follows_its_latest_inspection(built: Built) -> None:
    src = built.sources
    _, _, sites = _read(src.sites, src.sites_layer)
    _, _, rows = _read(src.sites, "inspections")
    latest: dict[int, np.datetime64] = {}
    for osm_id, day in zip(rows["site_osm_id"].tolist(), rows["inspected_on"], strict=True):
        latest[osm_id] = max(latest.get(osm_id, day), day)
    for osm_id, condition, last in zip(
        sites["osm_id"].tolist(), sites["condition"], sites["last_inspected"], strict=True
    ):
        if osm_id in latest:
            assert last == latest[osm_id]
            assert condition in {"good", "needs_repair", "replace"}
        else:
            assert np.isnat(last)
            assert condition == "unknown"
    assert "unknown" in set(sites["condition"])


def test_streets_are_osm_highways_as_linestrings(built: Built) -> None:
    info = pyogrio.read_info(built.sources.streets, layer="streets")
    assert info["geometry_type"] == "LineString"
    assert info["crs"] == "EPSG:4326"
    assert list(info["fields"]) == ["osm_id", "name", "highway"]
    _, geometries, columns = _read(built.sources.streets, "streets")
    assert len(geometries) > 100
    assert len(set(columns["osm_id"].tolist())) == len(geometries)
    assert all(columns["highway"])


def test_geopackages_are_version_1_2(built: Built) -> None:
    for path in (built.sources.sites, built.sources.streets):
        connection = sqlite3.connect(path)
        try:
            assert connection.execute("PRAGMA application_id").fetchone() == (GPKG_APPLICATION_ID,)
            assert connection.execute("PRAGMA user_version").fetchone() == (GPKG_1_2_USER_VERSION,)
        finally:
            connection.close()


def test_photos_are_jpegs_of_existing_sites(built: Built) -> None:
    src = built.sources
    _, _, sites = _read(src.sites, src.sites_layer)
    with src.photos_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert 12 <= len(rows) <= 100
    assert {int(row["osm_id"]) for row in rows} <= set(sites["osm_id"].tolist())
    for row in rows:
        with Image.open(src.photos_csv.parent / row["file"]) as image:
            assert image.format == "JPEG"
            assert image.size == (320, 240)
            image.verify()


def test_basemap_has_png_tiles_at_every_zoom_12_to_15(built: Built) -> None:
    with open_reader(built.sources.basemap) as reader:
        assert reader.metadata.tile_format is TileFormat.PNG
        assert "OpenStreetMap contributors" in reader.metadata.attribution
        tiles = dict(reader.iter_tiles())
    assert {tile.z for tile in tiles} == {12, 13, 14, 15}
    for data in tiles.values():
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(set(tiles.values())) > len(tiles) // 2


def test_buildings_decode_to_polygons_with_attributes(built: Built) -> None:
    with open_reader(built.sources.buildings) as reader:
        meta = reader.metadata
        tiles = dict(reader.iter_tiles())
    assert meta.tile_format is TileFormat.MVT
    assert meta.tile_compression is TileCompression.GZIP
    assert meta.vector_layers is not None
    assert meta.vector_layers[0]["id"] == "buildings"
    assert {tile.z for tile in tiles} == {13, 14, 15, 16}
    features = 0
    for data in tiles.values():
        decoded = mapbox_vector_tile.decode(gzip.decompress(data))
        assert list(decoded) == ["buildings"]
        assert decoded["buildings"]["extent"] == 4096
        for feature in decoded["buildings"]["features"]:
            assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
            assert isinstance(feature["properties"]["osm_id"], int)
            assert feature["properties"]["building"]
            features += 1
    assert features > 100


def test_progress_rises_from_zero_to_one(built: Built) -> None:
    fractions = [fraction for fraction, _ in built.reports]
    assert fractions[0] == 0.0
    assert fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    assert all(message for _, message in built.reports)


def test_synthetic_data_is_the_same_on_every_build(built: Built, tmp_path: Path) -> None:
    again = build_sample_sources(data_path("osm/Helsinki.osm.pbf"), tmp_path / "again")
    for layer in (built.sources.sites_layer, "inspections"):
        _, _, first = _read(built.sources.sites, layer)
        _, _, second = _read(again.sites, layer)
        for name, values in first.items():
            assert values.tolist() == second[name].tolist(), (layer, name)
    assert again.photos_csv.read_bytes() == built.sources.photos_csv.read_bytes()
    for photo in built.sources.photos_csv.parent.glob("*.jpg"):
        assert (again.photos_csv.parent / photo.name).read_bytes() == photo.read_bytes()


def test_a_missing_extract_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImportFeaturesError, match="no such OpenStreetMap extract"):
        build_sample_sources(tmp_path / "nowhere.osm.pbf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unreadable_extract_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.osm.pbf"
    bad.write_bytes(b"this is not OpenStreetMap data\n" * 10)
    with pytest.raises(ImportFeaturesError, match="not an OpenStreetMap extract"):
        build_sample_sources(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_failure_in_an_existing_empty_folder_empties_it_again(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    bad = tmp_path / "bad.osm.pbf"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ImportFeaturesError):
        build_sample_sources(bad, out)
    assert out.is_dir()
    assert list(out.iterdir()) == []


def test_a_folder_that_is_not_empty_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DestinationExistsError):
        build_sample_sources(data_path("osm/Helsinki.osm.pbf"), out)
    assert (out / "keep.txt").read_text() == "mine"


def test_importing_the_package_does_not_load_mapnik_or_pillow() -> None:
    code = (
        "import sys, offmaps.sample, offmaps.sample.render; "
        "loaded = {'mapnik', 'PIL', 'pyogrio'} & set(sys.modules); "
        "sys.exit(', '.join(sorted(loaded)) or 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("text", "tags"),
    [
        (None, {}),
        ("", {}),
        ('"amenity"=>"bench"', {"amenity": "bench"}),
        ('"a"=>"1","b:c"=>"x, y"', {"a": "1", "b:c": "x, y"}),
        ('"note"=>"say \\"hi\\"","path"=>"C:\\\\x"', {"note": 'say "hi"', "path": "C:\\x"}),
        ('"arrow"=>"a=>b","pyörä"=>"jep"', {"arrow": "a=>b", "pyörä": "jep"}),
        ('"broken"=>', {}),
        ('"x"=>NULL,"y"=>"2"', {"y": "2"}),
    ],
)
def test_other_tags_are_parsed_robustly(text: str | None, tags: dict[str, str]) -> None:
    assert parse_other_tags(text) == tags


def test_pillow_reads_the_basemap_tiles(built: Built) -> None:
    with open_reader(built.sources.basemap) as reader:
        data = next(iter(dict(reader.iter_tiles()).values()))
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (256, 256)
