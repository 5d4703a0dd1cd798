"""Caches behind the tile services: a SQLite file for upstream tiles, an LRU in memory.

Used by the upstream and function sources; the tile cache service builds on them.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path

from offmaps.errors import ContainerCorruptError, ContainerWriteError
from offmaps.types import Tile

__all__ = ["MemoryTileCache", "SQLiteTileCache"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tiles (
    z INTEGER NOT NULL,
    x INTEGER NOT NULL,
    y INTEGER NOT NULL,
    data BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    fetched_at REAL NOT NULL,
    PRIMARY KEY (z, x, y)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SQLiteTileCache:
    """Tiles fetched from an upstream server, kept in one SQLite file (WAL).

    Reads use one connection per thread; writes go through one connection under a lock. Each row
    keeps the SHA-256 of its bytes: a row whose bytes no longer match is treated as missing.

    Args:
        path: the cache file, created when missing.
        source: what the tiles were fetched from (the URL template); a cache filled from another
            source is emptied on open, so a changed URL never serves stale tiles.

    Raises:
        ContainerCorruptError: when ``path`` exists and is not a SQLite database.
        ContainerWriteError: when the cache cannot be created.
    """

    def __init__(self, path: Path, *, source: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise ContainerWriteError(f"{path}: cannot create the tile cache: {exc}") from exc
        try:
            self._writer.execute("PRAGMA journal_mode=WAL")
            self._writer.execute("PRAGMA synchronous=NORMAL")
            self._writer.executescript(_SCHEMA)
            row = self._writer.execute("SELECT value FROM meta WHERE name = 'source'").fetchone()
            if row is None or row[0] != source:
                # Tiles first, then the source: a crash between the two empties it again.
                self._writer.execute("DELETE FROM tiles")
                self._writer.execute(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES ('source', ?)", (source,)
                )
        except sqlite3.DatabaseError as exc:
            self._writer.close()
            raise ContainerCorruptError(
                f"{path}: not a usable tile cache: {exc}", path=path
            ) from exc

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    def find(self, tile: Tile) -> bytes | None:
        """The cached bytes of ``tile``, or None when not cached (or damaged)."""
        try:
            row = (
                self._reader()
                .execute(
                    "SELECT data, sha256 FROM tiles WHERE z = ? AND x = ? AND y = ?",
                    (tile.z, tile.x, tile.y),
                )
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise ContainerCorruptError(
                f"{self.path}: cannot read the tile cache: {exc}", path=self.path
            ) from exc
        if row is None:
            return None
        data, digest = bytes(row[0]), str(row[1])
        if hashlib.sha256(data).hexdigest() != digest:
            return None
        return data

    def put(self, tile: Tile, data: bytes) -> None:
        """Store ``data`` for ``tile``, replacing what was there."""
        digest = hashlib.sha256(data).hexdigest()
        try:
            with self._lock:
                self._writer.execute(
                    "INSERT OR REPLACE INTO tiles (z, x, y, data, sha256, fetched_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (tile.z, tile.x, tile.y, data, digest, time.time()),
                )
        except sqlite3.Error as exc:
            raise ContainerWriteError(
                f"{self.path}: cannot write to the tile cache: {exc}", path=self.path
            ) from exc

    def count(self) -> int:
        """How many tiles are cached."""
        row = self._reader().execute("SELECT count(*) FROM tiles").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._writer.close()
        self._local = threading.local()


class MemoryTileCache:
    """A least-recently-used cache of tiles in memory, bounded by the bytes it holds.

    Args:
        max_bytes: the budget; a tile larger than the budget is never kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._tiles: OrderedDict[Tile, bytes] = OrderedDict()
        self._size = 0

    @property
    def size(self) -> int:
        """The bytes held now."""
        return self._size

    def __len__(self) -> int:
        return len(self._tiles)

    def find(self, tile: Tile) -> bytes | None:
        """The cached bytes of ``tile``, or None; a hit makes it the most recently used."""
        with self._lock:
            data = self._tiles.get(tile)
            if data is not None:
                self._tiles.move_to_end(tile)
            return data

    def put(self, tile: Tile, data: bytes) -> None:
        """Keep ``data`` for ``tile``, dropping the least recently used tiles over budget."""
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._tiles.pop(tile, None)
            if old is not None:
                self._size -= len(old)
            self._tiles[tile] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, dropped = self._tiles.popitem(last=False)
                self._size -= len(dropped)
