"""The bad input of cache export and import, through the CLI: each is one line and exit code 1
(or tiles listed by key while the rest goes on), never a traceback, and nothing half-written.

Cases of issue 17's list: a ``conf.xml`` that lies about the tiles (its tile size, levels, origin,
storage, format); tiling schemes that differ in each field (CRS, origin, tile size, a level's
resolution); JPEG/PNG tiles with the wrong magic bytes; hostile archives (MBTiles rows with
negative, overflowing or out-of-matrix keys, PMTiles headers declaring huge sections, truncated
files, a truncated compact bundle); an area away from an ArcGIS cache's extent; an existing, a
read-only and a full destination.
"""

from __future__ import annotations

import json
import sqlite3
import struct
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from offmaps.cli import main
from offmaps.containers import TilesetMetadata, open_reader, open_writer
from offmaps.containers.base import web_mercator_quad
from offmaps.containers.compact import EsriCompactWriter
from offmaps.containers.exploded import EsriExplodedWriter
from offmaps.types import Tile, TileFormat
from tests.containers.test_esri_conf import BILLION_LAUGHS, arcgis_cache, set_text
from tests.tilegen import make_tile

# level 2, 4 x 4 tiles; AREA cuts the 4 tiles of columns 1-2, rows 1-2 (-90..90 lon, +-66.5 lat)
# a little inside their outer edges: they are decoded and clipped
TILES = {
    Tile(x, y, 2): make_tile(Tile(x, y, 2), TileFormat.PNG, size=256)
    for x in range(4)
    for y in range(4)
}
AREA = "-89,-66,89,66"
Edit = Callable[[ET.Element], None]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def destination(kind: str, folder: Path) -> str:
    """``o.mbtiles`` or ``esri-compact:o`` placed in ``folder``."""
    prefix, colon, name = kind.rpartition(":")
    return f"{prefix}{colon}{folder / name}"


def one_line(err: str, start: str) -> None:
    assert err.startswith(start), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.fixture
def data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """A data folder with cache ``c`` (PNG, WebMercatorQuad), holding no tile."""
    base = tmp_path / "base.mbtiles"
    with open_writer(str(base), TilesetMetadata(TileFormat.PNG)) as writer:
        writer.write_tile(Tile(0, 0, 0), make_tile(Tile(0, 0, 0), TileFormat.PNG))
    folder = tmp_path / "data"
    folder.mkdir()
    assert (
        run(capsys, "cache", "create", "c", "--archive", str(base), "--data", str(folder))[0] == 0
    )
    return str(folder)


def imported_into_empty(capsys: pytest.CaptureFixture[str], data: str, tmp_path: Path) -> int:
    """Import 16 good tiles into ``c``: how many were new (16 when nothing was there)."""
    good = tmp_path / "good.mbtiles"
    with open_writer(str(good), TilesetMetadata(TileFormat.PNG)) as writer:
        for tile, tile_data in TILES.items():
            writer.write_tile(tile, tile_data)
    code, out, err = run(capsys, "cache", "import", str(good), "c", "--data", data, "--json")
    assert code == 0, err
    new: int = json.loads(out)["new"]
    return new


def arcgis(
    folder: Path,
    edit: Edit | None = None,
    tiles: dict[Tile, bytes] = TILES,
    tile_format: TileFormat = TileFormat.PNG,
) -> str:
    """An ArcGIS-made compact cache (only conf.xml and conf.cdi describe it), as a location."""
    meta = TilesetMetadata(tile_format, bounds=None)
    return f"esri-compact:{arcgis_cache(EsriCompactWriter, folder, meta, tiles, edit)}"


def drop_lods_after(level: int) -> Edit:
    def edit(root: ET.Element) -> None:
        lods = root.find("TileCacheInfo/LODInfos")
        assert lods is not None
        for lod in lods.findall("LODInfo")[level + 1 :]:
            lods.remove(lod)

    return edit


