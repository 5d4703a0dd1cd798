"""What the SQLite-based containers (MBTiles, GeoPackage) share: read-only opening, error mapping,
and a writer that bulk-loads one transaction into the temporary file.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from offmaps.containers._common import WriterBase
from offmaps.containers.base import TilesetMetadata
from offmaps.errors import ContainerCorruptError, ContainerError, ContainerWriteError
from offmaps.types import Tile

__all__ = [
    "tile_blob",
    "SQLiteWriterBase",
    "open_read_only",
    "quick_check",
    "quote_identifier",
    "read_error",
    "table_exists",
]

_BATCH_ROWS = 1000
_BATCH_BYTES = 16 * 1024 * 1024
_MAX_QUICK_CHECK_LINES = 20
_MAX_ERROR_CHARS = 160
_CACHE_KIB = 64 * 1024  # page cache while building: fewer B-tree page writes on big loads


def tile_blob(path: Path, tile: Tile, data: object) -> bytes:
    """A tile row's data as bytes, or ContainerCorruptError naming the tile when NULL or empty."""
    if not isinstance(data, bytes) or not data:
        kind = "NULL" if data is None else "empty" if data in (b"", "") else "not a BLOB"
        raise ContainerCorruptError(
            f"{path}: tile {tile.z}/{tile.x}/{tile.y} has no tile data ({kind})",
            path=path,
            tile=(tile.x, tile.y, tile.z),
        )
    return data


def quote_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier, safe whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


def read_error(
    path: Path, exc: sqlite3.Error, *, tile: Tile | None = None, what: str = "SQLite file"
) -> ContainerCorruptError:
    """A ContainerCorruptError naming the file (and the tile) for an error SQLite raised."""
    where = f" (tile {tile.z}/{tile.x}/{tile.y})" if tile is not None else ""
    # SQLite may quote a whole damaged value, newlines and all: keep the message one short line
    said = " ".join(str(exc).split())
    if len(said) > _MAX_ERROR_CHARS:
        said = said[:_MAX_ERROR_CHARS] + "..."
    return ContainerCorruptError(
        f"{path}: cannot read the {what}{where}: {said}",
        path=path,
        tile=(tile.x, tile.y, tile.z) if tile is not None else None,
    )


def open_read_only(path: Path, *, what: str) -> sqlite3.Connection:
    """Open a SQLite file read-only and check that it is a database at all.

    Args:
        path: the file.
        what: the kind of file, for messages ("MBTiles file").

    Raises:
        ContainerError: when the file does not exist or is a folder.
        ContainerCorruptError: when it is not a SQLite database.
    """
    if not path.exists():
        raise ContainerError(f"{path} does not exist", path=path)
    if not path.is_file():
        raise ContainerError(f"{path} is not a file", path=path)
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        # Readers are not thread-safe, but they may be used from another thread than the one
        # that opened them (a worker pool), one at a time.
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        raise ContainerError(f"{path}: cannot open the {what}: {exc}", path=path) from exc
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        raise ContainerCorruptError(
            f"{path}: not a valid {what}: {exc}", path=path, offset=0
        ) from exc
    return conn


def table_exists(conn: sqlite3.Connection, name: str, *, views: bool = True) -> bool:
    """Whether the database has a table (or view) called ``name``."""
    kinds = ("table", "view") if views else ("table", "table")
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE name = ? AND type IN (?, ?)", (name, *kinds)
    ).fetchone()
    return row is not None


def quick_check(conn: sqlite3.Connection) -> list[str]:
    """Problems reported by ``PRAGMA quick_check`` (empty when the file is sound)."""
    # SQLite puts several lines in one row ("*** in database main ***\nPage 4: ..."): one each
    lines = [str(row[0]).replace("\n", "; ") for row in conn.execute("PRAGMA quick_check")]
    if lines == ["ok"]:
        return []
    problems = [f"SQLite quick_check: {line}" for line in lines[:_MAX_QUICK_CHECK_LINES]]
    if len(lines) > _MAX_QUICK_CHECK_LINES:
        problems.append(f"SQLite quick_check: ... and {len(lines) - _MAX_QUICK_CHECK_LINES} more")
    return problems


class SQLiteWriterBase(WriterBase):
    """A writer that bulk-loads rows into a new SQLite file in one transaction.

    While building, the temporary file has no rollback journal and is not synced: a failure
    deletes the whole file anyway, so neither buys anything. Rows are buffered and inserted with
    ``executemany`` in batches. Subclasses create their schema in ``_create_schema``, turn tiles
    into rows with ``_rows`` and add what is left in ``_complete``; every SQLite error becomes a
    ContainerWriteError naming the destination.
    """

    what = "SQLite file"

    def __init__(self, path: Path | str, metadata: TilesetMetadata, *, overwrite: bool = False):
        super().__init__(path, metadata, overwrite=overwrite)
        self._batch: list[Sequence[Any]] = []
        self._batch_bytes = 0
        self._conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self.temp, isolation_level=None)
        except sqlite3.Error as exc:
            self.destination.abort()
            raise self._write_error("cannot create", exc) from exc
        self._conn = conn
        try:
            conn.execute("PRAGMA journal_mode = OFF")
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
            conn.execute("BEGIN")
            self._create_schema(conn)
        except sqlite3.Error as exc:
            self.abort()
            raise self._write_error("cannot create", exc) from exc

    # --- for subclasses ---------------------------------------------------------------------

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        raise NotImplementedError

    def _insert(self, conn: sqlite3.Connection, rows: list[Sequence[Any]]) -> None:
        """Insert one batch of buffered rows."""
        raise NotImplementedError

    def _complete(self, conn: sqlite3.Connection, metadata: TilesetMetadata) -> None:
        """Write metadata and indexes once every tile is in."""
        raise NotImplementedError

    # --- WriterBase -------------------------------------------------------------------------

    def _buffer(self, row: Sequence[Any], size: int) -> None:
        self._batch.append(row)
        self._batch_bytes += size
        if len(self._batch) >= _BATCH_ROWS or self._batch_bytes >= _BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        rows, self._batch, self._batch_bytes = self._batch, [], 0
        self._insert(self._connection(), rows)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ContainerWriteError(f"{self.path}: the writer is closed", path=self.path)
        return self._conn

    def _write_error(self, doing: str, exc: sqlite3.Error, tile: Tile | None = None) -> Exception:
        where = f" tile {tile.z}/{tile.x}/{tile.y} to" if tile is not None else ""
        return ContainerWriteError(f"{doing}{where} {self.what} {self.path}: {exc}", path=self.path)

    def _write(self, tile: Tile, data: bytes) -> None:
        try:
            self._add(tile, data)
        except sqlite3.Error as exc:
            raise self._write_error("cannot write", exc, tile) from exc

    def _add(self, tile: Tile, data: bytes) -> None:
        """Buffer one tile (may flush a batch)."""
        raise NotImplementedError

    def _finish(self, metadata: TilesetMetadata) -> None:
        try:
            self._flush()
            conn = self._connection()
            self._complete(conn, metadata)
            conn.execute("COMMIT")
            # A plain rollback-journal database once finished: nothing beside the file.
            conn.execute("PRAGMA journal_mode = DELETE")
            conn.close()
            self._conn = None
        except sqlite3.Error as exc:
            raise self._write_error("cannot finish", exc) from exc

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        self._batch = []
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
