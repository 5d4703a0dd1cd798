"""The preplanned map areas in PostgreSQL: the :class:`~offmaps.state.MapAreaStore` of several
server processes on several hosts.

The same rows as :class:`~offmaps.state.SQLiteMapAreaStore`, in the ``areas``,
``area_packages`` and ``area_tombstones`` tables of the state schema (``offmaps_state``). An
area and a package are kept as their JSON text, as in SQLite (``TEXT``, not ``JSONB``: ``JSONB``
refuses a ``\\u0000`` in a title that SQLite keeps). A change of an area reads and writes its row
in one transaction holding the row's lock (``SELECT ... FOR UPDATE``), so two writers of other
fields never undo each other.

Claiming due refreshes must stay atomic across processes: a refresh runs once however many
servers run the scheduler. SQLite gets that from ``BEGIN IMMEDIATE`` (one claimer at a time);
here each claimer locks the due rows with ``FOR UPDATE SKIP LOCKED`` and moves them on in the
same transaction. A row another claimer holds is skipped, not waited for; a row another claimer
moved on and committed is re-read by PostgreSQL before it is locked, and is no longer due. So
claimers never wait on each other nor deadlock, and each due area goes to exactly one of them
(an area that another writer holds at that instant is claimed at the scheduler's next tick).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, replace
from typing import Any

import psycopg

from offmaps.errors import MapAreaDeletedError, MapAreaNotFoundError
from offmaps.state.areas import AreaPackage, MapArea, NextRefresh, _area, _package
from offmaps.state.postgres import Migration, PostgresDatabase

__all__ = ["COMPONENT", "MIGRATIONS", "PostgresMapAreaStore"]

COMPONENT = "areas"
"""The name of the store's tables in the schema's ``migrations`` table."""

MIGRATIONS: tuple[Migration, ...] = (
    (
        "the areas, their packages and tombstones",
        """
        CREATE TABLE areas (
            seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
            id TEXT PRIMARY KEY,
            map_id TEXT NOT NULL,
            document TEXT NOT NULL,
            next_refresh_at DOUBLE PRECISION
        );
        CREATE INDEX areas_map ON areas (map_id, seq);
        CREATE INDEX areas_due ON areas (next_refresh_at) WHERE next_refresh_at IS NOT NULL;
        CREATE TABLE area_packages (
            area_id TEXT NOT NULL,
            number INTEGER NOT NULL,
            document TEXT NOT NULL,
            PRIMARY KEY (area_id, number)
        );
        CREATE TABLE area_tombstones (
            id TEXT PRIMARY KEY,
            map_id TEXT NOT NULL,
            title TEXT NOT NULL,
            deleted DOUBLE PRECISION NOT NULL
        );
        """,
    ),
)
"""The store's schema, step by step (step *n* makes version *n*): append, never edit."""

Connection = psycopg.Connection[tuple[Any, ...]]


