"""A cache's stored tiles read as a container: what an export of a data folder's cache reads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from offmaps.cache import CacheDefinition, CacheSource, SourceKind, SQLiteTileIndex, store_tiles
from offmaps.cache.export import CacheTileReader
from offmaps.containers import TileReader
from offmaps.containers.export import export_tiles, plan_export
from offmaps.errors import CacheNotFoundError, TileNotFoundError
from offmaps.storage import MemoryBlobStore
from offmaps.tiling import AreaOfInterest, get_tms, tile_cover
from offmaps.types import Tile, TileFormat, ZoomRange
from tests.tilegen import make_tile

TILES = {
    Tile(x, y, 3): make_tile(Tile(x, y, 3), TileFormat.PNG) for x in range(2, 5) for y in (2, 3)
}


def cache(tmp_path: Path) -> tuple[SQLiteTileIndex, MemoryBlobStore]:
    index, blobs = SQLiteTileIndex(tmp_path / "index.sqlite"), MemoryBlobStore()
    source = CacheSource(kind=SourceKind.ARCHIVE, location="x.mbtiles")
    index.create_cache(CacheDefinition(name="c", source=source, min_zoom=0, max_zoom=19))
    store_tiles(index, blobs, "c", list(TILES.items()))
    return index, blobs


def test_a_cache_reads_as_a_container_of_its_stored_tiles(tmp_path: Path) -> None:
    index, blobs = cache(tmp_path)
    reader = CacheTileReader(index, blobs, "c")
    assert isinstance(reader, TileReader)
    assert (reader.metadata.minzoom, reader.metadata.maxzoom) == (3, 3)  # the levels held
    assert reader.count_tiles() == len(TILES)
    assert dict(reader.iter_tiles()) == TILES
    assert reader.get_tile(Tile(2, 2, 3)) == TILES[Tile(2, 2, 3)]
    assert reader.find_tile(Tile(0, 0, 3)) is None
    with pytest.raises(TileNotFoundError):
        reader.get_tile(Tile(0, 0, 3))
    area = AreaOfInterest.from_bbox(-80, 1, -1, 60)  # columns 2-3 at level 3, rows 2-3
    cover = tile_cover(area, get_tms("WebMercatorQuad"), ZoomRange(3, 3))
    assert set(dict(reader.iter_cover(cover))) == {t for t in TILES if t.x in (2, 3)}
    with pytest.raises(CacheNotFoundError):
        CacheTileReader(index, blobs, "nope")
    index.close()


def test_a_missing_blob_is_a_problem_named_by_its_tile(tmp_path: Path) -> None:
    index, blobs = cache(tmp_path)
    blobs.delete(hashlib.sha256(TILES[Tile(3, 2, 3)]).hexdigest())
    reader = CacheTileReader(index, blobs, "c")
    plan = plan_export(reader, aoi=AreaOfInterest.from_bbox(-80, 1, 80, 60))
    result = export_tiles(reader, str(tmp_path / "out.mbtiles"), plan)
    assert result.written == len(TILES) - 1
    assert [p.tile for p in reader.problems] == [Tile(3, 2, 3)]
    assert "is missing" in reader.problems[0].error
    assert reader.verify() == [reader.problems[0].error]
    index.close()