def both(*edits: Edit) -> Edit:
    def edit(root: ET.Element) -> None:
        for one in edits:
            one(root)

    return edit


def billion_laughs(folder: Path) -> None:
    (folder / "conf.xml").write_text(BILLION_LAUGHS, "utf-8")


LIES: list[tuple[str, Edit, str]] = [
    (
        "tile size",
        both(set_text("TileCacheInfo/TileCols", "512"), set_text("TileCacheInfo/TileRows", "512")),
        "TileCols and TileRows say tiles are 512x512 pixels, but tile 2/0/0 is 256x256",
    ),
    ("levels", drop_lods_after(1), "TileCacheInfo/LODInfos list levels 0-1, but the cache holds"),
    ("NaN origin", set_text("TileCacheInfo/TileOrigin/X", "NaN"), "TileOrigin/X 'NaN' is not"),
    ("huge origin", set_text("TileCacheInfo/TileOrigin/Y", "1e300"), "TileOrigin/Y '1e300' is"),
    (
        "storage",
        set_text("CacheStorageInfo/StorageFormat", "esriMapCacheStorageModeExploded"),
        "CacheStorageInfo/StorageFormat is esriMapCacheStorageModeExploded; this reader reads",
    ),
    ("CRS", set_text("TileCacheInfo/SpatialReference/LatestWKID", "0x3857"), "LatestWKID '0x3857'"),
]


