"""Blobs as rows of one SQLite file: the store for many small blobs, such as map tiles."""

from __future__ import annotations

import hashlib
import io
import itertools
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from offmaps.errors import BlobIntegrityError, BlobNotFoundError, StorageError
from offmaps.storage._stream import check_max_size, iter_chunks
from offmaps.storage.base import BlobRef, BlobStore, check_blob_key
from offmaps.storage.keys import check_object_key
from offmaps.storage.presign import SignedBlobURLs, URLSigner

__all__ = ["MAX_SQLITE_BLOB_BYTES", "SQLiteBlobStore", "SQLiteConnections"]

T = TypeVar("T")

MAX_SQLITE_BLOB_BYTES = 64 * 1024 * 1024
"""The largest blob a :class:`SQLiteBlobStore` keeps (the largest tile a cache accepts)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    sha256 BLOB NOT NULL UNIQUE CHECK (length(sha256) = 32),
    size INTEGER NOT NULL,
    data BLOB NOT NULL
);
"""
_PUT = (
    "INSERT INTO blobs (sha256, size, data) VALUES (?, ?, ?) "
    # on a dedup hit the stored bytes are compared: a damaged copy is replaced
    "ON CONFLICT (sha256) DO UPDATE SET size = excluded.size, data = excluded.data "
    "WHERE blobs.data != excluded.data"
)


class SQLiteConnections:
    """Connections to one SQLite file, one per thread (autocommit; a writer waits up to 30 s for
    the file's lock), all closed at once: what the SQLite stores of offmaps share.

    Args:
        path: the file; its folder is made on the first connection.
        pragmas: run on each new connection (``journal_mode=WAL``, ``synchronous=FULL``...).
    """

    def __init__(self, path: Path, *pragmas: str) -> None:
        self.path = path
        self._pragmas = pragmas
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use.

        Raises:
            OSError, sqlite3.Error: the folder or the file cannot be opened.
        """
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        for pragma in self._pragmas:
            conn.execute(f"PRAGMA {pragma}")
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` in one write transaction (``BEGIN IMMEDIATE``), rolled back if it
        raises.

        Raises:
            sqlite3.Error: from SQLite, for the caller to name.
        """
        conn = self.get()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def close(self) -> None:
        """Close every thread's connection (new ones open when the file is used again)."""
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()


