"""A stopped import run again skips the tiles it had stored: its journal in the cache index
(SQLite and PostgreSQL alike) is written with each batch, checked against the tiles the cache
still holds, and dropped when the import finishes. Stopped by a cancel (the progress callback
raising), a failed store, or ``kill -9`` in the middle of a batch."""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

import offmaps.cache.imports as imports_module
import offmaps.containers.export as export_module
from offmaps.cache import (
    CacheDefinition,
    CacheSource,
    SourceKind,
    SQLiteTileIndex,
    TileIndex,
    store_tiles,
)
from offmaps.cache.export import CacheTileReader
from offmaps.cache.imports import ImportResult, import_tiles
from offmaps.cache.postgres import PostgresTileIndex
from offmaps.containers import open_reader
from offmaps.containers.merge import merge_tiles
from offmaps.errors import StorageError
from offmaps.storage import BlobStore, LocalBlobStore, MemoryBlobStore
from offmaps.tiling import AreaOfInterest
from offmaps.types import Tile
from tests.cache.test_import import (
    HALF,
    SIZE,
    TILES,
    FailingBlobs,
    archive,
    basemap,
    held,
    pixels,
    png,
)
from tests.features.conftest import postgres_url

WHITE = png(np.full((SIZE, SIZE, 3), 255, np.uint8))


def shade() -> bytes:
    """Half-transparent black rows over a transparent tile: darker at each compositing."""
    rgba = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)
    rgba[:8] = (0, 0, 0, 128)
    return png(rgba)


class StopError(Exception):
    """A cancellation, raised from the progress callback."""


