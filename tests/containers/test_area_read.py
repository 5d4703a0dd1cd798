"""Reading the tiles of an area (``iter_cover``): every container returns exactly the area's tiles,
and the exploded folders open only the files (and list only the folders) of the area."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import mercantile
import morecantile
import pytest
import shapely

from offmaps.containers import convert, exploded
from offmaps.containers.base import TileReader, TilesetMetadata
from offmaps.containers.exploded import MAX_TILE_BYTES
from offmaps.containers.registry import ContainerKind, Location, open_reader, open_writer
from offmaps.errors import ContainerCorruptError, IncompatibleTileMatrixSetError
from offmaps.tiling import AreaOfInterest, TileCover, tile_cover
from offmaps.types import Tile, TileFormat, ZoomRange
from tests.tilegen import make_tile

LEVELS = ZoomRange(2, 4)
AREAS = {
    # west > east: across the antimeridian, so columns at both ends of every row
    "antimeridian": (170.0, -40.0, -170.0, 40.0),
    "europe": (-10.0, 35.0, 30.0, 60.0),
}
FOLDER_KINDS = [ContainerKind.XYZ, ContainerKind.TMS, ContainerKind.ESRI_EXPLODED]


def every_tile() -> dict[Tile, bytes]:
    """Every tile of levels 2-4 (336), each drawn with its own key."""
    return {
        Tile(x, y, z): make_tile(Tile(x, y, z), TileFormat.PNG, size=8)
        for z in LEVELS.levels()
        for x in range(2**z)
        for y in range(2**z)
    }


@pytest.fixture(scope="module")
def tiles() -> dict[Tile, bytes]:
    return every_tile()


def expected(tiles: dict[Tile, bytes], bbox: tuple[float, float, float, float]) -> set[Tile]:
    """The tiles whose interior meets the area, told by mercantile's tile bounds (not offmaps')."""
    west, south, east, north = bbox
    parts = (
        [shapely.box(west, south, 180, north), shapely.box(-180, south, east, north)]
        if west > east
        else [shapely.box(*bbox)]
    )
    area = shapely.union_all(parts)
    return {
        t for t in tiles if shapely.box(*mercantile.bounds(t.x, t.y, t.z)).intersection(area).area
    }


def location(kind: ContainerKind, folder: Path) -> Location:
    return Location(kind, folder / ("src" if kind.is_folder else f"src.{kind.value}"))


def write(loc: Location, tiles: dict[Tile, bytes]) -> None:
    with open_writer(loc, TilesetMetadata(tile_format=TileFormat.PNG, name="area")) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)


def cover_of(bbox: tuple[float, float, float, float], reader: TileReader) -> TileCover:
    return tile_cover(AreaOfInterest.from_bbox(*bbox), reader.metadata.tms, LEVELS)


@pytest.mark.parametrize("area", AREAS, ids=list(AREAS))
@pytest.mark.parametrize("kind", list(ContainerKind), ids=[k.value for k in ContainerKind])
def test_every_container_reads_exactly_the_tiles_of_an_area(
    kind: ContainerKind, area: str, tiles: dict[Tile, bytes], tmp_path: Path
) -> None:
    want = expected(tiles, AREAS[area])
    assert 0 < len(want) < len(tiles)
    loc = location(kind, tmp_path)
    write(loc, tiles)
    with open_reader(loc) as reader:
        got = dict(reader.iter_cover(cover_of(AREAS[area], reader)))
    assert got == {t: tiles[t] for t in want}


def tile_path(kind: ContainerKind, folder: Path, tile: Tile) -> Path:
    if kind is ContainerKind.ESRI_EXPLODED:
        return folder / "_alllayers" / f"L{tile.z:02d}" / f"R{tile.y:08x}" / f"C{tile.x:08x}.png"
    row = (2**tile.z - 1 - tile.y) if kind is ContainerKind.TMS else tile.y
    return folder / str(tile.z) / str(tile.x) / f"{row}.png"


@pytest.fixture(params=[None, 0], ids=["by-name", "by-listing"])
def by_name(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways of finding an area's files: opened by name, and (a threshold of 0) found in
    their folder's listing."""
    if request.param is not None:
        monkeypatch.setattr(exploded, "_BY_NAME", request.param)


