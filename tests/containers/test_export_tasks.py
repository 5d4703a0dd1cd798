"""An export's cut tiles go to worker processes in tasks, and come back as clipped here."""

from __future__ import annotations

import io
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image
from shapely.geometry import Polygon

import offmaps.containers.clip as clip_module
import offmaps.containers.export as export_module
from offmaps.containers import TilesetMetadata, open_reader, open_writer
from offmaps.containers.base import web_mercator_quad
from offmaps.containers.clip import AreaClipper, TileRelation
from offmaps.containers.export import ExportResult, export_tiles, plan_export
from offmaps.errors import InvalidTileDataError
from offmaps.tiling import AreaOfInterest
from offmaps.types import Tile, TileFormat

TILES = [Tile(x, y, 4) for x in range(4, 12) for y in range(3, 9)]
# a slanted triangle: most of its tiles are cut
AREA = AreaOfInterest.from_geometry(Polygon([(-80, 10), (60, 20), (-20, 70)]))


def png(tile: Tile) -> bytes:
    rows, cols = np.mgrid[0:256, 0:256]
    pixels = np.stack([rows, cols, (rows + cols + 9 * tile.x) % 256], axis=-1).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels | 1).save(out, "PNG")
    return out.getvalue()


def export(src: str, dst: str, **options: Any) -> ExportResult:
    with open_reader(src) as reader:
        return export_tiles(reader, dst, plan_export(reader, aoi=AREA), **options)


def read_all(path: str) -> dict[Tile, bytes]:
    with open_reader(path) as reader:
        return dict(reader.iter_tiles())


class CountingPool(ProcessPoolExecutor):
    tasks: ClassVar[list[int]] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        CountingPool.tasks.append(len(args[0]))
        return super().submit(fn, *args, **kwargs)


@pytest.mark.parametrize(
    "threads",
    [1, 2],
    ids=["forked from a process of one thread", "from a fork server beside other threads"],
)
def test_tasks_of_cut_tiles_clipped_in_workers_are_those_clipped_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    src = str(tmp_path / "s.mbtiles")
    with open_writer(src, TilesetMetadata(TileFormat.PNG)) as writer:
        for tile in TILES:
            writer.write_tile(tile, png(tile))
    here, there = str(tmp_path / "here.mbtiles"), str(tmp_path / "there.mbtiles")
    inline = export(src, here, processes=1)
    monkeypatch.setattr("threading.active_count", lambda: threads)
    monkeypatch.setattr(export_module, "ProcessPoolExecutor", CountingPool)
    monkeypatch.setattr(export_module, "CUT_TILES_PER_TASK", 3)
    monkeypatch.setattr(export_module, "INLINE_CUT_TILES", 4)
    monkeypatch.setattr(export_module, "TASKS_PER_PROCESS", 1)
    CountingPool.tasks.clear()
    pooled = export(src, there, processes=2)
    assert inline == pooled
    assert inline.clipped > 10
    assert read_all(here) == read_all(there)
    # tasks of 3 (the last one fewer) went to the workers
    assert len(CountingPool.tasks) > 2
    assert max(CountingPool.tasks) == 3


def test_fewer_cut_tiles_than_a_task_start_no_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = str(tmp_path / "s.mbtiles")
    with open_writer(src, TilesetMetadata(TileFormat.PNG)) as writer:
        for tile in TILES:
            writer.write_tile(tile, png(tile))
    monkeypatch.setattr("threading.active_count", lambda: 1)
    monkeypatch.setattr(export_module, "ProcessPoolExecutor", CountingPool)
    CountingPool.tasks.clear()
    result = export(src, str(tmp_path / "d.mbtiles"), processes=2)
    assert 0 < result.clipped < export_module.CUT_TILES_PER_TASK
    assert CountingPool.tasks == []


@pytest.mark.parametrize("group", [1, 3, 1000], ids=["one tile", "three tiles", "all"])
def test_cut_tiles_clipped_together_are_each_clipped_alone(
    monkeypatch: pytest.MonkeyPatch, group: int
) -> None:
    monkeypatch.setattr(clip_module, "BATCH_PIXELS", group * 256 * 256)
    clipper = AreaClipper(AREA, web_mercator_quad())
    cut = [t for t, r in zip(TILES, clipper.relations(TILES), strict=True) if r is TileRelation.CUT]
    tiles = [(t, png(t)) for t in cut]
    tiles.insert(2, (cut[0], b"\x89PNG\r\n\x1a\n broken"))
    tiles.append((cut[1], b"\x89PNG\r\n\x1a\n truncated too"))
    together = clipper.clip_cuts(tiles, TileFormat.PNG)
    assert len(together) == len(tiles)
    for (tile, data), got in zip(tiles, together, strict=True):
        if data.endswith((b"broken", b"too")):
            assert isinstance(got, InvalidTileDataError)
        else:
            assert got == clipper.clip_cut(tile, data, TileFormat.PNG)


def test_one_task_at_a_time_in_flight_when_the_bytes_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = str(tmp_path / "s.mbtiles")
    with open_writer(src, TilesetMetadata(TileFormat.PNG)) as writer:
        for tile in TILES:
            writer.write_tile(tile, png(tile))
    here, there = str(tmp_path / "here.mbtiles"), str(tmp_path / "there.mbtiles")
    inline = export(src, here, processes=1)
    monkeypatch.setattr("threading.active_count", lambda: 1)
    monkeypatch.setattr(export_module, "CUT_TILES_PER_TASK", 2)
    monkeypatch.setattr(export_module, "IN_FLIGHT_BYTES", 1)  # any task is over it
    assert export(src, there, processes=2) == inline
    assert read_all(here) == read_all(there)
