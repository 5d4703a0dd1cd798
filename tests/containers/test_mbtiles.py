"""MBTiles 1.3 specifics: TMS rows, the metadata table, the deduplicated schema, hostile files,
and GDAL reading what we write (and the other way round)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import morecantile
import numpy as np
import pytest
import rasterio
import rasterio.shutil
from hypothesis import given
from hypothesis import strategies as st
from rasterio.crs import CRS
from rasterio.transform import Affine

from offmaps.containers import mbtiles
from offmaps.containers.base import TilesetMetadata
from offmaps.containers.mbtiles import MBTilesReader, MBTilesWriter, content_id, tms_row
from offmaps.errors import (
    ContainerCorruptError,
    ContainerError,
    ContainerWriteError,
    UnsupportedTileFormatError,
    UnsupportedTileMatrixSetError,
)
from offmaps.types import BBox, Tile, TileCompression, TileFormat
from tests.tilegen import make_tile, sample_tiles

PNG = TilesetMetadata(tile_format=TileFormat.PNG, name="test")


def write(
    path: Path, tiles: dict[Tile, bytes], meta: TilesetMetadata = PNG, *, dedup: bool = False
) -> Path:
    with MBTilesWriter(path, meta, dedup=dedup) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    return path


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def metadata_table(path: Path) -> dict[str, str]:
    return {str(k): str(v) for k, v in query(path, "SELECT name, value FROM metadata")}


# --- rows and schema ------------------------------------------------------------------------


@given(st.integers(0, 30).flatmap(lambda z: st.tuples(st.just(z), st.integers(0, 2**z - 1))))
def test_tms_row_flip_is_its_own_inverse(zy: tuple[int, int]) -> None:
    z, y = zy
    assert 0 <= tms_row(y, z) < 2**z
    assert tms_row(tms_row(y, z), z) == y


def test_rows_are_stored_bottom_up(tmp_path: Path) -> None:
    tile = Tile(1, 0, 2)
    path = write(tmp_path / "a.mbtiles", {tile: make_tile(tile, TileFormat.PNG)})
    assert query(path, "SELECT zoom_level, tile_column, tile_row FROM tiles") == [(2, 1, 3)]


def test_plain_schema_has_a_unique_tile_index_and_the_application_id(tmp_path: Path) -> None:
    path = write(tmp_path / "a.mbtiles", sample_tiles(TileFormat.PNG))
    indexes = query(path, "SELECT name, sql FROM sqlite_master WHERE type = 'index'")
    assert any("UNIQUE" in str(sql) and "tiles" in str(sql) for _, sql in indexes)
    assert query(path, "PRAGMA application_id") == [(0x4D504258,)]


def test_finished_file_is_a_plain_database_with_nothing_beside_it(tmp_path: Path) -> None:
    path = write(tmp_path / "a.mbtiles", sample_tiles(TileFormat.PNG))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mbtiles"]
    assert query(path, "PRAGMA journal_mode") == [("delete",)]
    assert query(path, "PRAGMA integrity_check") == [("ok",)]


def test_a_tile_written_twice_keeps_its_last_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.mbtiles"
    first, second = (
        make_tile(Tile(0, 0, 0), TileFormat.PNG),
        make_tile(Tile(1, 1, 1), TileFormat.PNG),
    )
    with MBTilesWriter(path, PNG) as writer:
        writer.write_tile(Tile(0, 0, 0), first)
        writer.write_tile(Tile(0, 0, 0), second)
    with MBTilesReader(path) as reader:
        assert reader.count_tiles() == 1
        assert reader.get_tile(Tile(0, 0, 0)) == second


def test_other_tile_matrix_sets_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    meta = TilesetMetadata(tile_format=TileFormat.PNG, tms=morecantile.tms.get("WorldCRS84Quad"))
    with pytest.raises(UnsupportedTileMatrixSetError, match="WebMercatorQuad"):
        MBTilesWriter(tmp_path / "a.mbtiles", meta)
    assert list(tmp_path.iterdir()) == []


# --- metadata -------------------------------------------------------------------------------


def test_metadata_table_holds_the_spec_keys(tmp_path: Path) -> None:
    meta = TilesetMetadata(
        tile_format=TileFormat.JPEG,
        name="Helsinki",
        description="a test",
        attribution="© OpenStreetMap contributors",
        extra={"scheme_note": "kept", "type": "overlay"},
    )
    tiles = sample_tiles(TileFormat.JPEG, maxzoom=2)
    table = metadata_table(write(tmp_path / "a.mbtiles", tiles, meta))
    assert table["name"] == "Helsinki"
    assert table["format"] == "jpg"
    assert (table["minzoom"], table["maxzoom"]) == ("0", "2")
    west, south, east, north = (float(v) for v in table["bounds"].split(","))
    assert -180 <= west < east <= 180
    assert -85.06 <= south < north <= 85.06
    lon, lat, zoom = table["center"].split(",")
    assert west <= float(lon) <= east
    assert south <= float(lat) <= north
    assert zoom == "0"
    assert table["description"] == "a test"
    assert table["attribution"] == "© OpenStreetMap contributors"
    assert table["type"] == "overlay"  # an extra key overrides the default "baselayer"
    assert table["version"] == "1"
    assert table["scheme_note"] == "kept"
    unique = query(tmp_path / "a.mbtiles", "SELECT sql FROM sqlite_master WHERE name = 'name'")
    assert "UNIQUE" in str(unique[0][0])


def test_metadata_round_trips_through_the_reader(tmp_path: Path) -> None:
    layers = [{"id": "points", "fields": {"x": "Number"}, "minzoom": 0, "maxzoom": 3}]
    meta = TilesetMetadata(
        tile_format=TileFormat.MVT,
        tile_compression=TileCompression.GZIP,
        name="vector",
        bounds=BBox(24.5, 60.0, 25.5, 60.5),
        center=(25.0, 60.2, 2),
        minzoom=0,
        maxzoom=3,
        attribution="osm",
        vector_layers=layers,
        extra={"json": json.dumps({"tilestats": {"layerCount": 1}}), "generator": "offmaps"},
    )
    path = write(tmp_path / "a.mbtiles", sample_tiles(TileFormat.MVT, TileCompression.GZIP), meta)
    document = json.loads(metadata_table(path)["json"])
    assert document == {"tilestats": {"layerCount": 1}, "vector_layers": layers}
    with MBTilesReader(path) as reader:
        got = reader.metadata
    assert got.tile_format is TileFormat.MVT
    assert got.tile_compression is TileCompression.GZIP
    assert got.bounds == meta.bounds
    assert got.center == meta.center
    assert got.vector_layers == layers
    assert got.attribution == "osm"
    assert got.extra["generator"] == "offmaps"
    assert json.loads(got.extra["json"]) == json.loads(metadata_table(path)["json"])


def test_pbf_gets_a_vector_layers_json_even_when_unknown(tmp_path: Path) -> None:
    meta = TilesetMetadata(tile_format=TileFormat.MVT, tile_compression=TileCompression.GZIP)
    path = write(tmp_path / "a.mbtiles", sample_tiles(TileFormat.MVT, TileCompression.GZIP), meta)
    assert json.loads(metadata_table(path)["json"]) == {"vector_layers": []}
    with MBTilesReader(path) as reader:
        assert reader.verify() == []


def test_plain_protobuf_tiles_are_read_as_uncompressed(tmp_path: Path) -> None:
    meta = TilesetMetadata(tile_format=TileFormat.MVT)
    path = write(tmp_path / "a.mbtiles", sample_tiles(TileFormat.MVT), meta)
    assert metadata_table(path)["format"] == "pbf"
    with MBTilesReader(path) as reader:
        assert reader.metadata.tile_compression is TileCompression.NONE


def test_media_type_formats_are_understood(tmp_path: Path) -> None:
    path = write(tmp_path / "a.mbtiles", sample_tiles(TileFormat.PNG, maxzoom=1))
    conn = sqlite3.connect(path)
    conn.execute("UPDATE metadata SET value = 'image/png' WHERE name = 'format'")
    conn.commit()
    conn.close()
    with MBTilesReader(path) as reader:
        assert reader.metadata.tile_format is TileFormat.PNG


# --- deduplicated schema --------------------------------------------------------------------


def test_dedup_schema_stores_identical_tiles_once(tmp_path: Path) -> None:
    tiles = sample_tiles(TileFormat.PNG)  # holds byte-identical duplicates
    path = write(tmp_path / "a.mbtiles", tiles, dedup=True)
    rows = query(
        path, "SELECT name, type FROM sqlite_master WHERE name IN ('map', 'images', 'tiles')"
    )
    kinds = {str(name): str(kind) for name, kind in rows}
    assert kinds == {"map": "table", "images": "table", "tiles": "view"}
    ids = {str(row[0]) for row in query(path, "SELECT tile_id FROM images")}
    assert ids == {content_id(data) for data in tiles.values()}
    assert len(ids) < len(tiles)
    assert query(path, "SELECT count(*) FROM map") == [(len(tiles),)]
    with MBTilesReader(path) as reader:
        assert dict(reader.iter_tiles()) == tiles
        assert reader.verify() == []


def test_dedup_overwrite_drops_images_no_tile_uses(tmp_path: Path) -> None:
    path = tmp_path / "a.mbtiles"
    old, new = make_tile(Tile(0, 0, 0), TileFormat.PNG), make_tile(Tile(1, 0, 1), TileFormat.PNG)
    with MBTilesWriter(path, PNG, dedup=True) as writer:
        writer.write_tile(Tile(0, 0, 0), old)
        writer.write_tile(Tile(0, 0, 0), new)
    assert query(path, "SELECT tile_id FROM images") == [(content_id(new),)]
    with MBTilesReader(path) as reader:
        assert reader.get_tile(Tile(0, 0, 0)) == new


def test_dedup_refuses_a_sha256_collision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mbtiles, "content_id", lambda data: "0" * 64)
    with (
        pytest.raises(ContainerWriteError, match="same SHA-256"),
        MBTilesWriter(tmp_path / "a.mbtiles", PNG, dedup=True) as writer,
    ):
        writer.write_tile(Tile(0, 0, 0), make_tile(Tile(0, 0, 0), TileFormat.PNG))
        writer.write_tile(Tile(0, 0, 1), make_tile(Tile(0, 0, 1), TileFormat.PNG))
    assert list(tmp_path.iterdir()) == []


# --- hostile and broken files ---------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "junk.mbtiles"
    path.write_bytes(b"this is not SQLite at all" * 100)
    with pytest.raises(ContainerCorruptError, match=r"junk\.mbtiles"):
        MBTilesReader(path)


def test_a_missing_file_is_a_container_error(tmp_path: Path) -> None:
    with pytest.raises(ContainerError, match="does not exist"):
        MBTilesReader(tmp_path / "none.mbtiles")


@pytest.mark.parametrize("table", ["tiles", "metadata"])
def test_missing_tables_are_corrupt(tmp_path: Path, table: str) -> None:
    path = write(tmp_path / "a.mbtiles", sample_tiles(TileFormat.PNG, maxzoom=1))
    conn = sqlite3.connect(path)
    conn.execute(f"DROP TABLE {table}")
    conn.commit()
    conn.close()
    with pytest.raises(ContainerCorruptError, match=rf"a\.mbtiles.*no '{table}' table"):
        MBTilesReader(path)


def test_missing_format_without_tiles_is_corrupt(tmp_path: Path) -> None:
    path = write(tmp_path / "a.mbtiles", {})
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM metadata")
    conn.commit()
    conn.close()
    with pytest.raises(ContainerCorruptError, match="no 'format'"):
        MBTilesReader(path)


def test_missing_format_is_told_from_the_tiles_and_reported_by_verify(tmp_path: Path) -> None:
    path = write(tmp_path / "a.mbtiles", sample_tiles(TileFormat.WEBP, maxzoom=1))
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM metadata WHERE name IN ('format', 'name')")
    conn.commit()
    conn.close()
    with MBTilesReader(path) as reader:
        assert reader.metadata.tile_format is TileFormat.WEBP
        problems = reader.verify()
    assert any("'format' is missing" in p for p in problems)
    assert any("'name' is missing" in p for p in problems)


def test_unknown_format_is_unsupported(tmp_path: Path) -> None:
    path = write(tmp_path / "a.mbtiles", {})
    conn = sqlite3.connect(path)
    conn.execute("UPDATE metadata SET value = 'tiff' WHERE name = 'format'")
    conn.commit()
    conn.close()
    with pytest.raises(UnsupportedTileFormatError, match="tiff"):
        MBTilesReader(path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("(1, 0, 0, NULL)", "tile 1/0/1 has no tile data"),
        ("(1, 5, 0, x'89')", "tile_column=5"),
        ("(-1, 0, 0, x'89')", "zoom_level=-1"),
        ("('a', 0, 0, x'89')", "zoom_level='a'"),
    ],
)
def test_a_bad_tile_row_is_named(tmp_path: Path, row: str, message: str) -> None:
    path = write(tmp_path / "a.mbtiles", {Tile(0, 0, 0): make_tile(Tile(0, 0, 0), TileFormat.PNG)})
    conn = sqlite3.connect(path)
    conn.execute(f"INSERT INTO tiles VALUES {row}")
    conn.commit()
    conn.close()
    with MBTilesReader(path) as reader:
        with pytest.raises(ContainerCorruptError, match=message):
            dict(reader.iter_tiles())
        problems = reader.verify()
    assert len(problems) == 1
    assert message in problems[0]


def test_a_truncated_file_never_gives_a_raw_sqlite_error(tmp_path: Path) -> None:
    tiles = {t: d + bytes(5000) for t, d in sample_tiles(TileFormat.PNG, maxzoom=4).items()}
    path = write(tmp_path / "a.mbtiles", tiles)
    data = path.read_bytes()
    cut = tmp_path / "cut.mbtiles"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ContainerCorruptError, match=r"cut\.mbtiles"):
        read_all(cut)


def read_all(path: Path) -> None:
    with MBTilesReader(path) as reader:
        for _ in reader.iter_tiles():
            pass


def test_verify_finds_tiles_that_do_not_match_the_format(tmp_path: Path) -> None:
    path = write(tmp_path / "a.mbtiles", sample_tiles(TileFormat.PNG, maxzoom=1))
    conn = sqlite3.connect(path)
    conn.execute(
        "UPDATE tiles SET tile_data = ? WHERE zoom_level = 0",
        (make_tile(Tile(0, 0, 0), TileFormat.JPEG),),
    )
    conn.commit()
    conn.close()
    with MBTilesReader(path) as reader:
        problems = reader.verify()
    assert len(problems) == 1
    assert "tile 0/0/0 holds jpg" in problems[0]


def test_reader_opens_read_only_and_changes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "a.mbtiles", sample_tiles(TileFormat.PNG))
    before = path.read_bytes()
    with MBTilesReader(path) as reader:
        assert reader.verify() == []
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader._conn.execute("DELETE FROM tiles")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mbtiles"]


def test_full_disk_is_a_write_error(full_disk: Path) -> None:
    tiles = sample_tiles(TileFormat.PNG, maxzoom=6, duplicate=False)
    with pytest.raises(ContainerWriteError, match="full") as caught:
        write(full_disk / "a.mbtiles", {t: d + bytes(20_000) for t, d in tiles.items()})
    assert "a.mbtiles" in str(caught.value)
    assert list(full_disk.iterdir()) == []


# --- GDAL as the independent reader and writer ----------------------------------------------


def test_gdal_opens_what_we_write(tmp_path: Path) -> None:
    tiles = {
        Tile(x, y, z): make_tile(Tile(x, y, z), TileFormat.PNG, size=256)
        for z in range(4)
        for x in range(2**z)
        for y in range(2**z)
    }
    path = write(tmp_path / "world.mbtiles", tiles, dedup=True)
    with rasterio.open(path) as dataset:
        assert dataset.driver == "MBTiles"
        assert dataset.crs == CRS.from_epsg(3857)
        assert (dataset.width, dataset.height) == (8 * 256, 8 * 256)
        assert dataset.overviews(1) == [2, 4, 8]
        # The top-left pixel of the top-left tile at the highest level, as drawn by tilegen.
        red, green, blue = (
            int(dataset.read(band, window=((0, 1), (0, 1)))[0, 0]) for band in (1, 2, 3)
        )
    assert (red, green, blue) == (0, 0, 33)


def test_we_read_what_gdal_writes(tmp_path: Path) -> None:
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
    path = tmp_path / "gdal.mbtiles"
    rasterio.shutil.copy(source, path, driver="MBTiles")
    with MBTilesReader(path) as reader:
        meta = reader.metadata
        assert meta.tile_format is TileFormat.PNG
        assert meta.tms.id == "WebMercatorQuad"
        assert meta.bounds is not None
        assert meta.bounds.west == pytest.approx(24.2545, abs=1e-3)
        assert meta.bounds.north == pytest.approx(60.4473, abs=1e-3)
        tiles = dict(reader.iter_tiles())
        assert len(tiles) == reader.count_tiles() > 0
        assert meta.maxzoom is not None
        assert {t.z for t in tiles} == {meta.maxzoom}
        assert reader.verify() == []
    # GDAL's rows are bottom-up too: flipped back, the tiles are those covering the bounds.
    cover = {
        Tile(t.x, t.y, t.z)
        for t in morecantile.tms.get("WebMercatorQuad").tiles(*meta.bounds, zooms=[meta.maxzoom])
    }
    assert set(tiles) <= cover


def test_no_zooms_means_no_tiles(tmp_path: Path) -> None:
    path = write(tmp_path / "a.mbtiles", sample_tiles(TileFormat.PNG))
    with MBTilesReader(path) as reader:
        assert list(reader.iter_tiles(zooms=[])) == []
