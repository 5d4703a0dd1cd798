"""``extract_tiles`` from a tile folder reads the area's tiles only, and reports progress against
the area's tile count (the folder is neither walked nor counted)."""

from __future__ import annotations

import os
from pathlib import Path

import mercantile
import pytest
import shapely

from offmaps.containers import TilesetMetadata, open_reader, open_writer
from offmaps.containers.exploded import MAX_TILE_BYTES
from offmaps.errors import ContainerCorruptError
from offmaps.offline.extract import extract_tiles
from offmaps.tiling import AreaOfInterest
from offmaps.types import Tile, TileFormat, ZoomRange
from tests.tilegen import make_tile

ZOOMS = ZoomRange(3, 5)
BBOX = (-10.0, 35.0, 30.0, 60.0)


def in_area(tile: Tile) -> bool:
    """Whether the tile's interior meets BBOX, told by mercantile's tile bounds."""
    bounds = shapely.box(*mercantile.bounds(tile.x, tile.y, tile.z))
    return bool(bounds.intersection(shapely.box(*BBOX)).area)


@pytest.mark.parametrize("kind", ["tms", "xyz"])
def test_extract_tiles_from_a_folder_never_reads_outside_the_area(
    tmp_path: Path, kind: str
) -> None:
    tiles = {
        Tile(x, y, z): make_tile(Tile(x, y, z), TileFormat.PNG, size=8)
        for z in range(2, 7)  # levels 2 and 6 are outside ZOOMS
        for x in range(2**z)
        for y in range(2**z)
        if z < 6 or (x < 8 and y < 8)
    }
    folder = tmp_path / "tiles"
    with open_writer(f"{kind}:{folder}", TilesetMetadata(tile_format=TileFormat.PNG)) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    want = {t: d for t, d in tiles.items() if t.z in ZOOMS and in_area(t)}
    assert 0 < len(want) < sum(1 for t in tiles if t.z in ZOOMS)
    for tile in tiles.keys() - want.keys():  # any read of these raises: too large
        row = (2**tile.z - 1 - tile.y) if kind == "tms" else tile.y
        os.truncate(folder / str(tile.z) / str(tile.x) / f"{row}.png", MAX_TILE_BYTES + 1)
    with open_reader(f"{kind}:{folder}") as reader, pytest.raises(ContainerCorruptError):
        dict(reader.iter_tiles(ZOOMS.levels()))  # the trap works
    reports: list[float] = []
    result = extract_tiles(
        f"{kind}:{folder}",
        tmp_path / "out.mbtiles",
        AreaOfInterest.from_bbox(*BBOX),
        ZOOMS,
        progress=lambda fraction, _: reports.append(fraction),
    )
    assert result.tiles == len(want)
    with open_reader(result.path) as reader:
        assert dict(reader.iter_tiles()) == want
    assert reports == sorted(reports)
    assert reports[-1] == 1.0
    assert all(0 <= f <= 1 for f in reports)
