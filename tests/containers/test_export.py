"""Exports clipped to an area: inside tiles byte for byte, cut ones clipped, outside ones absent."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import morecantile
import numpy as np
import pytest
import rasterio
from numpy.typing import NDArray
from PIL import Image
from rasterio.windows import Window
from shapely.geometry import Polygon

import offmaps.containers.export as export_module
from offmaps.containers import TilesetMetadata, open_reader, open_writer
from offmaps.containers.base import web_mercator_quad
from offmaps.containers.export import (
    ExportPlan,
    ExportResult,
    check_tile_limit,
    export_tiles,
    plan_export,
)
from offmaps.errors import (
    ContainerError,
    DestinationExistsError,
    InvalidAOIError,
    InvalidZoomError,
    TileLimitError,
)
from offmaps.tiling import AreaOfInterest
from offmaps.types import Tile, TileFormat, ZoomRange
from tests.tilegen import make_tile

WMQ = web_mercator_quad()
CUT = Tile(1, 1, 2)  # x from -10018754 to 0, y from 0 to 10018754 (EPSG:3857)
BOUNDS = WMQ.xy_bounds(morecantile.Tile(*CUT))
RES = (BOUNDS.right - BOUNDS.left) / 256
LEVEL2 = [Tile(x, y, 2) for x in range(4) for y in range(1, 3)]


def image(tile: Tile, tile_format: TileFormat) -> bytes:
    """A 256-pixel tile whose every pixel differs from its neighbours and depends on the key."""
    rows, cols = np.mgrid[0:256, 0:256]
    blue = (255 - (rows + cols) // 2 + 40 * tile.x + 70 * tile.y) % 256
    pixels = np.stack([rows, cols, blue], axis=-1).astype(np.uint8) | 1
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[tile_format])
    return out.getvalue()


def decoded(data: bytes, mode: str = "RGBA") -> NDArray[np.uint8]:
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode))


def source(
    path: str, tiles: list[Tile], tile_format: TileFormat = TileFormat.PNG
) -> dict[Tile, bytes]:
    written = {tile: image(tile, tile_format) for tile in tiles}
    with open_writer(path, TilesetMetadata(tile_format)) as writer:
        for tile, data in written.items():
            writer.write_tile(tile, data)
    return written


def read_all(path: str) -> dict[Tile, bytes]:
    with open_reader(path) as reader:
        return dict(reader.iter_tiles())


def east_of(pixel_column: float) -> AreaOfInterest:
    """The area east of a vertical line through tile 2/1/1, up to the east edge of tiles 2/2/*."""
    x = BOUNDS.left + pixel_column * RES
    east = WMQ.xy_bounds(morecantile.Tile(2, 1, 2)).right
    return AreaOfInterest.from_bbox(x, -1.5e7, east, 1.5e7, "EPSG:3857")


def export(
    src: str, dst: str, aoi: AreaOfInterest | None, zooms: ZoomRange | None = None, **options: Any
) -> ExportResult:
    with open_reader(src) as reader:
        return export_tiles(reader, dst, plan_export(reader, aoi=aoi, zooms=zooms), **options)


def test_pixels_on_both_sides_of_a_straight_boundary(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "s.mbtiles"), str(tmp_path / "d.mbtiles")
    tiles = source(src, LEVEL2)
    result = export(src, dst, east_of(100.3))
    got = read_all(dst)
    # the cut tile: columns 0-99 have their centre west of the line, 100-255 east of it
    pixels, want = decoded(got[CUT]), decoded(tiles[CUT])
    assert (pixels[:, :100] == 0).all()
    assert np.array_equal(pixels[:, 100:], want[:, 100:])
    # tiles wholly inside are the source's bytes; tiles wholly outside are absent
    for tile in (Tile(2, 1, 2), Tile(2, 2, 2)):
        assert got[tile] == tiles[tile]
    assert Tile(0, 1, 2) not in got
    assert Tile(3, 1, 2) not in got
    assert set(got) == {CUT, Tile(1, 2, 2), Tile(2, 1, 2), Tile(2, 2, 2)}
    assert (result.copied, result.clipped, result.failures) == (2, 2, 0)


def test_jpeg_tiles_are_filled_with_the_background(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "s.mbtiles"), str(tmp_path / "d.mbtiles")
    tiles = source(src, LEVEL2, TileFormat.JPEG)
    export(src, dst, east_of(128), background=(0, 90, 200))
    got = read_all(dst)
    assert got[CUT].startswith(b"\xff\xd8\xff")
    west = decoded(got[CUT], "RGB")[:, :120].astype(int)
    assert np.abs(west - (0, 90, 200)).max() <= 8  # JPEG rounds
    east = decoded(got[CUT], "RGB")[:, 136:].astype(int)
    assert np.abs(east - decoded(tiles[CUT], "RGB")[:, 136:].astype(int)).mean() < 3


def test_without_an_area_every_tile_is_copied_byte_for_byte(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "s.mbtiles"), f"xyz:{tmp_path / 'd'}"
    tiles = source(src, [*LEVEL2, Tile(0, 0, 0), Tile(1, 1, 1)])
    result = export(src, dst, None)
    assert read_all(dst) == tiles
    assert result.written == len(tiles)
    only = str(tmp_path / "z2.pmtiles")
    export(src, only, None, zooms=ZoomRange(2, 2))
    assert read_all(only) == {t: tiles[t] for t in LEVEL2}


def test_the_tile_limit_is_refused_before_any_file_exists(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "s.mbtiles"), tmp_path / "d.mbtiles"
    source(src, LEVEL2)
    with open_reader(src) as reader:
        plan = plan_export(reader, aoi=east_of(100.3))
        assert plan.tiles == 8  # the area's tiles: 2 columns by 4 rows, 4 of them in the source
        with pytest.raises(TileLimitError, match="8 tiles, more than the limit of 7") as caught:
            export_tiles(reader, str(dst), plan, max_tiles=7)
    assert (caught.value.tiles, caught.value.limit) == (8, 7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.mbtiles"]
    check_tile_limit(ExportPlan(None, 100_000))
    with pytest.raises(TileLimitError):
        check_tile_limit(ExportPlan(None, 100_001))


def test_an_area_that_does_not_touch_the_source_is_refused(tmp_path: Path) -> None:
    src = str(tmp_path / "s.mbtiles")
    source(src, LEVEL2)  # lon -180..180, lat -66.5..66.5
    with (
        open_reader(src) as reader,
        pytest.raises(InvalidAOIError, match="does not meet the source"),
    ):
        plan_export(reader, aoi=AreaOfInterest.from_bbox(10, -80, 20, -70))


def test_an_export_that_finds_no_tiles_leaves_nothing(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "s.mbtiles"), tmp_path / "d.mbtiles"
    source(src, LEVEL2)
    with open_reader(src) as reader:
        plan = plan_export(reader, aoi=east_of(100.3), zooms=ZoomRange(5, 6))
        with pytest.raises(ContainerError, match="source holds no tiles in the area at levels 5-6"):
            export_tiles(reader, str(dst), plan)
    assert not dst.exists()
    broken = str(tmp_path / "b.mbtiles")
    with open_writer(broken, TilesetMetadata(TileFormat.PNG)) as writer:
        writer.write_tile(CUT, b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ContainerError, match=r"1 are not valid images \(first: tile 2/1/1"):
        export(broken, str(dst), east_of(100.3))
    assert not dst.exists()


def test_zooms_outside_the_tile_matrix_set_are_refused(tmp_path: Path) -> None:
    src = str(tmp_path / "s.mbtiles")
    source(src, LEVEL2)
    with open_reader(src) as reader, pytest.raises(InvalidZoomError):
        plan_export(reader, zooms=ZoomRange(20, 31))


def test_an_existing_destination_is_refused_unless_overwritten(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "s.mbtiles"), tmp_path / "d.mbtiles"
    tiles = source(src, LEVEL2)
    source(str(dst), [Tile(0, 0, 0)])
    with pytest.raises(DestinationExistsError):
        export(src, str(dst), east_of(100.3))
    assert set(read_all(str(dst))) == {Tile(0, 0, 0)}
    export(src, str(dst), east_of(100.3), overwrite=True)
    got = read_all(str(dst))
    assert Tile(0, 0, 0) not in got
    assert got[Tile(2, 1, 2)] == tiles[Tile(2, 1, 2)]


def test_corrupt_tiles_are_listed_with_their_keys_and_the_rest_goes_on(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "s.mbtiles"), str(tmp_path / "d.mbtiles")
    tiles = {tile: image(tile, TileFormat.PNG) for tile in LEVEL2}
    tiles[CUT] = tiles[CUT][:60]  # truncated: a cut tile that does not decode
    tiles[Tile(2, 1, 2)] = image(Tile(2, 1, 2), TileFormat.JPEG)  # inside, wrong magic bytes
    with open_writer(src, TilesetMetadata(TileFormat.PNG)) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    result = export(src, dst, east_of(100.3))
    failed = {f.tile: f.error for f in result.failed}
    assert set(failed) == {CUT, Tile(2, 1, 2)}
    assert "should be png but its bytes are jpg" in failed[Tile(2, 1, 2)]
    assert result.failures == 2
    got = read_all(dst)
    assert set(got) == {Tile(1, 2, 2), Tile(2, 2, 2)}
    assert got[Tile(2, 2, 2)] == tiles[Tile(2, 2, 2)]


@pytest.mark.parametrize(
    "threads",
    [1, 2],
    ids=["forked from a process of one thread", "from a fork server beside other threads"],
)
def test_cut_tiles_clipped_in_worker_processes_are_those_clipped_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    monkeypatch.setattr("threading.active_count", lambda: threads)
    src = str(tmp_path / "s.mbtiles")
    tiles = [Tile(x, y, 4) for x in range(4, 12) for y in range(3, 9)]
    source(src, tiles)
    # a slanted triangle: most of its tiles are cut
    lonlat = Polygon([(-80, 10), (60, 20), (-20, 70)])
    aoi = AreaOfInterest.from_geometry(lonlat)
    here, there = str(tmp_path / "here.mbtiles"), str(tmp_path / "there.mbtiles")
    inline = export(src, here, aoi, processes=1)
    monkeypatch.setattr(export_module, "INLINE_CUT_TILES", 2)
    monkeypatch.setattr(export_module, "TASKS_PER_PROCESS", 1)
    pooled = export(src, there, aoi, processes=2)
    assert inline == pooled
    assert inline.clipped > 10
    assert read_all(here) == read_all(there)


def test_vector_tiles_meeting_the_area_are_copied_whole(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "s.mbtiles"), str(tmp_path / "d.pmtiles")
    tiles = {tile: make_tile(tile, TileFormat.MVT) for tile in LEVEL2}
    with open_writer(src, TilesetMetadata(TileFormat.MVT)) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    export(src, dst, east_of(100.3))
    assert read_all(dst) == {
        t: tiles[t] for t in (CUT, Tile(1, 2, 2), Tile(2, 1, 2), Tile(2, 2, 2))
    }


def test_gdal_reads_an_exported_compact_cache_as_the_clipped_source(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "s.gpkg"), tmp_path / "c"
    level3 = [Tile(x, y, 3) for x in range(2, 6) for y in range(2, 4)]
    tiles = source(src, [Tile(0, 0, 0), Tile(1, 1, 1), *level3])
    # west edge through column 100.3 of tile 3/3/*: 3/2/* outside, 3/3/* cut, 3/4-5/* inside
    left = WMQ.xy_bounds(morecantile.Tile(2, 2, 3)).left
    corner = WMQ.xy_bounds(morecantile.Tile(5, 2, 3))  # the area's east and north edges
    west = left + (256 + 100.3) * WMQ.matrix(3).cellSize
    aoi = AreaOfInterest.from_bbox(west, -1e7, corner.right, corner.top, "EPSG:3857")
    export(src, f"esri-compact:{dst}", aoi, zooms=ZoomRange(0, 3))
    with rasterio.open(dst / "conf.xml") as dataset:
        assert dataset.driver == "ESRIC"
        window = dataset.read(window=Window(2 * 256, 2 * 256, 4 * 256, 2 * 256))
    for y in (2, 3):
        rows = slice((y - 2) * 256, (y - 1) * 256)
        block = window[:, rows].transpose(1, 2, 0)
        assert (block[:, : 256 + 100] == 0).all()  # 3/2/y absent and 3/3/y clipped: transparent
        want_cut = decoded(tiles[Tile(3, y, 3)])
        assert np.array_equal(block[:, 256 + 100 : 512], want_cut[:, 100:])
        for x in (4, 5):
            want = decoded(tiles[Tile(x, y, 3)])
            assert np.array_equal(block[:, (x - 2) * 256 : (x - 1) * 256], want), (x, y)


def test_a_cut_tile_with_every_pixel_centre_inside_keeps_its_bytes(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "s.mbtiles"), str(tmp_path / "d.mbtiles")
    tiles = source(src, LEVEL2)
    result = export(src, dst, east_of(0.3))  # the boundary passes west of column 0's centre
    assert read_all(dst)[CUT] == tiles[CUT]
    assert (result.copied, result.clipped) == (4, 0)  # 2/1/2 as well
