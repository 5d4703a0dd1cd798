"""GeoPackage tiles specifics: the core tables, other tile matrix sets, extensions, the OGC rules
as GDAL's validator checks them, hostile files, and GDAL reading what we write (and back)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import morecantile
import numpy as np
import pytest
import rasterio
import rasterio.shutil
from morecantile import TileMatrixSet
from rasterio.crs import CRS
from rasterio.transform import Affine

from offmaps.containers.base import TilesetMetadata, tms_to_json
from offmaps.containers.geopackage import GeoPackageReader, GeoPackageWriter
from offmaps.errors import (
    ContainerCorruptError,
    ContainerError,
    ContainerWriteError,
    InvalidTileError,
    UnsupportedTileMatrixSetError,
)
from offmaps.types import BBox, Tile, TileCompression, TileFormat
from tests.tilegen import make_tile, sample_tiles

PNG = TilesetMetadata(tile_format=TileFormat.PNG, name="test")


def write(
    path: Path, tiles: dict[Tile, bytes], meta: TilesetMetadata = PNG, *, table: str = "tiles"
) -> Path:
    with GeoPackageWriter(path, meta, table_name=table) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    return path


def query(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def execute(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osgeo_utils.samples.validate_gpkg", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def world_tiles(
    tms: TileMatrixSet, maxzoom: int, fmt: TileFormat = TileFormat.PNG
) -> dict[Tile, bytes]:
    tiles: dict[Tile, bytes] = {}
    for z in range(tms.minzoom, maxzoom + 1):
        matrix = tms.matrix(z)
        for x in range(matrix.matrixWidth):
            for y in range(matrix.matrixHeight):
                tiles[Tile(x, y, z)] = make_tile(Tile(x, y, z), fmt, size=256)
    return tiles


# --- the core tables ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [TileFormat.PNG, TileFormat.JPEG, TileFormat.WEBP])
def test_gdal_validator_accepts_raster_output(fmt: TileFormat, tmp_path: Path) -> None:
    path = write(
        tmp_path / f"{fmt.value}.gpkg", sample_tiles(fmt), TilesetMetadata(tile_format=fmt)
    )
    done = validate(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


def test_header_and_required_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "a.gpkg", sample_tiles(TileFormat.PNG))
    assert query(path, "PRAGMA application_id") == [(0x47504B47,)]
    assert query(path, "PRAGMA user_version") == [(10200,)]
    srs = {
        row[0]: row
        for row in query(path, "SELECT srs_id, organization, definition FROM gpkg_spatial_ref_sys")
    }
    assert set(srs) == {-1, 0, 4326, 3857}
    assert srs[3857][1] == "EPSG"
    assert "Pseudo-Mercator" in str(srs[3857][2])
    contents = query(path, "SELECT table_name, data_type, identifier, srs_id FROM gpkg_contents")
    assert contents == [("tiles", "tiles", "test", 3857)]
    extent = query(path, "SELECT min_x, min_y, max_x, max_y FROM gpkg_tile_matrix_set")[0]
    assert extent == pytest.approx(
        (-20037508.3427892, -20037508.3427892, 20037508.3427892, 20037508.3427892)
    )


def test_one_tile_matrix_row_per_level_present(tmp_path: Path) -> None:
    tiles = {t: d for t, d in sample_tiles(TileFormat.PNG).items() if t.z in (1, 3)}
    path = write(tmp_path / "a.gpkg", tiles)
    rows = query(
        path,
        "SELECT zoom_level, matrix_width, matrix_height, tile_width, pixel_x_size, pixel_y_size "
        "FROM gpkg_tile_matrix ORDER BY zoom_level",
    )
    assert [row[:4] for row in rows] == [(1, 2, 2, 256), (3, 8, 8, 256)]
    assert rows[0][4] == pytest.approx(78271.51696402048)
    assert rows[1][4] == rows[1][5] == pytest.approx(19567.87924100512)


def test_rows_are_top_down_like_tile_y(tmp_path: Path) -> None:
    tile = Tile(1, 0, 2)
    path = write(tmp_path / "a.gpkg", {tile: make_tile(tile, TileFormat.PNG)})
    assert query(path, "SELECT zoom_level, tile_column, tile_row FROM tiles") == [(2, 1, 0)]


def test_contents_bounds_are_in_the_tile_matrix_set_crs(tmp_path: Path) -> None:
    path = write(tmp_path / "a.gpkg", {Tile(1, 1, 1): make_tile(Tile(1, 1, 1), TileFormat.PNG)})
    bounds = query(path, "SELECT min_x, min_y, max_x, max_y FROM gpkg_contents")[0]
    assert bounds == pytest.approx((0.0, -20037508.3427892, 20037508.3427892, 0.0), abs=1e-6)


def test_webp_registers_the_gpkg_webp_extension(tmp_path: Path) -> None:
    meta = TilesetMetadata(tile_format=TileFormat.WEBP)
    path = write(tmp_path / "a.gpkg", sample_tiles(TileFormat.WEBP, maxzoom=1), meta)
    rows = query(
        path,
        "SELECT table_name, column_name, scope FROM gpkg_extensions "
        "WHERE extension_name = 'gpkg_webp'",
    )
    assert rows == [("tiles", "tile_data", "read-write")]


def test_offmaps_metadata_table_is_a_registered_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "a.gpkg", sample_tiles(TileFormat.PNG, maxzoom=1))
    rows = query(
        path,
        "SELECT table_name, column_name, scope FROM gpkg_extensions "
        "WHERE extension_name = 'offmaps_tileset'",
    )
    assert rows == [("offmaps_tileset", None, "read-write")]
    keys = {
        str(row[0])
        for row in query(path, "SELECT key FROM offmaps_tileset WHERE table_name = 'tiles'")
    }
    assert {"format", "compression", "name", "tms", "tms_id", "bounds", "center"} <= keys


def test_a_tile_written_twice_keeps_its_last_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.gpkg"
    first, second = (
        make_tile(Tile(0, 0, 0), TileFormat.PNG),
        make_tile(Tile(1, 1, 1), TileFormat.PNG),
    )
    with GeoPackageWriter(path, PNG) as writer:
        writer.write_tile(Tile(0, 0, 0), first)
        writer.write_tile(Tile(0, 0, 0), second)
    with GeoPackageReader(path) as reader:
        assert reader.count_tiles() == 1
        assert reader.get_tile(Tile(0, 0, 0)) == second


def test_table_name_can_be_chosen_and_is_checked(tmp_path: Path) -> None:
    path = write(tmp_path / "a.gpkg", sample_tiles(TileFormat.PNG, maxzoom=1), table="basemap")
    assert query(path, "SELECT table_name FROM gpkg_contents") == [("basemap",)]
    with GeoPackageReader(path, table_name="basemap") as reader:
        assert reader.count_tiles() == 5
    with pytest.raises(ContainerCorruptError, match="no tile table 'other'"):
        GeoPackageReader(path, table_name="other")
    for bad in ("gpkg_tiles", "1abc", 'a"b', "offmaps_tileset"):
        with pytest.raises(ContainerError, match="cannot name"):
            GeoPackageWriter(tmp_path / "b.gpkg", PNG, table_name=bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gpkg"]


def test_metadata_round_trips(tmp_path: Path) -> None:
    meta = TilesetMetadata(
        tile_format=TileFormat.JPEG,
        name="Helsinki",
        bounds=BBox(24.5, 60.0, 25.5, 60.5),
        center=(25.0, 60.2, 2),
        minzoom=0,
        maxzoom=3,
        description="a test",
        attribution="© OpenStreetMap contributors",
        extra={"source": "tests"},
    )
    path = write(tmp_path / "a.gpkg", sample_tiles(TileFormat.JPEG), meta)
    with GeoPackageReader(path) as reader:
        assert reader.metadata == meta


# --- vector tiles (draft extension) ---------------------------------------------------------


def test_vector_tiles_follow_the_draft_extension(tmp_path: Path) -> None:
    layers = [
        {
            "id": "points",
            "description": "pts",
            "minzoom": 0,
            "maxzoom": 3,
            "fields": {"x": "Number", "name": "String"},
        }
    ]
    meta = TilesetMetadata(
        tile_format=TileFormat.MVT, tile_compression=TileCompression.GZIP, vector_layers=layers
    )
    tiles = sample_tiles(TileFormat.MVT, TileCompression.GZIP)
    path = write(tmp_path / "a.gpkg", tiles, meta)
    assert query(path, "SELECT data_type FROM gpkg_contents") == [("vector-tiles",)]
    extensions = set(
        query(path, "SELECT table_name, column_name, extension_name FROM gpkg_extensions")
    )
    assert ("tiles", "tile_data", "im_vector_tiles_mapbox") in extensions
    assert ("tiles", "tile_data", "im_vector_tiles") in extensions
    assert ("gpkgext_vt_layers", None, "im_vector_tiles") in extensions
    assert query(path, "SELECT name, description, minzoom, maxzoom FROM gpkgext_vt_layers") == [
        ("points", "pts", 0, 3)
    ]
    assert set(query(path, "SELECT name, type FROM gpkgext_vt_fields")) == {
        ("x", "Number"),
        ("name", "String"),
    }
    with GeoPackageReader(path) as reader:
        assert reader.metadata.vector_layers == layers
        assert dict(reader.iter_tiles()) == tiles
        assert reader.verify() == []


# --- other tile matrix sets -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tms_id", "srs_id", "maxzoom"),
    [
        ("WorldCRS84Quad", 4326, 2),
        ("EuropeanETRS89_LAEAQuad", 3035, 2),
        ("UTM31WGS84Quad", 32631, 2),
    ],
)
def test_other_tile_matrix_sets_round_trip_and_validate(
    tms_id: str, srs_id: int, maxzoom: int, tmp_path: Path
) -> None:
    tms = morecantile.tms.get(tms_id)
    tiles = world_tiles(tms, maxzoom)
    path = write(tmp_path / "a.gpkg", tiles, TilesetMetadata(tile_format=TileFormat.PNG, tms=tms))
    done = validate(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert query(path, "SELECT srs_id FROM gpkg_tile_matrix_set") == [(srs_id,)]
    with GeoPackageReader(path) as reader:
        assert reader.metadata.tms.id == tms_id
        assert tms_to_json(reader.metadata.tms) == tms_to_json(tms)
        assert dict(reader.iter_tiles()) == tiles
    top = tms.matrix(maxzoom)
    with rasterio.open(path) as dataset:
        assert dataset.crs == CRS.from_epsg(srs_id)
        assert dataset.width == top.matrixWidth * 256
        assert dataset.height == top.matrixHeight * 256
        assert len(dataset.overviews(1)) == maxzoom - tms.minzoom


def test_a_custom_geopackage_is_read_without_offmaps_metadata(tmp_path: Path) -> None:
    tms = morecantile.tms.get("EuropeanETRS89_LAEAQuad")
    tiles = world_tiles(tms, 1)
    path = write(tmp_path / "a.gpkg", tiles, TilesetMetadata(tile_format=TileFormat.PNG, tms=tms))
    execute(path, "DELETE FROM offmaps_tileset")
    with GeoPackageReader(path) as reader:
        meta = reader.metadata
        assert meta.tms.id == "GeoPackage_tiles"
        assert meta.tms.crs.srs.endswith("EPSG/0/3035")
        for z in (0, 1):
            ours, original = meta.tms.matrix(z), tms.matrix(z)
            assert ours.cellSize == pytest.approx(original.cellSize)
            assert ours.pointOfOrigin == pytest.approx(original.pointOfOrigin)
            assert ours.matrixWidth == original.matrixWidth
        assert meta.tile_format is TileFormat.PNG
        assert dict(reader.iter_tiles()) == tiles
        assert reader.verify() == []


def test_web_mercator_is_recognised_without_offmaps_metadata(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.gpkg",
        sample_tiles(TileFormat.WEBP),
        TilesetMetadata(tile_format=TileFormat.WEBP),
    )
    execute(path, "DROP TABLE offmaps_tileset")
    with GeoPackageReader(path) as reader:
        assert reader.metadata.tms.id == "WebMercatorQuad"
        assert reader.metadata.tile_format is TileFormat.WEBP
        assert reader.metadata.bounds is not None
        assert reader.metadata.bounds.north == pytest.approx(85.0511, abs=1e-3)


def test_png_and_jpeg_may_mix_unless_offmaps_declared_the_format(tmp_path: Path) -> None:
    path = write(tmp_path / "a.gpkg", sample_tiles(TileFormat.PNG, maxzoom=1))
    jpeg = make_tile(Tile(0, 0, 0), TileFormat.JPEG)
    execute(path, "UPDATE tiles SET tile_data = ? WHERE zoom_level = 0", (jpeg,))
    with GeoPackageReader(path) as reader:
        assert [p for p in reader.verify() if "0/0/0 holds jpg" in p] != []
    execute(path, "DROP TABLE offmaps_tileset")
    with GeoPackageReader(path) as reader:
        assert reader.verify() == []
        assert reader.get_tile(Tile(0, 0, 0)) == jpeg


def _bottom_left_quad() -> TileMatrixSet:
    document = json.loads(tms_to_json(morecantile.tms.get("WebMercatorQuad")))
    document["id"] = "BottomLeftQuad"
    for matrix in document["tileMatrices"]:
        matrix["cornerOfOrigin"] = "bottomLeft"
        matrix["pointOfOrigin"] = [-20037508.3427892, -20037508.3427892]
    return TileMatrixSet.model_validate(document)


@pytest.mark.parametrize(
    ("tms", "reason"),
    [
        (morecantile.tms.get("CanadianNAD83_LCC"), "one origin and extent"),
        (_bottom_left_quad(), "bottomLeft"),
    ],
    ids=["variable-extent", "bottom-left"],
)
def test_unsupported_tile_matrix_sets_are_refused(
    tms: TileMatrixSet, reason: str, tmp_path: Path
) -> None:
    with pytest.raises(UnsupportedTileMatrixSetError, match=reason):
        GeoPackageWriter(tmp_path / "a.gpkg", TilesetMetadata(tile_format=TileFormat.PNG, tms=tms))
    assert list(tmp_path.iterdir()) == []


# --- hostile and broken files ---------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "junk.gpkg"
    path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(ContainerCorruptError, match=r"junk\.gpkg"):
        GeoPackageReader(path)


def test_sqlite_without_geopackage_tables_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "plain.gpkg"
    execute(path, "CREATE TABLE t (a)")
    with pytest.raises(ContainerCorruptError, match=r"plain\.gpkg.*no 'gpkg_contents' table"):
        GeoPackageReader(path)


def test_a_listed_but_missing_tile_table_is_corrupt(tmp_path: Path) -> None:
    path = write(tmp_path / "a.gpkg", sample_tiles(TileFormat.PNG, maxzoom=1))
    execute(path, "DROP TABLE tiles")
    with pytest.raises(ContainerCorruptError, match="listed in gpkg_contents but missing"):
        GeoPackageReader(path)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE tiles SET tile_data = x'' WHERE zoom_level = 0", "tile 0/0/0 has no tile data"),
        (
            "UPDATE tiles SET tile_column = 9 "
            "WHERE zoom_level = 1 AND tile_column = 1 AND tile_row = 1",
            "tile_column=9",
        ),
        ("UPDATE tiles SET zoom_level = 7 WHERE zoom_level = 0", "zoom_level=7"),
    ],
)
def test_a_bad_tile_row_is_named(sql: str, message: str, tmp_path: Path) -> None:
    path = write(tmp_path / "a.gpkg", sample_tiles(TileFormat.PNG, maxzoom=1))
    execute(path, sql)
    with GeoPackageReader(path) as reader:
        with pytest.raises(ContainerCorruptError, match=message):
            dict(reader.iter_tiles())
        problems = reader.verify()
    assert [p for p in problems if message in p] != []


def test_verify_checks_the_header_and_required_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "a.gpkg", sample_tiles(TileFormat.PNG, maxzoom=1))
    execute(path, "PRAGMA application_id = 0")
    execute(path, "DELETE FROM gpkg_spatial_ref_sys WHERE srs_id = -1")
    with GeoPackageReader(path) as reader:
        problems = reader.verify()
    assert any("application_id 0x0" in p for p in problems)
    assert any("srs_id -1" in p for p in problems)


def test_keys_outside_the_matrix_are_invalid(tmp_path: Path) -> None:
    path = write(tmp_path / "a.gpkg", sample_tiles(TileFormat.PNG))
    with GeoPackageReader(path) as reader:
        with pytest.raises(InvalidTileError):
            reader.find_tile(Tile(4, 0, 2))
        with pytest.raises(InvalidTileError):
            reader.find_tile(Tile(0, 0, 25))
        assert reader.find_tile(Tile(5, 5, 12)) is None


def test_a_truncated_file_never_gives_a_raw_sqlite_error(tmp_path: Path) -> None:
    tiles = {t: d + bytes(5000) for t, d in sample_tiles(TileFormat.PNG, maxzoom=4).items()}
    path = write(tmp_path / "a.gpkg", tiles)
    data = path.read_bytes()
    cut = tmp_path / "cut.gpkg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ContainerCorruptError, match=r"cut\.gpkg"):
        read_all(cut)


def read_all(path: Path) -> None:
    with GeoPackageReader(path) as reader:
        for _ in reader.iter_tiles():
            pass


def test_full_disk_is_a_write_error(full_disk: Path) -> None:
    tiles = sample_tiles(TileFormat.PNG, maxzoom=6, duplicate=False)
    with pytest.raises(ContainerWriteError, match="full") as caught:
        write(full_disk / "a.gpkg", {t: d + bytes(20_000) for t, d in tiles.items()})
    assert "a.gpkg" in str(caught.value)
    assert list(full_disk.iterdir()) == []


# --- GDAL as the independent reader and writer ----------------------------------------------


def test_gdal_opens_what_we_write(tmp_path: Path) -> None:
    tms = morecantile.tms.get("WebMercatorQuad")
    path = write(tmp_path / "world.gpkg", world_tiles(tms, 3))
    with rasterio.open(path) as dataset:
        assert dataset.driver == "GPKG"
        assert dataset.crs == CRS.from_epsg(3857)
        assert (dataset.width, dataset.height) == (8 * 256, 8 * 256)
        assert dataset.overviews(1) == [2, 4, 8]
        pixel = [int(dataset.read(band, window=((0, 1), (0, 1)))[0, 0]) for band in (1, 2, 3)]
    assert pixel == [0, 0, 33]  # top-left pixel of tile 3/0/0 as drawn by tilegen


def _gdal_source(tmp_path: Path) -> Path:
    size = 512
    source = tmp_path / "src.tif"
    pixels = np.zeros((3, size, size), dtype="uint8")
    pixels[0] = np.arange(size) % 256
    pixels[2] = 128
    with rasterio.open(
        source,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs=CRS.from_epsg(3857),
        transform=Affine(100_000 / size, 0, 2_700_000, 0, -100_000 / size, 8_500_000),
    ) as dataset:
        dataset.write(pixels)
    return source


def test_we_read_a_google_maps_compatible_geopackage_from_gdal(tmp_path: Path) -> None:
    path = tmp_path / "gdal.gpkg"
    rasterio.shutil.copy(
        _gdal_source(tmp_path),
        path,
        driver="GPKG",
        TILING_SCHEME="GoogleMapsCompatible",
        TILE_FORMAT="PNG",
    )
    with rasterio.open(path, "r+") as dataset:
        dataset.build_overviews([2, 4])
    with GeoPackageReader(path) as reader:
        meta = reader.metadata
        assert meta.tms.id == "WebMercatorQuad"
        assert meta.tile_format is TileFormat.PNG
        assert (meta.minzoom, meta.maxzoom) == (8, 10)
        assert meta.bounds is not None
        assert meta.bounds.west == pytest.approx(24.2545, abs=1e-3)
        tiles = dict(reader.iter_tiles())
        assert len(tiles) == reader.count_tiles() > 0
        assert reader.verify() == []
    cover = {
        Tile(t.x, t.y, t.z)
        for t in morecantile.tms.get("WebMercatorQuad").tiles(*meta.bounds, zooms=[8, 9, 10])
    }
    assert set(tiles) <= cover


def test_we_read_a_custom_tiled_geopackage_from_gdal(tmp_path: Path) -> None:
    path = tmp_path / "gdal.gpkg"
    rasterio.shutil.copy(_gdal_source(tmp_path), path, driver="GPKG", TILE_FORMAT="JPEG")
    with GeoPackageReader(path) as reader:
        meta = reader.metadata
        assert meta.tms.crs.srs.endswith("EPSG/0/3857")
        assert meta.tms.id != "WebMercatorQuad"
        assert meta.tile_format is TileFormat.JPEG
        tiles = dict(reader.iter_tiles())
        assert len(tiles) == 4
        assert reader.verify() == []
        origin = meta.tms.matrix(meta.maxzoom or 0).pointOfOrigin
    assert origin == pytest.approx((2_700_000, 8_500_000))