@pytest.mark.usefixtures("by_name")
@pytest.mark.parametrize("area", AREAS, ids=list(AREAS))
@pytest.mark.parametrize("kind", FOLDER_KINDS, ids=[k.value for k in FOLDER_KINDS])
def test_a_folder_never_reads_a_tile_outside_the_area(
    kind: ContainerKind, area: str, tiles: dict[Tile, bytes], tmp_path: Path
) -> None:
    """Every tile outside the area is made too large to read: touching one raises."""
    want = expected(tiles, AREAS[area])
    loc = location(kind, tmp_path)
    write(loc, tiles)
    for tile in tiles.keys() - want:
        os.truncate(tile_path(kind, loc.path, tile), MAX_TILE_BYTES + 1)  # sparse: no disk used
    with open_reader(loc) as reader:
        with pytest.raises(ContainerCorruptError, match="more than the"):
            dict(reader.iter_tiles())  # the trap works: a full read hits it
        got = dict(reader.iter_cover(cover_of(AREAS[area], reader)))
    assert got == {t: tiles[t] for t in want}


Opened = list[tuple[str, str]]


@contextmanager
def recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[Opened]:
    """Record every ``os.open`` (files and folders) and ``os.scandir`` as full paths."""
    calls: Opened = []
    real_open: Callable[..., int] = os.open
    real_scandir = os.scandir

    def where(path: str | int, dir_fd: int | None) -> str:
        if isinstance(path, int):
            return os.readlink(f"/proc/self/fd/{path}")
        base = "" if dir_fd is None else os.readlink(f"/proc/self/fd/{dir_fd}")
        return os.path.join(base, path)

    def recording_open(
        path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None
    ) -> int:
        calls.append(("open", where(path, dir_fd)))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def recording_scandir(path: int) -> object:
        calls.append(("list", where(path, None)))
        return real_scandir(path)

    with monkeypatch.context() as patch:
        patch.setattr(os, "open", recording_open)
        patch.setattr(os, "scandir", recording_scandir)
        yield calls


@pytest.mark.usefixtures("by_name")
@pytest.mark.parametrize("area", AREAS, ids=list(AREAS))
@pytest.mark.parametrize("kind", FOLDER_KINDS, ids=[k.value for k in FOLDER_KINDS])
def test_a_folder_opens_and_lists_only_the_area(
    kind: ContainerKind,
    area: str,
    tiles: dict[Tile, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The paths the area read opens are the area's tiles (and their folders), counted."""
    want = expected(tiles, AREAS[area])
    loc = location(kind, tmp_path)
    write(loc, tiles)
    root = loc.path.resolve()
    area_files = {str(tile_path(kind, root, t)) for t in want}
    area_folders = {str(Path(p).parent) for p in area_files} | {
        str(Path(p).parent.parent) for p in area_files
    }
    if kind is ContainerKind.ESRI_EXPLODED:
        area_folders.add(str(root / "_alllayers"))  # the folder holding the levels
    with open_reader(loc) as reader:
        cover = cover_of(AREAS[area], reader)
        with recording(monkeypatch) as calls:
            got = dict(reader.iter_cover(cover))
    assert got == {t: tiles[t] for t in want}
    opened_files = [p for what, p in calls if what == "open" and p.endswith(".png")]
    assert sorted(opened_files) == sorted(area_files)  # each tile of the area once, no other
    others = {p for what, p in calls if not p.endswith(".png")}
    assert others <= area_folders  # no folder outside the area is opened or listed


def test_a_cover_of_another_grid_is_refused(tiles: dict[Tile, bytes], tmp_path: Path) -> None:
    loc = location(ContainerKind.XYZ, tmp_path)
    write(loc, {t: d for t, d in tiles.items() if t.z == 2})
    other = morecantile.tms.get("WGS1984Quad")
    cover = tile_cover(AreaOfInterest.from_bbox(*AREAS["europe"]), other, ZoomRange(2, 2))
    with open_reader(loc) as reader, pytest.raises(IncompatibleTileMatrixSetError):
        convert(reader, str(tmp_path / "out.mbtiles"), aoi=cover)
    assert not (tmp_path / "out.mbtiles").exists()
