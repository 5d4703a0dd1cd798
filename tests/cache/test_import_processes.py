"""An import's composites made in worker processes are those made in the importing process."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import offmaps.cache.imports as imports_module
from offmaps.cache.export import CacheTileReader
from offmaps.types import Tile
from tests.cache.test_import import archive, basemap, new_cache, overlay, run

TILES = [Tile(x, y, 4) for x in range(16) for y in range(2)]  # 32 tiles


@pytest.mark.parametrize(
    "threads",
    [1, 2],
    ids=["forked from a process of one thread", "from a fork server beside other threads"],
)
def test_composites_made_in_worker_processes_are_those_made_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    incoming = {tile: overlay(slice(0, 8 + tile.x), (255, 0, 0)) for tile in TILES}
    incoming[TILES[-1]] = incoming[TILES[-1]][:60]  # truncated: its header says transparency
    src = archive(tmp_path / "o.mbtiles", incoming)
    results = []
    for processes in (1, 2):
        folder = tmp_path / str(processes)
        folder.mkdir()
        index, blobs = new_cache(folder, {tile: basemap(tile) for tile in TILES})
        monkeypatch.setattr(imports_module, "INLINE_MERGES", 4)
        monkeypatch.setattr(imports_module, "IMPORT_BATCH", 8)  # the pool over several batches
        monkeypatch.setattr("threading.active_count", lambda: threads)
        result = run(index, blobs, src, processes=processes)
        monkeypatch.undo()
        held = {
            tile: hashlib.sha256(data).hexdigest()
            for tile, data in CacheTileReader(index, blobs, "c").iter_tiles()
        }
        results.append((result, held))
        index.close()
    (inline, inline_held), (pooled, pooled_held) = results
    assert inline == pooled
    assert (inline.merged, inline.failures) == (31, 1)
    assert inline.failed[0].tile == TILES[-1]
    assert inline_held == pooled_held