class PostgresMapAreaStore:
    """:class:`~offmaps.state.MapAreaStore` in a PostgreSQL schema.

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
        return f"PostgresMapAreaStore({self.database!r})"

    def create(self, area: MapArea) -> MapArea:
        """Record a new area (its ``id`` is made here when empty); returns it."""
        now = time.time()
        area = replace(area, id=area.id or uuid.uuid4().hex, created=now, updated=now)
        with self.database.connection() as conn:
            conn.execute(
                "INSERT INTO areas (id, map_id, document, next_refresh_at) VALUES (%s, %s, %s, %s)",
                (area.id, area.map_id, json.dumps(asdict(area)), area.next_refresh_at),
            )
        return area

    def get(self, area_id: str, *, map_id: str | None = None) -> MapArea:
        """The area ``area_id`` (of map ``map_id`` when given).

        Raises:
            MapAreaDeletedError: it was deleted.
            MapAreaNotFoundError: there is no such area (on that map).
        """
        with self.database.connection() as conn:
            row = conn.execute("SELECT document FROM areas WHERE id = %s", (area_id,)).fetchone()
            if row is not None:
                area = _area(row[0])
                if map_id is None or area.map_id == map_id:
                    return area
            gone = conn.execute(
                "SELECT map_id, title FROM area_tombstones WHERE id = %s", (area_id,)
            ).fetchone()
        if gone is not None and map_id in (None, gone[0]):
            raise MapAreaDeletedError(f"map area {area_id} ({gone[1]!r}) was deleted by its author")
        raise MapAreaNotFoundError(f"no map area {area_id[:64]!r} on this map")

    def for_map(self, map_id: str) -> list[MapArea]:
        """The areas of a map, oldest first."""
        with self.database.connection() as conn:
            rows = conn.execute(
                "SELECT document FROM areas WHERE map_id = %s ORDER BY seq", (map_id,)
            ).fetchall()
        return [_area(document) for (document,) in rows]

    def update(self, area_id: str, **changes: Any) -> MapArea:
        """Change some fields of an area (``updated`` set to now), read and written under the
        row's lock; returns it.

        Raises:
            MapAreaNotFoundError: there is no such area (any more).
        """
        with self.database.transaction() as conn:
            return _update(conn, area_id, changes)

    def delete(self, area_id: str) -> None:
        """Remove an area and its packages' records, leaving a tombstone."""
        with self.database.transaction() as conn:
            row = conn.execute(
                "DELETE FROM areas WHERE id = %s RETURNING document", (area_id,)
            ).fetchone()
            if row is None:
                return
            area = _area(row[0])
            conn.execute("DELETE FROM area_packages WHERE area_id = %s", (area_id,))
            conn.execute(
                "INSERT INTO area_tombstones (id, map_id, title, deleted) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                "map_id = EXCLUDED.map_id, title = EXCLUDED.title, deleted = EXCLUDED.deleted",
                (area_id, area.map_id, area.title, time.time()),
            )

    def add_package(self, package: AreaPackage, **changes: Any) -> MapArea:
        """Record a complete package and change the area's fields in one transaction; returns
        the area.

        Raises:
            MapAreaNotFoundError: the area was deleted meanwhile.
        """
        with self.database.transaction() as conn:
            area = _update(conn, package.area_id, changes)
            conn.execute(
                "INSERT INTO area_packages (area_id, number, document) VALUES (%s, %s, %s)",
                (package.area_id, package.number, json.dumps(asdict(package))),
            )
        return area

    def packages(self, area_id: str) -> list[AreaPackage]:
        """An area's packages, oldest first."""
        with self.database.connection() as conn:
            rows = conn.execute(
                "SELECT document FROM area_packages WHERE area_id = %s ORDER BY number",
                (area_id,),
            ).fetchall()
        return [_package(document) for (document,) in rows]

    def remove_packages(self, area_id: str, numbers: list[int]) -> None:
        """Forget packages (once their files are removed)."""
        with self.database.connection() as conn:
            conn.execute(
                "DELETE FROM area_packages WHERE area_id = %s AND number = ANY(%s)",
                (area_id, list(numbers)),
            )

    def named_files(self) -> set[str]:
        """The SHA-256 of every file a package of any area names (its files, its update files
        and the attachment blobs these name)."""
        named: set[str] = set()
        with self.database.connection() as conn:
            rows = conn.execute("SELECT document FROM area_packages").fetchall()
        for (document,) in rows:
            package = _package(document)
            named.update(str(entry["sha256"]) for entry in package.files)
            named.update(str(update["sha256"]) for update in package.updates)
            named.update(str(sha256) for u in package.updates for sha256 in u.get("blobs", ()))
        return named

    def claim_due(self, now: float, next_refresh: NextRefresh) -> list[MapArea]:
        """The areas whose refresh is due at ``now``, each moved on to its next time in the
        transaction that locked it: each is claimed by one caller only, however many servers
        ask at once (``FOR UPDATE SKIP LOCKED``; see the module's docstring)."""
        claimed = []
        with self.database.transaction() as conn:
            rows = conn.execute(
                "SELECT document FROM areas WHERE next_refresh_at <= %s "
                "ORDER BY next_refresh_at, id FOR UPDATE SKIP LOCKED",
                (now,),
            ).fetchall()
            for (document,) in rows:
                area = _area(document)
                moved = replace(area, next_refresh_at=next_refresh(area, now), updated=time.time())
                _write(conn, moved)
                claimed.append(moved)
        return claimed

    def close(self) -> None:
        """Close the database's connections."""
        self.database.close()


def _update(conn: Connection, area_id: str, changes: dict[str, Any]) -> MapArea:
    """Change ``area_id``'s fields under its row's lock, in ``conn``'s transaction."""
    row = conn.execute("SELECT document FROM areas WHERE id = %s FOR UPDATE", (area_id,)).fetchone()
    if row is None:
        raise MapAreaNotFoundError(f"map area {area_id[:64]} was deleted")
    area = replace(_area(row[0]), **{**changes, "updated": time.time()})
    _write(conn, area)
    return area


def _write(conn: Connection, area: MapArea) -> None:
    conn.execute(
        "UPDATE areas SET document = %s, next_refresh_at = %s WHERE id = %s",
        (json.dumps(asdict(area)), area.next_refresh_at, area.id),
    )
