"""A cache of an archive or of another tile layer: the layer is the server's, never closed by
the cache, and a source that went away costs only the tiles the cache lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from offmaps.cache import CacheDefinition, CacheSource, SourceKind, SQLiteTileIndex
from offmaps.cache.service import TileCacheService
from offmaps.containers import TilesetMetadata, open_writer
from offmaps.sources import ArchiveTileSource
from offmaps.storage import MemoryBlobStore
from offmaps.tiling import AreaOfInterest
from offmaps.types import Tile, TileFormat, ZoomRange
from tests.tilegen import make_tile

TILES = {Tile(x, y, 1): make_tile(Tile(x, y, 1), TileFormat.PNG) for x in (0, 1) for y in (0, 1)}


def test_creating_seeding_and_deleting_a_cache_of_a_layer_leave_the_layer_open(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "base.mbtiles"
    with open_writer(archive, TilesetMetadata(TileFormat.PNG, minzoom=0, maxzoom=1)) as writer:
        for tile, data in TILES.items():
            writer.write_tile(tile, data)
    layer = ArchiveTileSource("base", archive)  # a tile layer the server publishes
    service = TileCacheService(
        SQLiteTileIndex(tmp_path / "index.sqlite"),
        MemoryBlobStore(),
        layers={"base": layer}.get,
    )
    source = CacheSource(kind=SourceKind.LAYER, location="base")
    definitions = [CacheDefinition(name=f"c{n}", source=source, max_zoom=1) for n in (1, 2)]
    for definition in definitions:
        service.create(definition)
    assert layer.get_tile(Tile(0, 0, 1)) == TILES[Tile(0, 0, 1)]  # creating did not close it
    done = service.seed("c1", AreaOfInterest.from_bbox(-180, -85, 180, 85), ZoomRange(1, 1))
    assert (done.fetched, done.errors) == (4, 0)
    service.delete("c1")
    assert (
        service.seed("c2", AreaOfInterest.from_bbox(-180, -85, 180, 85), ZoomRange(1, 1)).fetched
        == 4
    )
    assert layer.get_tile(Tile(1, 1, 1)) == TILES[Tile(1, 1, 1)]  # nor deleting a cache of it
    service.close()
    assert layer.get_tile(Tile(1, 0, 1)) == TILES[Tile(1, 0, 1)]  # nor closing the service
    layer.close()


def test_a_cache_whose_archive_went_away_still_lists_serves_and_exports_what_it_holds(
    tmp_path: Path,
) -> None:
    from offmaps.cache import store_tiles  # noqa: PLC0415
    from offmaps.cache.export import CacheTileReader  # noqa: PLC0415
    from offmaps.errors import CacheError  # noqa: PLC0415

    archive = tmp_path / "base.mbtiles"
    with open_writer(archive, TilesetMetadata(TileFormat.PNG, minzoom=0, maxzoom=1)) as writer:
        for tile, data in TILES.items():
            writer.write_tile(tile, data)
    index = SQLiteTileIndex(tmp_path / "index.sqlite")
    blobs = MemoryBlobStore()
    source = CacheSource(kind=SourceKind.ARCHIVE, location=str(archive))
    TileCacheService(index, blobs).create(CacheDefinition(name="c", source=source, max_zoom=1))
    held = Tile(0, 0, 1)
    store_tiles(index, blobs, "c", [(held, TILES[held])])
    archive.unlink()
    published: dict[str, object] = {}
    service = TileCacheService(index, blobs, published=published)  # type: ignore[arg-type]
    assert [d.name for d in service.list()] == ["c"]
    assert "c" in published  # published as a tile layer, as before
    cache = service.cache("c")
    assert cache.get_tile(held) == TILES[held]  # what it holds is served
    with pytest.raises(CacheError, match=r"base\.mbtiles does not exist"):
        cache.get_tile(Tile(1, 1, 1))  # what it lacks: the reason, not a crash at start
    assert dict(CacheTileReader(index, blobs, "c").iter_tiles()) == {held: TILES[held]}
    service.close()
