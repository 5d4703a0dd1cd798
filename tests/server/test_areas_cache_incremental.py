"""A refresh of a preplanned area whose tile layer is a tile cache is incremental: the tiles of
the area's cover whose SHA-256 in the cache's index differs from the previous package's are
applied to its archive, tile for tile what a fresh extraction gives (docs/preplanned.md,
"Incremental refreshes")."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import Polygon

from offmaps.cache import CacheDefinition, CacheSource, SourceKind, TileCache, store_tiles
from offmaps.cache.index import Span
from offmaps.containers import TilesetMetadata, open_writer
from offmaps.containers.mbtiles import tms_row
from offmaps.errors import CacheIndexError
from offmaps.offline.updates import (
    ChainState,
    TileUpdateReader,
    apply_tile_update,
    write_chain_state,
)
from offmaps.tiling import TileCover, get_tms
from offmaps.types import BBox, Tile, TileFormat
from tests.server.test_areas_tiles_incremental import (
    CHAIN_STATE,
    LEVELS,
    SHAPES,
    SOURCE,
    _archive,
    _area,
    _centre_in,
    _files,
    _key,
    _metadata,
    _refresh,
    _repackage,
    _tables,
    _tile_update,
)
from tests.server.test_areas_updates import _download, _services, _tiles, _use_basemap
from tests.serverkit import Server
from tests.tilegen import make_tile

CACHE = "basecache"


def _cache(server: Server) -> TileCache:
    found = server.catalog.tile_sources[CACHE]
    assert isinstance(found, TileCache)
    return found


def _store(server: Server, tiles: list[Tile], size: int = 64) -> None:
    caches = _services(server).caches
    store_tiles(
        caches.index,
        caches.blobs,
        CACHE,
        [(t, make_tile(t, TileFormat.PNG, size=size)) for t in tiles],
    )


def _drop(server: Server, tiles: list[Tile]) -> None:
    spans = [Span(t.z, t.y, t.x, t.x) for t in tiles]
    assert _services(server).caches.index.truncate(CACHE, spans, None) == len(tiles)


def _cached_source(
    server: Server,
    tmp_path: Path,
    shape: Polygon,
    *,
    missing: bool = True,
    verify_reads: float = 0.01,
) -> tuple[Path, list[Tile], list[Tile]]:
    """A tile cache ``basecache`` (levels 10-14) of an MBTiles archive over SOURCE, holding the
    archive's every tile (seeded), as the ``basemap`` layer of the public map; with ``missing``
    some tiles are in neither, inside the area and outside it (returned)."""
    tms = get_tms("WebMercatorQuad")
    tiles = [Tile(t.x, t.y, t.z) for t in tms.tiles(*SOURCE, list(LEVELS))]
    inside = [t for t in tiles if t.z == 14 and _centre_in(t, shape)]
    outside = [t for t in tiles if t.z == 14 and not _centre_in(t, shape.buffer(0.02))]
    missing_inside, missing_outside = (inside[::7][:4], outside[:2]) if missing else ([], [])
    held = [t for t in tiles if t not in missing_inside and t not in missing_outside]
    path = tmp_path / "cache-source.mbtiles"
    metadata = TilesetMetadata(
        tile_format=TileFormat.PNG, tms=tms, name="source", minzoom=LEVELS[0],
        maxzoom=LEVELS[-1], bounds=BBox(*SOURCE),
    )  # fmt: skip
    with open_writer(str(path), metadata) as writer:
        for tile in held:
            writer.write_tile(tile, make_tile(tile, TileFormat.PNG))
    _services(server).caches.create(
        CacheDefinition(
            name=CACHE,
            title="Cached basemap",
            source=CacheSource(kind=SourceKind.ARCHIVE, location=str(path)),
            format=TileFormat.PNG,
            min_zoom=LEVELS[0],
            max_zoom=LEVELS[-1],
            verify_reads=verify_reads,
        )
    )
    _store(server, held)
    _use_basemap(server, CACHE)
    return path, missing_inside, missing_outside


def _source_tile(path: Path, tile: Tile, data: bytes | None) -> None:
    """Write (or with ``None`` delete) a tile of the cache's source archive."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "DELETE FROM tiles WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?",
            _key(tile),
        )
        if data is not None:
            conn.execute("INSERT INTO tiles VALUES (?, ?, ?, ?)", (*_key(tile), data))


