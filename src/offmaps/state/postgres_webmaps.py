"""Web map items in PostgreSQL: the :class:`~offmaps.state.webmaps.WebMapStore` of several
server processes on several hosts.

The same documents as :class:`~offmaps.state.webmaps.FolderWebMapStore` (the JSON it writes,
without its indentation), one row each in the ``webmaps`` table of the state schema
(``offmaps_state``). A replacement reads and writes the row under its lock, so two replacements
never lose the owner or creation time. Read back, a document is validated as a file is
(:func:`~offmaps.schemas.parse_webmap`).

Written, with its contract suite, ahead of its use: the catalog opens the folder store and
watches the folder's modification time to know when to read the maps again, which a table
does not have (docs/deploy.md).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from offmaps.errors import InvalidWebMapError, WebMapNotFoundError
from offmaps.schemas import WebMap, parse_webmap
from offmaps.state.postgres import Migration, PostgresDatabase
from offmaps.state.webmaps import _ID, _with

__all__ = ["COMPONENT", "MIGRATIONS", "PostgresWebMapStore"]

COMPONENT = "webmaps"
"""The name of the store's tables in the schema's ``migrations`` table."""

MIGRATIONS: tuple[Migration, ...] = (
    (
        "the web maps table",
        """
        CREATE TABLE webmaps (
            seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
            id TEXT PRIMARY KEY,
            created TIMESTAMPTZ,
            document TEXT NOT NULL
        );
        CREATE INDEX webmaps_created ON webmaps (created NULLS FIRST, seq);
        """,
    ),
)
"""The store's schema, step by step (step *n* makes version *n*): append, never edit."""


class PostgresWebMapStore:
    """:class:`~offmaps.state.webmaps.WebMapStore` in a PostgreSQL schema.

    Args:
        database: the state schema's database (the store closes it in :meth:`close`).
        migrate: upgrade older tables at open instead of refusing to open.

    Raises:
        FeatureStoreError: the database cannot be reached, or its tables are at another
            version (the message says what to do).
    """

    def __init__(self, database: PostgresDatabase, *, migrate: bool = False) -> None:
        self.database = database
        database.require(COMPONENT, MIGRATIONS, migrate=migrate)

    def __repr__(self) -> str:
        return f"PostgresWebMapStore({self.database!r})"

    def close(self) -> None:
        """Close the database's connections."""
        self.database.close()

    def list(self) -> list[WebMap]:
        """Every web map, oldest first by creation time."""
        with self.database.connection() as conn:
            rows = conn.execute(
                "SELECT document FROM webmaps ORDER BY created NULLS FIRST, seq"
            ).fetchall()
        return [parse_webmap(document) for (document,) in rows]

    def get(self, map_id: str) -> WebMap:
        """One web map; raises ``WebMapNotFoundError``."""
        _check(map_id)
        with self.database.connection() as conn:
            row = conn.execute("SELECT document FROM webmaps WHERE id = %s", (map_id,)).fetchone()
        if row is None:
            raise WebMapNotFoundError(f"no web map {map_id!r}")
        return parse_webmap(row[0])

    def create(self, webmap: WebMap, *, owner: str) -> WebMap:
        """Store a new web map owned by ``owner``; returns it with its id and times."""
        now = datetime.now(UTC)
        stored = _with(webmap, map_id=uuid.uuid4().hex, owner=owner, created=now, modified=now)
        with self.database.connection() as conn:
            conn.execute(
                "INSERT INTO webmaps (id, created, document) VALUES (%s, %s, %s)",
                (stored.id, stored.item.created, _document(stored)),
            )
        return stored

    def replace(self, map_id: str, webmap: WebMap) -> WebMap:
        """Replace a web map's document, keeping its id, owner and creation time (read and
        written under the row's lock); raises ``WebMapNotFoundError``."""
        _check(map_id)
        with self.database.transaction() as conn:
            row = conn.execute(
                "SELECT document FROM webmaps WHERE id = %s FOR UPDATE", (map_id,)
            ).fetchone()
            if row is None:
                raise WebMapNotFoundError(f"no web map {map_id!r}")
            current = parse_webmap(row[0])
            stored = _with(
                webmap,
                map_id=map_id,
                owner=current.sharing.owner,
                created=current.item.created,
                modified=datetime.now(UTC),
            )
            conn.execute(
                "UPDATE webmaps SET document = %s WHERE id = %s", (_document(stored), map_id)
            )
        return stored

    def delete(self, map_id: str) -> None:
        """Remove a web map; raises ``WebMapNotFoundError``."""
        _check(map_id)
        with self.database.connection() as conn:
            deleted = conn.execute("DELETE FROM webmaps WHERE id = %s", (map_id,)).rowcount
        if not deleted:
            raise WebMapNotFoundError(f"no web map {map_id!r}")


def _check(map_id: str) -> None:
    if not isinstance(map_id, str) or not _ID.match(map_id):
        raise WebMapNotFoundError(f"no web map {str(map_id)[:64]!r}")


def _document(webmap: WebMap) -> str:
    if webmap.id is None:  # pragma: no cover - _with always sets it
        raise InvalidWebMapError("a stored web map needs an id")
    return webmap.model_dump_json(exclude_none=True)