class SQLiteBlobStore(SignedBlobURLs):
    """Blobs kept as rows of one SQLite file (WAL), keyed by their 32-byte SHA-256.

    Made for many small blobs: a tile of a few KB as a file of its own costs a file creation,
    a rename, a folder sync and at least a 4 KiB disk block, most of a seed's time and of a
    cache's disk (bench/RESULTS.md, the cache seeding section). Here a put is a row, and
    :meth:`put_many` writes many in one transaction. Every commit is synced to disk
    (``synchronous=FULL``) before it returns, so an index that names a blob after a put never
    names a lost one. Safe to share between threads (one connection each) and processes
    (SQLite's locks; a store is pickled as its file, and opens its own connections).

    Args:
        path: the file, created with its folder on first use.
        signer: signs presigned URLs of blobs, which the offmaps server's ``/storage`` route
            checks and serves; None: the store hands out none.
        url_prefix: the key prefix of its presigned URLs, telling its blobs from other stores'.
        max_blob_bytes: larger blobs are refused with ``BlobTooLargeError``.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        signer: URLSigner | None = None,
        url_prefix: str = "blobs",
        max_blob_bytes: int = MAX_SQLITE_BLOB_BYTES,
    ) -> None:
        self.path = Path(path)
        self.signer = signer
        self.url_prefix = check_object_key(url_prefix)
        self.max_blob_bytes = max_blob_bytes
        self._connections = SQLiteConnections(self.path, "journal_mode=WAL", "synchronous=FULL")
        self._ready = False

    def __repr__(self) -> str:
        return f"SQLiteBlobStore({str(self.path)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # another process gets the file, not this one's connections
        return (
            _reopen,
            (self.path, self.signer, self.url_prefix, self.max_blob_bytes),
        )

    # --- connections -----------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        try:
            conn = self._connections.get()
            if not self._ready:
                conn.executescript(_SCHEMA)
                self._ready = True
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"{self.path}: not a usable blob store: {exc}") from exc
        return conn

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read a blob: {exc}") from exc

    def close(self) -> None:
        """Close every connection of every thread (the store opens new ones when used again)."""
        self._connections.close()

    # --- writing ---------------------------------------------------------------------------

    def put(self, data: bytes) -> BlobRef:
        """Store ``data``; returns its reference."""
        return self.put_many((data,))[0]

    def put_stream(
        self,
        stream: BinaryIO | Iterable[bytes | bytearray | memoryview],
        *,
        max_size: int | None = None,
    ) -> BlobRef:
        """Store the bytes of a binary file or an iterable of chunks.

        Raises:
            BlobTooLargeError: more than ``max_size`` bytes (or than the store keeps) came;
                nothing was stored.
        """
        check_max_size(max_size)
        limit = self.max_blob_bytes if max_size is None else min(max_size, self.max_blob_bytes)
        return self.put_many((b"".join(iter_chunks(stream, limit)),))[0]

    def put_many(self, blobs: Iterable[bytes]) -> list[BlobRef]:
        """Store several blobs in one transaction (one sync to disk); their references.

        Raises:
            BlobTooLargeError: a blob is larger than the store keeps; none was stored.
            StorageError: the file cannot be written (full disk, read-only, locked too long).
        """
        rows: list[tuple[bytes, int, bytes]] = []
        refs: list[BlobRef] = []
        for given in blobs:
            data = b"".join(iter_chunks((given,), self.max_blob_bytes))
            digest = hashlib.sha256(data).digest()
            rows.append((digest, len(data), data))
            refs.append(BlobRef(digest.hex(), len(data)))
        self._conn()  # the schema, once
        try:
            self._connections.write(lambda conn: conn.executemany(_PUT, rows))
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot store blobs: {exc}") from exc
        return refs

    def move_from(self, other: BlobStore, *, batch: int = 500) -> int:
        """Move every blob of ``other`` into this store, deleting each from ``other`` once it is
        stored here (safe to stop and run again); returns how many were moved. A blob whose
        bytes no longer hash to its key is damaged: it is dropped, not moved (a cache fetches
        its tiles again).
        """
        moved = 0
        keys = list(itertools.islice(other.iter_keys(), batch))
        while keys:
            found = {key: other.get(key) for key in keys}
            good = {key: data for key, data in found.items() if _sha256(data) == key}
            self.put_many(good.values())
            for key in keys:
                other.delete(key)
            moved += len(good)
            keys = list(itertools.islice(other.iter_keys(), batch))
        return moved

    # --- reading ---------------------------------------------------------------------------

    def _bytes(self, sha256: str) -> bytes:
        key = check_blob_key(sha256)
        rows = self._read("SELECT data FROM blobs WHERE sha256 = ?", (bytes.fromhex(key),))
        if not rows:
            raise BlobNotFoundError(f"no blob {key}", key=key)
        return bytes(rows[0][0])

    def get(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256``."""
        return self._bytes(sha256)

    def open(self, sha256: str) -> BinaryIO:
        """A binary file over the blob's bytes (read whole: blobs here are small)."""
        return io.BytesIO(self._bytes(sha256))

    def exists(self, sha256: str) -> bool:
        """Whether a blob is stored under ``sha256``."""
        key = check_blob_key(sha256)
        return bool(self._read("SELECT 1 FROM blobs WHERE sha256 = ?", (bytes.fromhex(key),)))

    def size(self, sha256: str) -> int:
        """The size of a blob in bytes."""
        key = check_blob_key(sha256)
        rows = self._read("SELECT size FROM blobs WHERE sha256 = ?", (bytes.fromhex(key),))
        if not rows:
            raise BlobNotFoundError(f"no blob {key}", key=key)
        return int(rows[0][0])

    def iter_keys(self) -> Iterator[str]:
        """Yield the key of every stored blob, in ascending order (in pages, not one snapshot)."""
        after = b""
        while True:
            rows = self._read(
                "SELECT sha256 FROM blobs WHERE sha256 > ? ORDER BY sha256 LIMIT 1000", (after,)
            )
            for (key,) in rows:
                yield bytes(key).hex()
            if len(rows) < 1000:
                return
            after = bytes(rows[-1][0])

    def verify(self, sha256: str) -> None:
        """Hash a blob's bytes again; raises ``BlobIntegrityError`` when they do not match."""
        actual = hashlib.sha256(self._bytes(sha256)).hexdigest()
        if actual != sha256:
            raise BlobIntegrityError(f"blob {sha256} is damaged: its bytes hash to {actual}")

    # --- removing --------------------------------------------------------------------------

    def delete(self, sha256: str) -> None:
        """Remove a blob."""
        key = check_blob_key(sha256)
        conn = self._conn()
        try:
            deleted = conn.execute("DELETE FROM blobs WHERE sha256 = ?", (bytes.fromhex(key),))
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot delete blob {key}: {exc}") from exc
        if not deleted.rowcount:
            raise BlobNotFoundError(f"no blob {key}", key=key)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _reopen(
    path: Path, signer: URLSigner | None, url_prefix: str, max_blob_bytes: int
) -> SQLiteBlobStore:
    return SQLiteBlobStore(
        path, signer=signer, url_prefix=url_prefix, max_blob_bytes=max_blob_bytes
    )