def _update(
    server: Server, area: dict[str, Any], folder: Path
) -> tuple[Path, dict[Any, bytes], set[Any]]:
    path = _download(server, _tile_update(area), folder)
    with TileUpdateReader(path) as reader:
        written = {_key(tile): data for tile, data in reader.iter_tiles()}
        removed = {_key(tile) for tile in reader.iter_removed()}
    return path, written, removed


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_refresh_after_the_cache_changed_applies_only_its_changes_and_equals_an_extraction(
    server: Server, tmp_path: Path, shape: str
) -> None:
    where, geometry = SHAPES[shape]
    source, missing_inside, missing_outside = _cached_source(server, tmp_path, geometry)
    area = _area(server, where)
    first = _archive(server, area, tmp_path / "p1")
    before = _tiles(first)
    inside = [Tile(x, tms_row(row, z), z) for z, x, row in sorted(before)]
    redrawn = [inside[0], inside[len(inside) // 2], inside[-1]]
    gone = [inside[1], inside[-2]]  # from the cache and from its source
    refetched = inside[len(inside) // 3]  # dropped from the cache; its source has new bytes
    added, read_through = missing_inside[:2], missing_inside[2:]
    outside = Tile(*get_tms("WebMercatorQuad").tile(25.04, 60.19, 14))

    _store(server, [*redrawn, outside], size=32)
    _store(server, [*added, *missing_outside])
    _drop(server, [*gone, refetched])
    for tile in gone:
        _source_tile(source, tile, None)
    _source_tile(source, refetched, make_tile(refetched, TileFormat.PNG, size=40))
    for tile in read_through:  # in the source only: an extraction fetches them into the cache
        _source_tile(source, tile, make_tile(tile, TileFormat.PNG, size=48))

    refreshed, result = _refresh(server, area)
    assert result["incremental"] is True
    new = _archive(server, refreshed, tmp_path / "p2")
    assert CHAIN_STATE not in _tables(new)
    fresh = _archive(server, _repackage(server, area, where), tmp_path / "fresh")
    after = _tiles(fresh)
    assert _tiles(new) == after
    assert _metadata(new) == _metadata(fresh)
    assert {_key(t) for t in [*added, *read_through, refetched]} <= set(after)
    assert not {_key(t) for t in [*gone, *missing_outside, outside]} & set(after)

    # the update holds exactly the tiles that differ, and brings a device's copy to them
    path, written, removed = _update(server, refreshed, tmp_path / "updates")
    assert written == {k: v for k, v in after.items() if before.get(k) != v}
    assert set(written) == {_key(t) for t in [*redrawn, *added, *read_through, refetched]}
    assert removed == {_key(t) for t in gone}
    update = _tile_update(refreshed)
    device = tmp_path / "device.mbtiles"
    device.write_bytes(first.read_bytes())
    write_chain_state(device, ChainState(area["id"], 1, 1, update["previous_sha256"]))
    apply_tile_update(device, path, sha256=update["sha256"], size=update["size"])
    assert _tiles(device) == after


def test_a_refresh_with_the_cache_unchanged_in_the_area_keeps_the_archive(
    server: Server, tmp_path: Path
) -> None:
    where, geometry = SHAPES["bbox"]
    _cached_source(server, tmp_path, geometry, missing=False)
    area = _area(server, where)
    _store(server, [Tile(*get_tms("WebMercatorQuad").tile(25.04, 60.19, 14))], size=32)  # outside
    for _ in range(2):
        same, result = _refresh(server, area)
        assert result["incremental"] is True
        assert _files(same)["basemap.mbtiles"] == _files(area)["basemap.mbtiles"]
        _, written, removed = _update(server, same, tmp_path / str(same["latest"]))
        assert (written, removed) == ({}, set())
    # a tile of the area redrawn: the mark sees it
    tile = Tile(*get_tms("WebMercatorQuad").tile(24.94, 60.1, 13))
    _store(server, [tile], size=32)
    changed, result = _refresh(server, same)
    assert result["incremental"] is True
    _, written, removed = _update(server, changed, tmp_path / "changed")
    assert (written, removed) == ({_key(tile): make_tile(tile, TileFormat.PNG, size=32)}, set())


@pytest.mark.parametrize("during", ["packaging", "refresh"])
def test_a_tile_changed_while_the_area_is_packaged_and_changed_back_is_seen(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, during: str
) -> None:
    """A package records the mark of what its archive holds: a tile changed after the mark was
    read (and, for a packaging, changed back since) is seen at the next refresh."""
    where, geometry = SHAPES["bbox"]
    _cached_source(server, tmp_path, geometry, missing=False)
    tms = get_tms("WebMercatorQuad")
    tile = Tile(*tms.tile(24.94, 60.1, 14))
    cache = _cache(server)
    marked = cache.stored_hashes
    changes = [lambda: _store(server, [tile], size=32)]

    def racing(cover: TileCover) -> Iterator[tuple[int, int, int, str]]:
        yield from marked(cover)
        while changes:  # redrawn just after the mark is read, before the tiles are
            changes.pop()()

    if during == "refresh":
        area = _area(server, where)
        _store(server, [Tile(*tms.tile(24.92, 60.07, 14))], size=32)  # so it compares
    monkeypatch.setattr(cache, "stored_hashes", racing)
    area = _area(server, where) if during == "packaging" else _refresh(server, area)[0]
    monkeypatch.undo()
    assert not changes
    # a packaging holds what it read after the mark; a refresh what its mark was made of
    held = _tiles(_archive(server, area, tmp_path / "held"))[_key(tile)]
    redrawn, drawn = make_tile(tile, TileFormat.PNG, size=32), make_tile(tile, TileFormat.PNG)
    assert held == (redrawn if during == "packaging" else drawn)
    other = drawn if held == redrawn else redrawn
    _store(server, [tile], size=64 if other == drawn else 32)  # back as the mark read it
    refreshed, result = _refresh(server, area)
    assert result["incremental"] is True
    new = _tiles(_archive(server, refreshed, tmp_path / "new"))
    assert new[_key(tile)] == other
    assert new == _tiles(_archive(server, _repackage(server, area, where), tmp_path / "fresh"))


def test_a_cache_lacking_tiles_of_the_area_is_compared_each_time(
    server: Server, tmp_path: Path
) -> None:
    """Its source is asked for the tiles it lacks at every refresh, as an extraction asks."""
    where, geometry = SHAPES["bbox"]
    source, missing_inside, _ = _cached_source(server, tmp_path, geometry)
    area = _area(server, where)
    same, result = _refresh(server, area)
    assert result["incremental"] is True
    assert _files(same)["basemap.mbtiles"] == _files(area)["basemap.mbtiles"]
    tile = missing_inside[0]
    _source_tile(source, tile, make_tile(tile, TileFormat.PNG))  # the source only
    refreshed, result = _refresh(server, same)
    assert result["incremental"] is True
    _, written, removed = _update(server, refreshed, tmp_path)
    assert (set(written), removed) == ({_key(tile)}, set())
    assert _cache(server).cached(tile) == written[_key(tile)]  # read through, stored


def test_a_cache_whose_changed_blob_is_damaged_is_extracted_again(
    server: Server, tmp_path: Path
) -> None:
    where, geometry = SHAPES["bbox"]
    _cached_source(server, tmp_path, geometry, missing=False, verify_reads=1.0)
    area = _area(server, where)
    tile = Tile(*get_tms("WebMercatorQuad").tile(24.94, 60.1, 14))
    _store(server, [tile], size=32)
    row = _services(server).caches.index.find(CACHE, tile)
    assert row is not None
    with sqlite3.connect(server.data_dir / "tile-caches" / "blobs.sqlite") as conn:
        damaged = conn.execute(
            "UPDATE blobs SET data = ? WHERE sha256 = ?", (b"not a tile", bytes.fromhex(row.sha256))
        ).rowcount
    assert damaged == 1
    refreshed, result = _refresh(server, area)
    assert result["incremental"] is False
    new = _tiles(_archive(server, refreshed, tmp_path / "p2"))
    fresh = _tiles(_archive(server, _repackage(server, area, where), tmp_path / "fresh"))
    assert new == fresh
    # the full extraction found the blob damaged, dropped it and read the tile through again
    assert new[_key(tile)] == make_tile(tile, TileFormat.PNG)


def test_a_cache_whose_index_cannot_be_read_is_extracted_again(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where, geometry = SHAPES["bbox"]
    _cached_source(server, tmp_path, geometry, missing=False)
    area = _area(server, where)

    def broken(cover: object) -> None:
        raise CacheIndexError("the index is gone")

    monkeypatch.setattr(_cache(server), "stored_hashes", broken)
    refreshed, result = _refresh(server, area)
    assert result["incremental"] is False
    assert _files(refreshed)["basemap.mbtiles"] == _files(area)["basemap.mbtiles"]
