"""The caches behind tile services: the SQLite file of upstream tiles and the LRU in memory."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from offmaps.errors import ContainerCorruptError
from offmaps.sources.cache import MemoryTileCache, SQLiteTileCache
from offmaps.types import Tile

SOURCE = "WebMercatorQuad https://tiles.example.org/{z}/{x}/{y}.png"


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[SQLiteTileCache]:
    cache = SQLiteTileCache(tmp_path / "osm.cache.sqlite", source=SOURCE)
    yield cache
    cache.close()


def test_a_stored_tile_is_found_with_its_bytes(cache: SQLiteTileCache) -> None:
    cache.put(Tile(1, 2, 3), b"abc")
    assert cache.find(Tile(1, 2, 3)) == b"abc"
    assert cache.find(Tile(2, 1, 3)) is None
    assert cache.count() == 1


def test_rows_keep_sha256_and_fetch_time_in_a_wal_database(
    cache: SQLiteTileCache, tmp_path: Path
) -> None:
    cache.put(Tile(0, 0, 0), b"abc")
    with sqlite3.connect(tmp_path / "osm.cache.sqlite") as conn:
        row = conn.execute("SELECT sha256, fetched_at FROM tiles").fetchone()
        mode = conn.execute("PRAGMA journal_mode").fetchone()
    conn.close()
    assert row[0] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert row[1] > 0
    assert mode == ("wal",)


def test_a_row_whose_bytes_no_longer_match_its_hash_is_a_miss(
    cache: SQLiteTileCache, tmp_path: Path
) -> None:
    cache.put(Tile(0, 0, 0), b"abc")
    with sqlite3.connect(tmp_path / "osm.cache.sqlite") as conn:
        conn.execute("UPDATE tiles SET data = ?", (b"abd",))
    conn.close()
    assert cache.find(Tile(0, 0, 0)) is None


def test_a_cache_filled_from_another_source_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "osm.cache.sqlite"
    first = SQLiteTileCache(path, source=SOURCE)
    first.put(Tile(0, 0, 0), b"abc")
    first.close()
    same = SQLiteTileCache(path, source=SOURCE)
    assert same.find(Tile(0, 0, 0)) == b"abc"
    same.close()
    other = SQLiteTileCache(path, source="WebMercatorQuad https://other.example.org/{z}/{x}/{y}")
    assert other.find(Tile(0, 0, 0)) is None
    other.close()


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "osm.cache.sqlite"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(ContainerCorruptError):
        SQLiteTileCache(path, source=SOURCE)


def test_concurrent_writers_and_readers_lose_nothing(cache: SQLiteTileCache) -> None:
    tiles = [Tile(x, y, 5) for x in range(10) for y in range(10)]

    def work(tile: Tile) -> bytes | None:
        cache.put(tile, repr(tile).encode())
        return cache.find(tile)

    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(work, tiles))
    assert found == [repr(tile).encode() for tile in tiles]
    assert cache.count() == len(tiles)


def test_memory_cache_drops_the_least_recently_used_tiles_over_budget() -> None:
    cache = MemoryTileCache(max_bytes=10)
    cache.put(Tile(0, 0, 1), b"aaaa")
    cache.put(Tile(1, 0, 1), b"bbbb")
    assert cache.find(Tile(0, 0, 1)) == b"aaaa"  # now the most recently used
    cache.put(Tile(0, 1, 1), b"cccc")
    assert cache.find(Tile(1, 0, 1)) is None
    assert cache.find(Tile(0, 0, 1)) == b"aaaa"
    assert cache.find(Tile(0, 1, 1)) == b"cccc"
    assert cache.size == 8
    assert len(cache) == 2


def test_memory_cache_never_keeps_a_tile_larger_than_its_budget() -> None:
    cache = MemoryTileCache(max_bytes=3)
    cache.put(Tile(0, 0, 0), b"abcd")
    assert cache.find(Tile(0, 0, 0)) is None
    assert cache.size == 0


def test_memory_cache_replacing_a_tile_counts_its_bytes_once() -> None:
    cache = MemoryTileCache(max_bytes=10)
    cache.put(Tile(0, 0, 0), b"abcd")
    cache.put(Tile(0, 0, 0), b"ab")
    assert cache.size == 2
    assert cache.find(Tile(0, 0, 0)) == b"ab"
