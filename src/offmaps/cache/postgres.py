"""The cache index in PostgreSQL, for several server processes and workers on several hosts.

The same SQL as the SQLite index (:class:`~offmaps.cache.index.SQLTileIndex`), in one schema
of the database (``offmaps_cache`` by default), one connection per thread. A write is one
transaction; the writes that record pending blobs and a garbage collection's check-and-delete
batches take one transaction-scoped advisory lock, as SQLite's ``BEGIN IMMEDIATE`` serialises
them, so a collection on one host never deletes a blob a writer on another is about to use.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import psycopg
from psycopg import sql

from offmaps.cache.index import SQLTileIndex
from offmaps.errors import CacheIndexError

__all__ = ["DEFAULT_SCHEMA", "PostgresTileIndex"]

DEFAULT_SCHEMA = "offmaps_cache"
"""The schema the index's tables live in unless told otherwise."""

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_WRITERS_LOCK = 0x6F6D6361  # "omca": the advisory lock of pending writes and collections
_TABLES = """
CREATE TABLE IF NOT EXISTS caches (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    definition TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS tiles (
    cache BIGINT NOT NULL,
    z INTEGER NOT NULL,
    x BIGINT NOT NULL,
    y BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    stored DOUBLE PRECISION NOT NULL,
    checked DOUBLE PRECISION NOT NULL,
    accessed DOUBLE PRECISION,
    PRIMARY KEY (cache, z, y, x)
);
CREATE INDEX IF NOT EXISTS tiles_blob ON tiles (sha256);
CREATE TABLE IF NOT EXISTS pending (
    token TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    since DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (sha256, token)
);
CREATE INDEX IF NOT EXISTS pending_token ON pending (token);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    cache BIGINT NOT NULL,
    owner TEXT NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    committed DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS grant_tiles (
    grant_id TEXT NOT NULL,
    z INTEGER NOT NULL,
    x BIGINT NOT NULL,
    y BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (grant_id, z, y, x)
);
CREATE TABLE IF NOT EXISTS usage (
    cache BIGINT NOT NULL,
    z INTEGER NOT NULL,
    hits BIGINT NOT NULL DEFAULT 0,
    misses BIGINT NOT NULL DEFAULT 0,
    fetches BIGINT NOT NULL DEFAULT 0,
    errors BIGINT NOT NULL DEFAULT 0,
    last_access DOUBLE PRECISION,
    PRIMARY KEY (cache, z)
);
CREATE TABLE IF NOT EXISTS imports (
    id TEXT PRIMARY KEY,
    cache BIGINT NOT NULL,
    started DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS import_tiles (
    import_id TEXT NOT NULL,
    z INTEGER NOT NULL,
    y BIGINT NOT NULL,
    x BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (import_id, z, y, x)
);
"""


class _Adapted:
    """A psycopg connection that takes the index's ``?`` placeholders."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        self.raw = conn

    def execute(self, query: str, parameters: Any = ()) -> Any:
        return self.raw.execute(query.replace("?", "%s"), parameters)

    def executemany(self, query: str, parameters: Any) -> Any:
        """Run ``query`` once per row; the result's ``rowcount`` is the rows changed in all."""
        rows = list(parameters)
        if not rows:
            return SimpleNamespace(rowcount=0)
        with self.raw.cursor() as cursor:
            cursor.executemany(query.replace("?", "%s"), rows)
            return SimpleNamespace(rowcount=cursor.rowcount)


class PostgresTileIndex(SQLTileIndex):
    """The cache index in a PostgreSQL database.

    Args:
        url: a ``postgresql://`` URL.
        schema: the schema of the index's tables, created when missing.

    Raises:
        CacheIndexError: the database cannot be reached or the schema not made.
        ValueError: a schema name that is not lowercase letters, digits and ``_``.
    """

    _unique_violation = (psycopg.errors.UniqueViolation,)

    def __init__(self, url: str, *, schema: str = DEFAULT_SCHEMA) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"a schema name is lowercase letters, digits and _: not {schema!r}")
        self.url = url
        self.schema = schema
        self._local = threading.local()
        self._connections: list[psycopg.Connection[tuple[Any, ...]]] = []
        self._lock = threading.Lock()
        try:
            conn = self._conn().raw
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITERS_LOCK,))
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
                conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
                for statement in filter(str.strip, _TABLES.split(";")):
                    conn.execute(statement)
        except psycopg.Error as exc:
            self.close()
            raise CacheIndexError(f"{self._where()}: cannot make the cache index: {exc}") from exc

    def __repr__(self) -> str:
        return f"PostgresTileIndex(schema={self.schema!r})"  # never the URL: it may hold a password

    def __reduce__(self) -> tuple[Any, ...]:
        # another process (a seed's workers) gets the URL and opens its own connections
        return (functools.partial(PostgresTileIndex, schema=self.schema), (self.url,))

    def _where(self) -> str:
        return f"the cache index in PostgreSQL (schema {self.schema})"

    def _conn(self) -> _Adapted:
        found: _Adapted | None = getattr(self._local, "conn", None)
        if found is None:
            try:
                raw: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(
                    self.url, autocommit=True, connect_timeout=10
                )
                raw.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            except psycopg.Error as exc:
                raise CacheIndexError(f"{self._where()}: cannot connect: {exc}") from exc
            found = _Adapted(raw)
            self._local.conn = found
            with self._lock:
                self._connections.append(raw)
        return found

    def _read(self, query: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            rows: list[tuple[Any, ...]] = self._conn().execute(query, args).fetchall()
        except psycopg.Error as exc:
            raise CacheIndexError(f"{self._where()}: cannot read: {exc}") from exc
        return rows

    def _write(self, work: Callable[[Any], int]) -> int:
        adapted = self._conn()
        try:
            with adapted.raw.transaction():
                return work(adapted)
        except psycopg.Error as exc:
            raise CacheIndexError(f"{self._where()}: cannot write: {exc}") from exc

    def _lock_writers(self, conn: Any) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_WRITERS_LOCK,))

    def close(self) -> None:
        """Close every connection of every thread."""
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
