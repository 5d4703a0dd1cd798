"""The cache index: every cache's definition, and for each of its tiles the SHA-256 of the bytes.

Tiles are not kept here: their bytes live once per distinct content in a
:class:`~offmaps.storage.BlobStore`, and the index maps ``(cache, z, x, y)`` to the blob's key.
The :class:`TileIndex` protocol is what the cache service needs; :class:`SQLiteTileIndex` (one
SQLite file in WAL mode, ``DATA/cache/index.sqlite``) is the embedded default, PostgreSQL the
scale-out row to come.

**Never a row pointing at a missing blob.** A writer first records the hashes it is about to
store as *pending* (:meth:`TileIndex.begin_writes`), then puts the blobs, then writes the rows
and drops its pending records in one transaction (:meth:`TileIndex.commit_writes`). Garbage
collection (:meth:`TileIndex.collect`) deletes a blob only inside a write transaction that has
just checked that no row and no pending write names it, so a blob being written, or about to
be found present by a writer, is never collected.

**Import journals.** An import (:func:`~offmaps.cache.imports.import_tiles`) names a journal
when it commits a batch: the batch's tiles and the SHA-256 it stored for each are recorded in
the same transaction as the rows, so a killed import leaves journal and tiles consistent.
:meth:`TileIndex.find_done` gives a rerun the tiles a journal records whose bytes the cache
still holds; :meth:`TileIndex.drop_journal` forgets a journal once its import has finished.
A cache's journals go with it.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from offmaps.cache.model import CacheDefinition, CacheStats, ZoomStats
from offmaps.errors import (
    CacheExistsError,
    CacheIndexError,
    CacheNotFoundError,
    GrantCommittedError,
    GrantNotFoundError,
)
from offmaps.storage import SQLiteConnections
from offmaps.tiling import TileCover
from offmaps.types import Tile, ZoomRange

__all__ = [
    "PENDING_EXPIRY_S",
    "Grant",
    "IndexedTile",
    "Span",
    "SQLTileIndex",
    "SQLiteTileIndex",
    "TileIndex",
    "Usage",
    "cover_spans",
]

PENDING_EXPIRY_S = 24 * 3600.0
"""A pending write older than this is a writer that died; its records no longer protect blobs."""


@dataclass(frozen=True, slots=True)
class IndexedTile:
    """One tile of a cache as the index knows it.

    Attributes:
        tile: its key.
        sha256: the key of its bytes in the blob store.
        size: their length.
        stored: when these bytes were first stored for the tile (Unix seconds).
        checked: when the source last gave these bytes (a fetch that found them unchanged
            moves this, not ``stored``).
    """

    tile: Tile
    sha256: str
    size: int
    stored: float
    checked: float


@dataclass(frozen=True, slots=True)
class Grant:
    """A grant to upload tiles to a cache through presigned URLs.

    Attributes:
        id: the grant's id (also the token of its pending writes).
        cache: the cache's name.
        owner: who asked for it.
        expires: when it can no longer be committed (Unix seconds).
        committed: when it was committed, if it was.
        tiles: (tile, sha256, size) of each tile granted.
    """

    id: str
    cache: str
    owner: str
    expires: float
    committed: float | None
    tiles: tuple[tuple[Tile, str, int], ...]


@dataclass(frozen=True, slots=True)
class Span:
    """Columns ``start``-``stop`` (inclusive) of row ``y`` at level ``z``: a piece of an area."""

    z: int
    y: int
    start: int
    stop: int


def cover_spans(cover: TileCover, zooms: ZoomRange | None = None) -> Iterator[Span]:
    """The row spans of a tile cover, by level and row (the levels of ``zooms``, by default all
    of the cover's): what :meth:`TileIndex.find_spans` and :meth:`TileIndex.truncate` take."""
    for z in (zooms or cover.zooms).levels():
        level = cover.level(z)
        for y, start, stop in zip(
            level.rows.tolist(), level.starts.tolist(), level.stops.tolist(), strict=True
        ):
            yield Span(z, y, start, stop)


@dataclass(slots=True)
class Usage:
    """Counters of one level of one cache, gathered in memory and added to the index at once."""

    hits: int = 0
    misses: int = 0
    fetches: int = 0
    errors: int = 0
    last_access: float = 0.0


class TileIndex(Protocol):
    """Cache definitions and the tile → blob map of every cache. Safe to share between threads."""

    def create_cache(self, definition: CacheDefinition) -> None:
        """Record a new cache. Raises ``CacheExistsError`` when the name is taken."""
        ...

    def definition(self, name: str) -> CacheDefinition:
        """A cache's definition. Raises ``CacheNotFoundError``."""
        ...

    def list_caches(self) -> list[CacheDefinition]:
        """Every cache, by name."""
        ...

    def delete_cache(self, name: str) -> int:
        """Forget a cache and its tiles (their blobs stay for :meth:`collect`); tiles removed."""
        ...

    def find(self, name: str, tile: Tile) -> IndexedTile | None:
        """The tile's row, or None."""
        ...

    def find_spans(self, name: str, spans: Iterable[Span]) -> Iterator[IndexedTile]:
        """The rows of the tiles inside ``spans``."""
        ...

    def span_hashes(self, name: str, spans: Iterable[Span]) -> Iterator[tuple[int, int, int, str]]:
        """``(z, x, y, sha256)`` of each tile inside ``spans``: :meth:`find_spans` without an
        object per tile (a preplanned area's refresh reads its whole cover)."""
        ...

    def begin_writes(self, hashes: Iterable[str]) -> tuple[str, frozenset[str]]:
        """Protect ``hashes`` from collection while they are written.

        Returns a token for :meth:`commit_writes` and the hashes some row already names
        (their blobs are stored: they need no put).
        """
        ...

    def commit_writes(
        self,
        token: str,
        name: str,
        rows: Sequence[tuple[Tile, str, int]],
        now: float,
        *,
        journal: str | None = None,
    ) -> int:
        """Point ``rows`` (tile, sha256, size) at their blobs and end the pending write.

        A tile whose bytes are unchanged only has ``checked`` moved. With ``journal``, the rows
        are recorded as done in that import journal, in the same transaction. Returns how many
        tiles got new bytes.
        """
        ...

    def abort_writes(self, token: str) -> None:
        """End a pending write that wrote no rows."""
        ...

    def forget_blob(self, sha256: str) -> int:
        """Remove every row naming a blob (found damaged), in every cache; rows removed."""
        ...

    def journals(self, name: str) -> dict[str, int]:
        """The import journals of cache ``name`` (imports stopped before they finished), with
        how many tiles each records."""
        ...

    def find_done(self, journal: str, name: str, tiles: Iterable[Tile]) -> set[Tile]:
        """Those of ``tiles`` the journal records as done and whose bytes in cache ``name`` are
        still the ones it recorded (a tile re-seeded, truncated or replaced since is not)."""
        ...

    def drop_journal(self, journal: str) -> int:
        """Forget an import journal (its import finished, or starts afresh); tiles it recorded."""
        ...

    def create_grant(self, grant: Grant) -> None:
        """Record an upload grant; its blobs are pending writes (never collected) until it is
        committed or its writer is taken for dead (:data:`PENDING_EXPIRY_S`)."""
        ...

    def grant(self, grant_id: str) -> Grant | None:
        """An upload grant, or None."""
        ...

    def commit_grant(self, grant_id: str, now: float) -> int:
        """Point the grant's tiles at their (checked) blobs, end its pending writes and mark it
        committed, in one transaction; tiles that got new bytes."""
        ...

    def add_usage(self, name: str, usage: dict[int, Usage]) -> None:
        """Add counters gathered in memory, per level."""
        ...

    def touch(self, name: str, accessed: dict[Tile, float]) -> None:
        """Record when tiles were last read (for least-recently-used cleanup)."""
        ...

    def stats(self, name: str) -> CacheStats:
        """A cache's figures per level."""
        ...

    def truncate(self, name: str, spans: Iterable[Span] | None, zooms: range | None) -> int:
        """Remove the tiles inside ``spans`` (or every tile) at ``zooms`` (or every level)."""
        ...

    def remove_older(self, name: str, before: float) -> int:
        """Remove the tiles whose bytes were stored before ``before`` (Unix seconds)."""
        ...

    def trim_to(self, name: str, max_bytes: int) -> int:
        """Remove least recently used tiles until the cache's tiles take at most ``max_bytes``."""
        ...

    def collect(
        self, keys: Iterable[str], delete: Callable[[str], None], *, batch: int = 500
    ) -> tuple[int, int]:
        """Delete, through ``delete``, each of ``keys`` no row and no pending write names.

        Returns (blobs deleted, their count of candidates examined).
        """
        ...

    def blob_sizes(self, name: str | None = None) -> dict[str, int]:
        """The key and size of every blob a tile of ``name`` (or of any cache) names."""
        ...

    def close(self) -> None:
        """Close the index."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS caches (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    definition TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tiles (
    cache INTEGER NOT NULL,
    z INTEGER NOT NULL,
    x INTEGER NOT NULL,
    y INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    stored REAL NOT NULL,
    checked REAL NOT NULL,
    accessed REAL,
    PRIMARY KEY (cache, z, y, x)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tiles_blob ON tiles (sha256);
CREATE TABLE IF NOT EXISTS pending (
    token TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (sha256, token)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    cache INTEGER NOT NULL,
    owner TEXT NOT NULL,
    expires REAL NOT NULL,
    committed REAL
);
CREATE TABLE IF NOT EXISTS grant_tiles (
    grant_id TEXT NOT NULL,
    z INTEGER NOT NULL,
    x INTEGER NOT NULL,
    y INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (grant_id, z, y, x)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage (
    cache INTEGER NOT NULL,
    z INTEGER NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    misses INTEGER NOT NULL DEFAULT 0,
    fetches INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    last_access REAL,
    PRIMARY KEY (cache, z)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS imports (
    id TEXT PRIMARY KEY,
    cache INTEGER NOT NULL,
    started REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS import_tiles (
    import_id TEXT NOT NULL,
    z INTEGER NOT NULL,
    y INTEGER NOT NULL,
    x INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (import_id, z, y, x)
) WITHOUT ROWID;
"""


_IN_BATCH = 500
"""Values per ``IN (...)`` list."""
_NAMED = (
    "SELECT EXISTS (SELECT 1 FROM tiles WHERE sha256 = ?)"
    " OR EXISTS (SELECT 1 FROM pending WHERE sha256 = ?)"
)
"""Whether a row or a pending write names a blob."""
_PENDING = "INSERT INTO pending (token, sha256, since) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"


def _time(value: float | None) -> datetime | None:
    return None if not value else datetime.fromtimestamp(value, UTC)


class _Conn(Protocol):
    """What the index's SQL runs on: SQLite's connection, or a PostgreSQL one adapted to it."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...
    def executemany(self, sql: str, parameters: Any, /) -> Any: ...


class SQLTileIndex:
    """The index's logic in SQL that SQLite and PostgreSQL both run (``?`` placeholders).

    Subclasses give connections, transactions, the schema and the writers' lock: every write
    goes through :meth:`_write`, one transaction; :meth:`_lock_writers` serialises the writes
    that must not interleave with a garbage collection's check and delete.
    """

    _unique_violation: tuple[type[Exception], ...] = ()

    def _conn(self) -> _Conn:
        raise NotImplementedError

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _write(self, work: Callable[[_Conn], int]) -> int:
        raise NotImplementedError

    def _lock_writers(self, conn: _Conn) -> None:
        """Keep writers that record pending blobs from interleaving with a collection."""

    def _id(self, conn: _Conn | None, name: str) -> int:
        row = (
            (conn or self._conn())
            .execute("SELECT id FROM caches WHERE name = ?", (name,))
            .fetchone()
        )
        if row is None:
            raise CacheNotFoundError(f"no tile cache {name!r}", name=name)
        return int(row[0])

    # --- caches ----------------------------------------------------------------------------

    def create_cache(self, definition: CacheDefinition) -> None:
        """Record a new cache. Raises ``CacheExistsError`` when the name is taken."""

        def work(conn: _Conn) -> int:
            try:
                conn.execute(
                    "INSERT INTO caches (name, definition, created) VALUES (?, ?, ?)",
                    (definition.name, definition.model_dump_json(), time.time()),
                )
            except self._unique_violation:
                raise CacheExistsError(
                    f"a tile cache called {definition.name!r} exists already",
                    name=definition.name,
                ) from None
            return 1

        self._write(work)

    def definition(self, name: str) -> CacheDefinition:
        """A cache's definition. Raises ``CacheNotFoundError``."""
        rows = self._read("SELECT definition FROM caches WHERE name = ?", (name,))
        if not rows:
            raise CacheNotFoundError(f"no tile cache {name!r}", name=name)
        return CacheDefinition.model_validate_json(str(rows[0][0]))

    def list_caches(self) -> list[CacheDefinition]:
        """Every cache, by name."""
        rows = self._read("SELECT definition FROM caches ORDER BY name")
        return [CacheDefinition.model_validate_json(str(row[0])) for row in rows]

    def delete_cache(self, name: str) -> int:
        """Forget a cache and its tiles (their blobs stay for :meth:`collect`); tiles removed."""

        def work(conn: _Conn) -> int:
            cache = self._id(conn, name)
            removed = conn.execute("DELETE FROM tiles WHERE cache = ?", (cache,)).rowcount
            conn.execute("DELETE FROM usage WHERE cache = ?", (cache,))
            conn.execute(
                "DELETE FROM import_tiles WHERE import_id IN "
                "(SELECT id FROM imports WHERE cache = ?)",
                (cache,),
            )
            conn.execute("DELETE FROM imports WHERE cache = ?", (cache,))
            conn.execute("DELETE FROM caches WHERE id = ?", (cache,))
            return int(removed)

        return self._write(work)

    # --- tiles -----------------------------------------------------------------------------

    def find(self, name: str, tile: Tile) -> IndexedTile | None:
        """The tile's row, or None."""
        rows = self._read(
            "SELECT t.sha256, t.size, t.stored, t.checked FROM tiles t JOIN caches c "
            "ON t.cache = c.id WHERE c.name = ? AND t.z = ? AND t.y = ? AND t.x = ?",
            (name, tile.z, tile.y, tile.x),
        )
        if not rows:
            return None
        sha256, size, stored, checked = rows[0]
        return IndexedTile(tile, str(sha256), int(size), float(stored), float(checked))

    def find_spans(self, name: str, spans: Iterable[Span]) -> Iterator[IndexedTile]:
        """The rows of the tiles inside ``spans``."""
        cache = self._id(None, name)
        for span in spans:
            rows = self._read(
                "SELECT x, sha256, size, stored, checked FROM tiles WHERE cache = ? AND z = ? "
                "AND y = ? AND x BETWEEN ? AND ? ORDER BY x",
                (cache, span.z, span.y, span.start, span.stop),
            )
            for x, sha256, size, stored, checked in rows:
                yield IndexedTile(
                    Tile(int(x), span.y, span.z),
                    str(sha256),
                    int(size),
                    float(stored),
                    float(checked),
                )

    def span_hashes(self, name: str, spans: Iterable[Span]) -> Iterator[tuple[int, int, int, str]]:
        """``(z, x, y, sha256)`` of each tile inside ``spans``: :meth:`find_spans` without an
        object per tile (a preplanned area's refresh reads its whole cover)."""
        cache = self._id(None, name)
        for span in spans:
            rows = self._read(
                "SELECT x, sha256 FROM tiles WHERE cache = ? AND z = ? AND y = ? "
                "AND x BETWEEN ? AND ? ORDER BY x",
                (cache, span.z, span.y, span.start, span.stop),
            )
            for x, sha256 in rows:
                yield span.z, int(x), span.y, str(sha256)

    def begin_writes(self, hashes: Iterable[str]) -> tuple[str, frozenset[str]]:
        """Protect ``hashes`` from collection while they are written.

        Returns a token for :meth:`commit_writes` and the hashes some row already names
        (their blobs are stored: they need no put).
        """
        token = uuid.uuid4().hex
        wanted = sorted(set(hashes))
        known: set[str] = set()

        def work(conn: _Conn) -> int:
            self._lock_writers(conn)
            now = time.time()
            conn.executemany(
                _PENDING,
                [(token, sha256, now) for sha256 in wanted],
            )
            for start in range(0, len(wanted), _IN_BATCH):
                batch = wanted[start : start + _IN_BATCH]
                marks = ", ".join("?" * len(batch))
                query = f"SELECT DISTINCT sha256 FROM tiles WHERE sha256 IN ({marks})"  # noqa: S608
                known.update(str(sha256) for (sha256,) in conn.execute(query, batch).fetchall())
            return len(wanted)

        self._write(work)
        return token, frozenset(known)

    def commit_writes(
        self,
        token: str,
        name: str,
        rows: Sequence[tuple[Tile, str, int]],
        now: float,
        *,
        journal: str | None = None,
    ) -> int:
        """Point ``rows`` (tile, sha256, size) at their blobs and end the pending write.

        A tile whose bytes are unchanged only has ``checked`` moved. With ``journal``, the rows
        are recorded as done in that import journal, in the same transaction. Returns how many
        tiles got new bytes.
        """

        def work(conn: _Conn) -> int:
            changed = self._upsert(conn, token, name, rows, now)
            if journal is not None:
                self._record(conn, journal, name, rows, now)
            return changed

        return self._write(work)

    def _record(
        self,
        conn: _Conn,
        journal: str,
        name: str,
        rows: Sequence[tuple[Tile, str, int]],
        now: float,
    ) -> None:
        conn.execute(
            "INSERT INTO imports (id, cache, started) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (journal, self._id(conn, name), now),
        )
        conn.executemany(
            "INSERT INTO import_tiles (import_id, z, y, x, sha256) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (import_id, z, y, x) DO UPDATE SET sha256 = excluded.sha256",
            [(journal, t.z, t.y, t.x, sha256) for t, sha256, _ in rows],
        )

    def journals(self, name: str) -> dict[str, int]:
        """The import journals of cache ``name`` (imports stopped before they finished), with
        how many tiles each records."""
        rows = self._read(
            "SELECT i.id, count(j.import_id) FROM imports i LEFT JOIN import_tiles j "
            "ON j.import_id = i.id WHERE i.cache = ? GROUP BY i.id",
            (self._id(None, name),),
        )
        return {str(key): int(count) for key, count in rows}

    def find_done(self, journal: str, name: str, tiles: Iterable[Tile]) -> set[Tile]:
        """Those of ``tiles`` the journal records as done and whose bytes in cache ``name`` are
        still the ones it recorded (a tile re-seeded, truncated or replaced since is not)."""
        wanted = set(tiles)
        if not wanted:
            return set()
        cache = self._id(None, name)
        rows: dict[tuple[int, int], list[int]] = {}
        for tile in wanted:
            rows.setdefault((tile.z, tile.y), []).append(tile.x)
        done: set[Tile] = set()
        # one range query per row of tiles: a batch of a source's tiles spans few rows
        for (z, y), xs in rows.items():
            found = self._read(
                "SELECT j.x FROM import_tiles j JOIN tiles t ON t.cache = ? AND t.z = j.z "
                "AND t.y = j.y AND t.x = j.x AND t.sha256 = j.sha256 "
                "WHERE j.import_id = ? AND j.z = ? AND j.y = ? AND j.x BETWEEN ? AND ?",
                (cache, journal, z, y, min(xs), max(xs)),
            )
            done.update(tile for (x,) in found if (tile := Tile(int(x), y, z)) in wanted)
        return done

    def drop_journal(self, journal: str) -> int:
        """Forget an import journal (its import finished, or starts afresh); tiles it recorded."""

        def work(conn: _Conn) -> int:
            removed = conn.execute(
                "DELETE FROM import_tiles WHERE import_id = ?", (journal,)
            ).rowcount
            conn.execute("DELETE FROM imports WHERE id = ?", (journal,))
            return int(removed)

        return self._write(work)

    def _upsert(
        self,
        conn: _Conn,
        token: str,
        name: str,
        rows: Sequence[tuple[Tile, str, int]],
        now: float,
    ) -> int:
        cache = self._id(conn, name)
        # new tiles and tiles whose bytes changed are written (and counted); the others only
        # have ``checked`` moved
        changed = int(
            conn.executemany(
                "INSERT INTO tiles (cache, z, x, y, sha256, size, stored, checked) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (cache, z, y, x) DO UPDATE SET "
                "sha256 = excluded.sha256, size = excluded.size, stored = excluded.stored, "
                "checked = excluded.checked WHERE tiles.sha256 != excluded.sha256",
                [(cache, t.z, t.x, t.y, sha256, size, now, now) for t, sha256, size in rows],
            ).rowcount
        )
        conn.executemany(
            "UPDATE tiles SET checked = ? "
            "WHERE cache = ? AND z = ? AND y = ? AND x = ? AND checked < ?",
            [(now, cache, t.z, t.y, t.x, now) for t, _, _ in rows],
        )
        conn.execute("DELETE FROM pending WHERE token = ?", (token,))
        return changed

    def abort_writes(self, token: str) -> None:
        """End a pending write that wrote no rows."""
        self._write(
            lambda conn: conn.execute("DELETE FROM pending WHERE token = ?", (token,)).rowcount
        )

    def forget_blob(self, sha256: str) -> int:
        """Remove every row naming a blob (found damaged), in every cache; rows removed."""
        return self._write(
            lambda conn: int(conn.execute("DELETE FROM tiles WHERE sha256 = ?", (sha256,)).rowcount)
        )

    def create_grant(self, grant: Grant) -> None:
        """Record an upload grant; its blobs are pending writes (never collected) until it is
        committed or its writer is taken for dead (:data:`PENDING_EXPIRY_S`)."""

        def work(conn: _Conn) -> int:
            self._lock_writers(conn)
            cache = self._id(conn, grant.cache)
            conn.execute(
                "INSERT INTO grants (id, cache, owner, expires) VALUES (?, ?, ?, ?)",
                (grant.id, cache, grant.owner, grant.expires),
            )
            conn.executemany(
                "INSERT INTO grant_tiles (grant_id, z, x, y, sha256, size) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(grant.id, t.z, t.x, t.y, sha256, size) for t, sha256, size in grant.tiles],
            )
            now = time.time()
            conn.executemany(
                _PENDING,
                sorted({(grant.id, sha256, now) for _, sha256, _ in grant.tiles}),
            )
            return len(grant.tiles)

        self._write(work)

    def grant(self, grant_id: str) -> Grant | None:
        """An upload grant, or None."""
        rows = self._read(
            "SELECT c.name, g.owner, g.expires, g.committed FROM grants g JOIN caches c "
            "ON g.cache = c.id WHERE g.id = ?",
            (grant_id,),
        )
        if not rows:
            return None
        name, owner, expires, committed = rows[0]
        tiles = self._read(
            "SELECT z, x, y, sha256, size FROM grant_tiles WHERE grant_id = ? ORDER BY z, y, x",
            (grant_id,),
        )
        return Grant(
            grant_id,
            str(name),
            str(owner),
            float(expires),
            None if committed is None else float(committed),
            tuple(
                (Tile(int(x), int(y), int(z)), str(sha256), int(size))
                for z, x, y, sha256, size in tiles
            ),
        )

    def commit_grant(self, grant_id: str, now: float) -> int:
        """Point the grant's tiles at their (checked) blobs, end its pending writes and mark it
        committed, in one transaction; tiles that got new bytes."""
        found = self.grant(grant_id)
        if found is None:
            raise GrantNotFoundError(f"no upload grant {grant_id!r}")

        def work(conn: _Conn) -> int:
            marked = conn.execute(
                "UPDATE grants SET committed = ? WHERE id = ? AND committed IS NULL",
                (now, grant_id),
            ).rowcount
            if not marked:
                raise GrantCommittedError(f"upload grant {grant_id!r} was committed already")
            return self._upsert(conn, grant_id, found.cache, found.tiles, now)

        return self._write(work)

    # --- usage -----------------------------------------------------------------------------

    def add_usage(self, name: str, usage: dict[int, Usage]) -> None:
        """Add counters gathered in memory, per level."""
        if not usage:
            return

        def work(conn: _Conn) -> int:
            try:
                cache = self._id(conn, name)
            except CacheNotFoundError:
                return 0  # deleted meanwhile: its counters went with it
            conn.executemany(
                "INSERT INTO usage (cache, z, hits, misses, fetches, errors, last_access) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cache, z) DO UPDATE SET "
                "hits = usage.hits + excluded.hits, misses = usage.misses + excluded.misses, "
                "fetches = usage.fetches + excluded.fetches, "
                "errors = usage.errors + excluded.errors, "
                "last_access = CASE WHEN coalesce(usage.last_access, 0) > "
                "coalesce(excluded.last_access, 0) THEN usage.last_access "
                "ELSE excluded.last_access END",
                [
                    (cache, z, u.hits, u.misses, u.fetches, u.errors, u.last_access or None)
                    for z, u in usage.items()
                ],
            )
            return len(usage)

        self._write(work)

    def touch(self, name: str, accessed: dict[Tile, float]) -> None:
        """Record when tiles were last read (for least-recently-used cleanup)."""
        if not accessed:
            return

        def work(conn: _Conn) -> int:
            try:
                cache = self._id(conn, name)
            except CacheNotFoundError:
                return 0
            conn.executemany(
                "UPDATE tiles SET accessed = ? WHERE cache = ? AND z = ? AND y = ? AND x = ?",
                [(when, cache, t.z, t.y, t.x) for t, when in accessed.items()],
            )
            return len(accessed)

        self._write(work)

    def stats(self, name: str) -> CacheStats:
        """A cache's figures per level."""
        cache = self._id(None, name)
        stored = self._read(
            "SELECT z, count(*), sum(size) FROM tiles WHERE cache = ? GROUP BY z", (cache,)
        )
        blobs = self._read(
            "SELECT z, count(*), sum(size) FROM (SELECT DISTINCT z, sha256, size FROM tiles "
            "WHERE cache = ?) AS distinct_blobs GROUP BY z",
            (cache,),
        )
        used = self._read(
            "SELECT z, hits, misses, fetches, errors, last_access FROM usage WHERE cache = ?",
            (cache,),
        )
        total = self._read(
            "SELECT count(*), coalesce(sum(size), 0) FROM (SELECT DISTINCT sha256, size "
            "FROM tiles WHERE cache = ?) AS distinct_blobs",
            (cache,),
        )
        levels: dict[int, dict[str, Any]] = {}
        for z, count, size in stored:
            levels.setdefault(int(z), {}).update(tiles=int(count), bytes=int(size))
        for z, count, size in blobs:
            levels.setdefault(int(z), {}).update(blobs=int(count), blob_bytes=int(size))
        for z, hits, misses, fetches, errors, last in used:
            levels.setdefault(int(z), {}).update(
                hits=hits,
                misses=misses,
                fetches=fetches,
                errors=errors,
                last_access=_time(last),
            )
        rows = tuple(ZoomStats(z=z, **fields) for z, fields in sorted(levels.items()))
        return CacheStats(
            name=name,
            levels=rows,
            tiles=sum(level.tiles for level in rows),
            bytes=sum(level.bytes for level in rows),
            blobs=int(total[0][0]),
            blob_bytes=int(total[0][1]),
        )

    # --- cleanup ---------------------------------------------------------------------------

    def truncate(self, name: str, spans: Iterable[Span] | None, zooms: range | None) -> int:
        """Remove the tiles inside ``spans`` (or every tile) at ``zooms`` (or every level)."""

        def work(conn: _Conn) -> int:
            cache = self._id(conn, name)
            if spans is None:
                if zooms is None:
                    cursor = conn.execute("DELETE FROM tiles WHERE cache = ?", (cache,))
                else:
                    cursor = conn.execute(
                        "DELETE FROM tiles WHERE cache = ? AND z BETWEEN ? AND ?",
                        (cache, zooms.start, zooms.stop - 1),
                    )
                return int(cursor.rowcount)
            removed = 0
            for span in spans:
                if zooms is not None and span.z not in zooms:
                    continue
                removed += conn.execute(
                    "DELETE FROM tiles WHERE cache = ? AND z = ? AND y = ? AND x BETWEEN ? AND ?",
                    (cache, span.z, span.y, span.start, span.stop),
                ).rowcount
            return removed

        return self._write(work)

    def remove_older(self, name: str, before: float) -> int:
        """Remove the tiles whose bytes were stored before ``before`` (Unix seconds)."""

        def work(conn: _Conn) -> int:
            cache = self._id(conn, name)
            return int(
                conn.execute(
                    "DELETE FROM tiles WHERE cache = ? AND stored < ?", (cache, before)
                ).rowcount
            )

        return self._write(work)

    def trim_to(self, name: str, max_bytes: int) -> int:
        """Remove least recently used tiles until the cache's tiles take at most ``max_bytes``."""

        def work(conn: _Conn) -> int:
            cache = self._id(conn, name)
            (total,) = conn.execute(
                "SELECT coalesce(sum(size), 0) FROM tiles WHERE cache = ?", (cache,)
            ).fetchone()
            excess = int(total) - max_bytes
            if excess <= 0:
                return 0
            doomed: list[tuple[int, int, int]] = []
            for z, y, x, size in conn.execute(
                "SELECT z, y, x, size FROM tiles WHERE cache = ? "
                "ORDER BY coalesce(accessed, stored), z DESC",
                (cache,),
            ):
                doomed.append((int(z), int(y), int(x)))
                excess -= int(size)
                if excess <= 0:
                    break
            conn.executemany(
                "DELETE FROM tiles WHERE cache = ? AND z = ? AND y = ? AND x = ?",
                [(cache, z, y, x) for z, y, x in doomed],
            )
            return len(doomed)

        return self._write(work)

    def collect(
        self, keys: Iterable[str], delete: Callable[[str], None], *, batch: int = 500
    ) -> tuple[int, int]:
        """Delete, through ``delete``, each of ``keys`` no row and no pending write names.

        Each batch is checked and deleted inside one write transaction, so no writer can find
        a blob present (or start writing one) between the check and the delete. Pending
        writes older than :data:`PENDING_EXPIRY_S` are dropped first: their writers died.
        Returns (blobs deleted, keys examined).
        """
        self._write(
            lambda conn: (
                conn.execute(
                    "DELETE FROM pending WHERE since < ?", (time.time() - PENDING_EXPIRY_S,)
                ).rowcount
            )
        )
        deleted = examined = 0
        chunk: list[str] = []

        def sweep(conn: _Conn) -> int:
            self._lock_writers(conn)
            gone = 0
            for key in chunk:
                # one statement, so one snapshot: in PostgreSQL's READ COMMITTED two queries
                # could miss a writer committing between them (its rows not yet visible to the
                # first, its pending record gone for the second) and delete a named blob
                (named,) = conn.execute(_NAMED, (key, key)).fetchone()
                if named:
                    continue
                delete(key)
                gone += 1
            return gone

        for key in keys:
            chunk.append(key)
            examined += 1
            if len(chunk) >= batch:
                deleted += self._write(sweep)
                chunk = []
        if chunk:
            deleted += self._write(sweep)
        return deleted, examined

    def blob_sizes(self, name: str | None = None) -> dict[str, int]:
        """The key and size of every blob a tile of ``name`` (or of any cache) names."""
        if name is None:
            rows = self._read("SELECT sha256, max(size) FROM tiles GROUP BY sha256")
        else:
            rows = self._read(
                "SELECT sha256, max(size) FROM tiles WHERE cache = ? GROUP BY sha256",
                (self._id(None, name),),
            )
        return {str(sha256): int(size) for sha256, size in rows}


class SQLiteTileIndex(SQLTileIndex):
    """The cache index in one SQLite file (WAL), one connection per thread.

    Args:
        path: the index file, created with its folder when missing.

    Raises:
        CacheIndexError: the file cannot be created, or is not a cache index.
    """

    _unique_violation = (sqlite3.IntegrityError,)

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connections = SQLiteConnections(path, "synchronous=NORMAL", "foreign_keys=OFF")
        try:
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise CacheIndexError(f"{path}: not a usable cache index: {exc}") from exc

    def __repr__(self) -> str:
        return f"SQLiteTileIndex({str(self.path)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # another process (a seed's workers) gets the file and opens its own connections
        return (type(self), (self.path,))

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise CacheIndexError(f"{self.path}: cannot read the cache index: {exc}") from exc

    def _write(self, work: Callable[[_Conn], int]) -> int:
        try:
            return self._connections.write(work)
        except sqlite3.Error as exc:
            raise CacheIndexError(f"{self.path}: cannot write the cache index: {exc}") from exc

    def close(self) -> None:
        """Close every connection of every thread."""
        self._connections.close()