@pytest.fixture(params=["sqlite", "postgres"])
def index(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[SQLiteTileIndex | PostgresTileIndex]:
    """A fresh index with cache ``c`` (white tiles), in SQLite or in a new PostgreSQL schema."""
    opened: SQLiteTileIndex | PostgresTileIndex
    schema = f"cache_{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        opened = SQLiteTileIndex(tmp_path / "index.sqlite")
    else:
        opened = PostgresTileIndex(postgres_url(), schema=schema)
    source = CacheSource(kind=SourceKind.ARCHIVE, location="x.mbtiles")
    opened.create_cache(CacheDefinition(name="c", source=source))
    try:
        yield opened
    finally:
        opened.close()
        if request.param == "postgres":
            with psycopg.connect(postgres_url(), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def batches_of_two(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of two tiles, progress told after each."""
    monkeypatch.setattr(imports_module, "IMPORT_BATCH", 2)
    monkeypatch.setattr(export_module, "_PROGRESS_STEP", 2)


def stop_after(tiles: int) -> Any:
    """A progress callback that cancels the import once ``tiles`` tiles were handled."""
    seen = [0]

    def progress(count: int) -> None:
        seen[0] += count
        if seen[0] >= tiles:
            raise StopError

    return progress


def run(index: TileIndex, blobs: BlobStore, src: str, **options: Any) -> ImportResult:
    with open_reader(src) as reader:
        return import_tiles(index, blobs, "c", reader, **options)


def counting_merges(monkeypatch: pytest.MonkeyPatch) -> list[Tile]:
    merged: list[Tile] = []

    def spy(existing: bytes, incoming: bytes, **options: Any) -> bytes:
        merged.append(options["tile"])
        return merge_tiles(existing, incoming, **options)

    monkeypatch.setattr(imports_module, "merge_tiles", spy)
    return merged


@pytest.mark.usefixtures("batches_of_two")
def test_a_stopped_import_run_again_composites_each_tile_once(
    index: TileIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = archive(tmp_path / "o.mbtiles", {tile: shade() for tile in TILES})
    once_index = SQLiteTileIndex(tmp_path / "once.sqlite")
    once_blobs = MemoryBlobStore()
    once_index.create_cache(index.definition("c"))
    store_tiles(once_index, once_blobs, "c", [(tile, WHITE) for tile in TILES])
    run(once_index, once_blobs, src)
    expected = held(once_index, once_blobs)

    blobs = MemoryBlobStore()
    store_tiles(index, blobs, "c", [(tile, WHITE) for tile in TILES])
    with pytest.raises(StopError):
        run(index, blobs, src, progress=stop_after(4))  # two batches stored, then cancelled
    assert list(index.journals("c").values()) == [4]
    merged = counting_merges(monkeypatch)
    again = run(index, blobs, src)
    assert (again.read, again.skipped, again.merged) == (6, 4, 2)
    assert len(merged) == 2  # only the rest decoded and composited
    assert held(index, blobs) == expected
    assert 0 < pixels(CacheTileReader(index, blobs, "c").get_tile(TILES[0]))[0, 0, 0] < 255
    once_index.close()


@pytest.mark.usefixtures("batches_of_two")
def test_a_finished_import_drops_its_journal(index: TileIndex, tmp_path: Path) -> None:
    blobs = MemoryBlobStore()
    store_tiles(index, blobs, "c", [(tile, WHITE) for tile in TILES])
    src = archive(tmp_path / "o.mbtiles", {tile: shade() for tile in TILES})
    with pytest.raises(StopError):
        run(index, blobs, src, progress=stop_after(2))
    assert list(index.journals("c").values()) == [2]
    result = run(index, blobs, src)
    assert (result.skipped, result.merged) == (2, 4)
    assert index.journals("c") == {}
    # a rerun of a finished import is a new import: documented, it composites again
    assert run(index, blobs, src).skipped == 0


@pytest.mark.usefixtures("batches_of_two")
def test_a_tile_changed_since_it_was_imported_is_imported_again(
    index: TileIndex, tmp_path: Path
) -> None:
    blobs = MemoryBlobStore()
    store_tiles(index, blobs, "c", [(tile, WHITE) for tile in TILES])
    src = archive(tmp_path / "o.mbtiles", {tile: shade() for tile in TILES})
    with pytest.raises(StopError):
        run(index, blobs, src, progress=stop_after(4))
    reader = CacheTileReader(index, blobs, "c")
    done = [tile for tile in TILES if pixels(reader.get_tile(tile))[0, 0, 0] < 255]
    assert len(done) == 4
    store_tiles(index, blobs, "c", [(done[0], WHITE)])  # re-seeded from the source
    result = run(index, blobs, src)
    assert (result.skipped, result.merged) == (3, 3)
    shades = {int(pixels(d)[0, 0, 0]) for _, d in CacheTileReader(index, blobs, "c").iter_tiles()}
    assert len(shades) == 1  # every tile composited exactly once


@pytest.mark.usefixtures("batches_of_two")
def test_another_area_mode_or_source_is_another_import(index: TileIndex, tmp_path: Path) -> None:
    blobs = MemoryBlobStore()
    store_tiles(index, blobs, "c", [(tile, WHITE) for tile in TILES])
    src = archive(tmp_path / "o.mbtiles", {tile: shade() for tile in TILES})
    with pytest.raises(StopError):
        run(index, blobs, src, progress=stop_after(2))
    aoi = AreaOfInterest.from_bbox(-HALF, -HALF, HALF, HALF, "EPSG:3857")
    assert run(index, blobs, src, aoi=aoi).skipped == 0
    assert run(index, blobs, src, overwrite=True).skipped == 0
    assert run(index, blobs, src, resume=False).skipped == 0  # starts afresh
    assert index.journals("c") == {}
    with pytest.raises(StopError):
        run(index, blobs, src, progress=stop_after(2))
    Path(src).unlink()
    archive(Path(src), {tile: shade() for tile in reversed(TILES)})  # another file, same path
    assert run(index, blobs, src).skipped == 0


@pytest.mark.usefixtures("batches_of_two")
def test_a_source_id_resumes_a_copy_of_the_source_at_another_path(
    index: TileIndex, tmp_path: Path
) -> None:
    blobs = MemoryBlobStore()
    store_tiles(index, blobs, "c", [(tile, WHITE) for tile in TILES])
    first = archive(tmp_path / "first.mbtiles", {tile: shade() for tile in TILES})
    with pytest.raises(StopError):
        run(index, blobs, first, source_id="sha256-of-the-upload", progress=stop_after(2))
    copy = tmp_path / "copy.mbtiles"
    copy.write_bytes(Path(first).read_bytes())
    assert run(index, blobs, str(copy), source_id="sha256-of-the-upload").skipped == 2


@pytest.mark.usefixtures("batches_of_two")
def test_a_batch_that_failed_to_store_is_not_in_the_journal(
    index: TileIndex, tmp_path: Path
) -> None:
    blobs = FailingBlobs(6 + 2 + 1)  # the basemap, one batch of two, then one more put
    store_tiles(index, blobs, "c", [(tile, basemap(tile)) for tile in TILES])
    src = archive(tmp_path / "o.mbtiles", {tile: shade() for tile in TILES})
    with pytest.raises(StorageError):
        run(index, blobs, src)
    assert list(index.journals("c").values()) == [2]
    blobs.left = -1
    assert run(index, blobs, src).skipped == 2


@pytest.mark.usefixtures("batches_of_two")
def test_deleting_the_cache_drops_its_journals(index: TileIndex, tmp_path: Path) -> None:
    blobs = MemoryBlobStore()
    store_tiles(index, blobs, "c", [(tile, WHITE) for tile in TILES])
    src = archive(tmp_path / "o.mbtiles", {tile: shade() for tile in TILES})
    with pytest.raises(StopError):
        run(index, blobs, src, progress=stop_after(2))
    assert len(index.journals("c")) == 1
    index.delete_cache("c")
    index.create_cache(
        CacheDefinition(name="c", source=CacheSource(kind=SourceKind.ARCHIVE, location="x"))
    )
    assert index.journals("c") == {}


_KILLED = """
import os, pickle, signal, sys
import offmaps.cache.imports as imports
from offmaps.containers import open_reader
from offmaps.storage import LocalBlobStore

class Killing(LocalBlobStore):
    puts = 0

    def put(self, data):
        Killing.puts += 1
        if Killing.puts > int(sys.argv[3]):  # between a batch's blob puts and its rows
            os.kill(os.getpid(), signal.SIGKILL)
        return super().put(data)

imports.IMPORT_BATCH = 2
index = pickle.loads(bytes.fromhex(sys.argv[1]))
with open_reader(sys.argv[2]) as reader:
    imports.import_tiles(index, Killing(sys.argv[4]), "c", reader)
"""


def test_an_import_killed_in_a_batch_then_run_again_equals_one_import(
    index: SQLiteTileIndex | PostgresTileIndex, tmp_path: Path
) -> None:
    src = archive(tmp_path / "o.mbtiles", {tile: shade() for tile in TILES})
    base = {tile: basemap(tile) for tile in TILES}
    once_index, once_blobs = SQLiteTileIndex(tmp_path / "once.sqlite"), MemoryBlobStore()
    once_index.create_cache(index.definition("c"))
    store_tiles(once_index, once_blobs, "c", list(base.items()))
    run(once_index, once_blobs, src)
    expected = held(once_index, once_blobs)
    once_index.close()

    blobs = LocalBlobStore(tmp_path / "blobs")
    store_tiles(index, blobs, "c", list(base.items()))
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_KILLED),
            pickle.dumps(index).hex(),
            src,
            "5",
            str(tmp_path / "blobs"),
        ],
        check=False,
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert list(index.journals("c").values()) == [4]  # two batches; the third was torn down
    again = run(index, blobs, src)
    assert (again.skipped, again.merged) == (4, 2)
    assert held(index, blobs) == expected