@pytest.mark.parametrize(("case", "edit", "message"), LIES, ids=[case for case, _, _ in LIES])
def test_a_lying_conf_xml_stops_an_export_before_any_tile_is_copied(
    case: str, edit: Edit, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = arcgis(tmp_path / "arcgis", edit)
    for dst in ("out.mbtiles", "esri-exploded:out", "out.pmtiles"):
        code, out, err = run(capsys, "cache", "export", src, destination(dst, tmp_path))
        assert (code, out) == (1, "")
        one_line(err, f"ContainerCorruptError: {tmp_path / 'arcgis' / 'conf.xml'}: ")
        assert message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arcgis"]


@pytest.mark.parametrize(("case", "edit", "message"), LIES, ids=[case for case, _, _ in LIES])
def test_a_lying_conf_xml_stops_an_import_before_any_tile_is_stored(
    case: str,
    edit: Edit,
    message: str,
    data: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = arcgis(tmp_path / "arcgis", edit)
    code, out, err = run(capsys, "cache", "import", src, "c", "--data", data)
    assert (code, out) == (1, "")
    one_line(err, "ContainerCorruptError: ")
    assert message in err
    assert imported_into_empty(capsys, data, tmp_path) == len(TILES)


def test_a_hostile_conf_xml_is_refused_unexpanded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = arcgis(tmp_path / "arcgis")
    billion_laughs(tmp_path / "arcgis")
    code, _, err = run(capsys, "cache", "export", src, str(tmp_path / "o.mbtiles"))
    assert code == 1
    one_line(err, "ContainerCorruptError: ")
    assert "document type declaration (DTD) is refused" in err
    (tmp_path / "arcgis" / "conf.cdi").write_bytes(b" " * (2**20 + 1))
    code, _, err = run(capsys, "cache", "export", src, str(tmp_path / "o.mbtiles"))
    one_line(err, f"ContainerCorruptError: {tmp_path / 'arcgis' / 'conf.cdi'} is 1048577 bytes")
    assert not (tmp_path / "o.mbtiles").exists()


def with_jpeg_tiles(*tiles: Tile) -> dict[Tile, bytes]:
    return TILES | {tile: make_tile(tile, TileFormat.JPEG, size=256) for tile in tiles}


def test_tiles_whose_bytes_contradict_conf_xml_are_listed_and_the_rest_exported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = arcgis(tmp_path / "arcgis", tiles=with_jpeg_tiles(Tile(1, 1, 2), Tile(2, 2, 2)))
    dst = str(tmp_path / "o.gpkg")
    code, _, err = run(capsys, "cache", "export", src, dst, "--bbox", AREA)
    assert code == 0, err
    assert "failed: tile 2/1/1 should be png but its bytes are jpg" in err
    assert "failed: tile 2/2/2 should be png but its bytes are jpg" in err
    assert "2 tiles written" in err
    assert "2 failed" in err


def test_a_conf_xml_whose_format_no_tile_has_exports_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = arcgis(tmp_path / "arcgis", set_text("TileImageInfo/CacheTileFormat", "JPEG"))
    dst = tmp_path / "o.mbtiles"
    code, _, err = run(capsys, "cache", "export", src, str(dst), "--bbox", AREA)
    assert code == 1
    one_line(err, "ContainerError: nothing to export: of the 4 tiles")
    assert "should be jpg but its bytes are png" in err
    assert not dst.exists()


def test_without_an_area_tiles_of_another_format_are_listed_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = arcgis(tmp_path / "arcgis", tiles=with_jpeg_tiles(Tile(1, 1, 2)))
    code, _, err = run(capsys, "cache", "export", src, str(tmp_path / "o.mbtiles"))
    assert code == 0, err
    assert "failed: tile 2/1/1 should be png but its bytes are jpg" in err


def test_an_exploded_cache_whose_files_contradict_conf_xml_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit = set_text("TileImageInfo/CacheTileFormat", "JPEG")
    meta = TilesetMetadata(TileFormat.PNG)
    folder = arcgis_cache(EsriExplodedWriter, tmp_path / "arcgis", meta, TILES, edit)
    code, _, err = run(
        capsys, "cache", "export", f"esri-exploded:{folder}", str(tmp_path / "o.gpkg")
    )
    assert code == 1
    one_line(err, f"ContainerCorruptError: {folder / 'conf.xml'}: TileImageInfo/CacheTileFormat")
    assert "says jpg tiles, but the first tile file is" in err
    assert err.strip().endswith("C00000000.png")


def test_a_bbox_wider_than_half_the_world_is_that_area(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = arcgis(tmp_path / "arcgis")
    code, _, err = run(
        capsys,
        "cache",
        "export",
        src,
        str(tmp_path / "o.gpkg"),
        "--bbox",
        "-100,-60,100,60",
    )
    assert code == 0, err
    with open_reader(str(tmp_path / "o.gpkg")) as reader:
        columns = {tile.x for tile, _ in reader.iter_tiles()}
    # columns 1 and 2 (-90..90 degrees) whole, 0 and 3 clipped to -100..-90 and 90..100; the
    # complement (beyond +-100 degrees) would hold columns 0 and 3 only
    assert columns == {0, 1, 2, 3}


def test_tiles_whose_bytes_contradict_conf_xml_are_listed_and_the_rest_imported(
    data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = arcgis(tmp_path / "arcgis", tiles=with_jpeg_tiles(Tile(3, 0, 2)))
    code, _, err = run(capsys, "cache", "import", src, "c", "--data", data)
    assert code == 1
    assert "failed: tile 2/3/0 should be png but its bytes are jpg" in err
    assert "15 tiles imported into c (15 new" in err
    assert err.splitlines()[-1].startswith("CacheError: 1 tiles of ")


WEB_MERCATOR_RESOLUTION_2 = web_mercator_quad().matrix(2).cellSize
SCHEMES: list[tuple[str, Edit, str, int]] = [
    (
        "CRS",
        both(
            set_text("TileCacheInfo/SpatialReference/WKID", "3395"),
            set_text("TileCacheInfo/SpatialReference/LatestWKID", "3395"),
        ),
        "different CRS: EPSG:3857 and EPSG:3395",
        256,
    ),
    ("origin", set_text("TileCacheInfo/TileOrigin/X", "-20037000"), "level 0: origin", 256),
    (
        "tile size",
        both(set_text("TileCacheInfo/TileCols", "512"), set_text("TileCacheInfo/TileRows", "512")),
        "level 0: tile size 256x256 vs 512x512",
        512,
    ),
    (
        "a level's resolution",
        lambda root: root.findall("TileCacheInfo/LODInfos/LODInfo/Resolution")[2].__setattr__(
            "text", repr(WEB_MERCATOR_RESOLUTION_2 * 1.001)
        ),
        "level 2: cell size",
        256,
    ),
]


@pytest.mark.parametrize(
    ("field", "edit", "message", "size"), SCHEMES, ids=[field for field, *_ in SCHEMES]
)
def test_a_tiling_scheme_differing_in_one_field_is_refused_naming_it(
    field: str,
    edit: Edit,
    message: str,
    size: int,
    data: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tiles = {tile: make_tile(tile, TileFormat.PNG, size=size) for tile in TILES}
    src = arcgis(tmp_path / "arcgis", edit, tiles=tiles)
    code, out, err = run(capsys, "cache", "import", src, "c", "--data", data)
    assert (code, out) == (1, "")
    one_line(
        err, "IncompatibleTileMatrixSetError: tile matrix sets WebMercatorQuad and EsriCacheInfo: "
    )
    assert message in err
    assert imported_into_empty(capsys, data, tmp_path) == len(TILES)


def test_an_area_away_from_conf_cdi_extent_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiles = {
        Tile(x, y, 4): make_tile(Tile(x, y, 4), TileFormat.PNG, size=256)
        for x in (8, 9)
        for y in (5,)
    }  # lon 0-45, lat 40.9-55.8
    meta = TilesetMetadata(TileFormat.PNG)
    folder = arcgis_cache(EsriExplodedWriter, tmp_path / "arcgis", meta, tiles)
    code, _, err = run(
        capsys,
        "cache",
        "export",
        f"esri-exploded:{folder}",
        str(tmp_path / "o.mbtiles"),
        "--bbox",
        "100,-40,120,-20",
    )
    assert code == 1
    one_line(err, "InvalidAOIError: the area of interest does not meet the source's tiles")
    code, _, err = run(
        capsys,
        "cache",
        "export",
        f"esri-exploded:{folder}",
        str(tmp_path / "o.mbtiles"),
        "--bbox",
        "10,45,20,50",
    )  # no --zooms: the levels come from the level folders
    assert code == 0, err
    assert "2 tiles written" in err or "1 tiles written" in err


def png_tiles_with_wrong_magic() -> dict[Tile, bytes]:
    tiles = dict(TILES)
    tiles[Tile(1, 1, 2)] = b"GIF89a" + bytes(100)  # another image format
    tiles[Tile(2, 1, 2)] = make_tile(Tile(2, 1, 2), TileFormat.JPEG)  # JPEG in a PNG set
    tiles[Tile(1, 2, 2)] = TILES[Tile(1, 2, 2)][:40]  # a PNG cut short
    return tiles


def test_tiles_with_the_wrong_magic_bytes_are_listed_by_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "s.mbtiles"
    with open_writer(str(src), TilesetMetadata(TileFormat.PNG)) as writer:
        for tile, tile_data in png_tiles_with_wrong_magic().items():
            writer.write_tile(tile, tile_data)
    code, out, _ = run(
        capsys,
        "cache",
        "export",
        str(src),
        f"esri-compact:{tmp_path / 'o'}",
        "--bbox",
        AREA,
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    failed = {tuple(f["tile"]): f["error"] for f in result["failed"]}
    assert (
        failed[(2, 1, 1)] == "tile 2/1/1 should be png but its bytes are neither PNG, JPEG nor WebP"
    )
    assert failed[(2, 2, 1)] == "tile 2/2/1 should be png but its bytes are jpg"
    assert failed[(2, 1, 2)].startswith("tile 2/1/2")  # a PNG cut short: it does not decode
    assert (result["written"], result["failures"]) == (1, 3)


def hostile_mbtiles(path: Path, row: tuple[int, int, int]) -> str:
    with open_writer(str(path), TilesetMetadata(TileFormat.PNG)) as writer:
        for tile, tile_data in TILES.items():
            writer.write_tile(tile, tile_data)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO tiles VALUES (?, ?, ?, ?)", (*row, TILES[Tile(0, 0, 2)]))
    db.close()
    return str(path)


@pytest.mark.parametrize(
    "row",
    [(2, -1, 0), (2, 0, -5), (2, 2**40, 0), (2, 0, 2**63 - 1), (2, 7, 0), (40, 0, 0), (-1, 0, 0)],
    ids=[
        "negative x",
        "negative row",
        "overflowing x",
        "huge row",
        "past the matrix",
        "level 40",
        "level -1",
    ],
)
def test_an_mbtiles_row_outside_the_matrix_is_one_line_and_no_file(
    row: tuple[int, int, int], data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = hostile_mbtiles(tmp_path / "h.mbtiles", row)
    dst = tmp_path / "o.pmtiles"
    code, _, err = run(capsys, "cache", "export", src, str(dst))
    assert code == 1
    one_line(err, f"ContainerCorruptError: {src}: tile row ")
    assert f"zoom_level={row[0]}" in err
    assert not dst.exists()
    code, _, err = run(capsys, "cache", "import", src, "c", "--data", data)
    assert "Traceback" not in err
    if not 0 <= row[0] <= 19:  # an import reads the cache's levels only: that row is never read
        assert code == 0, err
        return
    assert code == 1
    assert err.splitlines()[-1].startswith("ContainerCorruptError: "), err


def pmtiles(path: Path) -> bytes:
    with open_writer(str(path), TilesetMetadata(TileFormat.PNG)) as writer:
        for tile, tile_data in TILES.items():
            writer.write_tile(tile, tile_data)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("at", "value", "message"),
    [
        (16, 2**40, "places the root directory at bytes"),
        (32, 2**50, "places the metadata at bytes"),
        (64, 2**62, "places the tile data at bytes"),
        (56, 2**64 - 1, "tile data"),
    ],
)
def test_a_pmtiles_declaring_huge_sections_is_one_line(
    at: int, value: int, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = bytearray(pmtiles(tmp_path / "s.pmtiles"))
    struct.pack_into("<Q", raw, at, value)
    (tmp_path / "s.pmtiles").write_bytes(raw)
    code, _, err = run(
        capsys, "cache", "export", str(tmp_path / "s.pmtiles"), str(tmp_path / "o.mbtiles")
    )
    assert code == 1
    one_line(err, "ContainerCorruptError: ")
    assert message in err
    assert not (tmp_path / "o.mbtiles").exists()


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_archives_and_bundles_are_one_line_and_no_file(
    fraction: float, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = pmtiles(tmp_path / "s.pmtiles")
    (tmp_path / "s.pmtiles").write_bytes(raw[: int(len(raw) * fraction)])
    src = arcgis(tmp_path / "arcgis")
    bundle = tmp_path / "arcgis" / "_alllayers" / "L02" / "R0000C0000.bundle"
    bundle.write_bytes(bundle.read_bytes()[: int(bundle.stat().st_size * fraction)])
    for source in (str(tmp_path / "s.pmtiles"), src):
        for area in ((), ("--bbox", AREA)):
            code, _, err = run(capsys, "cache", "export", source, str(tmp_path / "o.gpkg"), *area)
            assert code == 1
            one_line(err, "ContainerCorruptError: ")
    assert not (tmp_path / "o.gpkg").exists()


def test_an_existing_destination_is_left_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = arcgis(tmp_path / "arcgis")
    dst = tmp_path / "arcgis"
    before = sorted(str(p.relative_to(dst)) for p in dst.rglob("*"))
    code, _, err = run(capsys, "cache", "export", src, src, "--bbox", AREA)
    assert code == 1
    one_line(err, "DestinationExistsError: ")
    (dst / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "cache", "export", src, src, "--bbox", AREA, "--overwrite-tiles")
    assert code == 1
    one_line(err, "DestinationExistsError: ")
    assert "notes.txt" in err
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*")) == sorted([*before, "notes.txt"])


KINDS = ["o.mbtiles", "o.gpkg", "o.pmtiles", "esri-compact:o", "esri-exploded:o", "xyz:o"]


def big_source(tmp_path: Path) -> str:
    """64 tiles of 20 KB each (PNG with trailing bytes: copied whole without an area)."""
    tmp_path.mkdir(exist_ok=True)
    src = tmp_path / "big.mbtiles"
    with open_writer(str(src), TilesetMetadata(TileFormat.PNG)) as writer:
        for x in range(8):
            for y in range(8):
                tile = Tile(x, y, 3)
                writer.write_tile(tile, make_tile(tile, TileFormat.PNG) + bytes(20_000))
    return str(src)


@pytest.mark.parametrize("kind", KINDS)
def test_a_full_destination_is_one_line_and_leaves_nothing(
    kind: str, tmp_path: Path, full_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = big_source(tmp_path)
    dst = destination(kind, full_disk)
    code, out, err = run(capsys, "cache", "export", src, dst)
    assert (code, out) == (1, "")
    one_line(err, "ContainerWriteError: ")
    assert list(full_disk.iterdir()) == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_read_only_destination_is_one_line_and_leaves_nothing(
    kind: str, tmp_path: Path, read_only_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = big_source(tmp_path)
    dst = destination(kind, read_only_dir)
    code, out, err = run(capsys, "cache", "export", src, dst, "--bbox", AREA)
    assert (code, out) == (1, "")
    one_line(err, "ContainerWriteError: ")
    assert list(read_only_dir.iterdir()) == []


def test_an_import_into_a_full_data_folder_is_one_line_and_leaves_whole_tiles(
    tmp_path: Path, full_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "base.mbtiles"
    with open_writer(str(base), TilesetMetadata(TileFormat.PNG)) as writer:
        writer.write_tile(Tile(0, 0, 0), make_tile(Tile(0, 0, 0), TileFormat.PNG))
    code, _, err = run(
        capsys, "cache", "create", "c", "--archive", str(base), "--data", str(full_disk)
    )
    assert code == 0, err
    code, out, err = run(
        capsys, "cache", "import", big_source(tmp_path), "c", "--data", str(full_disk)
    )
    assert (code, out) == (1, "")
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(("CacheIndexError: ", "StorageError: ")), err
    assert "disk is full" in err or "No space left" in err, err
    # every tile the cache holds is whole: exported, each is byte for byte a source tile
    with open_reader(big_source(tmp_path / "again")) as reader:
        source = dict(reader.iter_tiles())
    out_path = tmp_path / "held.mbtiles"
    code, _, err = run(
        capsys,
        "cache",
        "export",
        "c",
        str(out_path),
        "--data",
        str(full_disk),
        "--bbox",
        "-180,-85,180,85",
        "--zooms",
        "3",
    )
    if code == 0:
        with open_reader(str(out_path)) as reader:
            held = dict(reader.iter_tiles())
        assert all(source[tile] == tile_data for tile, tile_data in held.items())
    else:
        assert "nothing to export" in err, err


def test_an_arcgis_cache_exports_and_imports_as_its_tiles(
    data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = arcgis(tmp_path / "arcgis")
    code, out, err = run(capsys, "cache", "export", src, str(tmp_path / "o.mbtiles"), "--json")
    assert code == 0, err
    assert json.loads(out)["written"] == len(TILES)
    with open_reader(str(tmp_path / "o.mbtiles")) as reader:
        assert dict(reader.iter_tiles()) == TILES
    code, out, err = run(capsys, "cache", "export", src, str(tmp_path / "o.gpkg"), "--bbox", AREA)
    assert code == 0, err  # no --zooms: the levels are the cache's level folders
    code, out, err = run(capsys, "cache", "import", src, "c", "--data", data, "--json")
    assert code == 0, err
    assert json.loads(out)["new"] == len(TILES)
