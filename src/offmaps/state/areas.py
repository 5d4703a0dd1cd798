"""The preplanned map areas of a server's web maps, their packages and their schedules.

An area (docs/preplanned.md) is what its author asked for (where, which scales and layers, the
update mode, the refresh schedule) and where its packaging is; each packaging that completes
adds a numbered package, whose files live in the object store by their SHA-256
(``areas/files/<sha256>``), shared by every package that holds the same bytes. A deleted area
leaves a tombstone, so a device asking for it learns it was deleted rather than that it never
was. Kept in ``DATA/areas.sqlite``.

No cap on areas per map; areas may overlap.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from offmaps.errors import FeatureStoreError, MapAreaDeletedError, MapAreaNotFoundError

__all__ = ["AreaPackage", "MapArea", "MapAreaStore", "SQLiteMapAreaStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS areas (
    id TEXT PRIMARY KEY,
    map_id TEXT NOT NULL,
    document TEXT NOT NULL,
    next_refresh_at REAL
);
CREATE INDEX IF NOT EXISTS areas_map ON areas (map_id);
CREATE INDEX IF NOT EXISTS areas_due ON areas (next_refresh_at) WHERE next_refresh_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS area_packages (
    area_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (area_id, number)
);
CREATE TABLE IF NOT EXISTS area_tombstones (
    id TEXT PRIMARY KEY,
    map_id TEXT NOT NULL,
    title TEXT NOT NULL,
    deleted REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class MapArea:
    """One preplanned map area.

    Attributes:
        id: 32 hexadecimal digits.
        map_id: its web map.
        owner: who created it.
        title: its title.
        description: its description.
        area: where it is: a GeoJSON Polygon or MultiPolygon in CRS84.
        source: how the area was given: ``{"kind": "bbox" | "polygon" | "bookmark"}``, with
            ``"bookmark"``'s name.
        min_scale: the smallest scale tiles are taken at; 0 for the layers' own.
        max_scale: the largest; 0 for the layers' own.
        overrides: per-layer choices (``GenerateOfflineMapParameterOverrides`` as JSON), or
            ``None``.
        attachments: the attachment option, or ``None`` for the map's own.
        tile_format: the container of the package's tile archives: ``mbtiles`` or ``pmtiles``.
        update_mode: how devices keep the package fresh (``PreplannedUpdateMode``).
        refresh: the refresh schedule's text.
        thumbnail: the author's thumbnail (base64), or ``None`` for the basemap's.
        status: ``packaging``, ``complete`` or ``failed``.
        reason: why the last packaging failed, or ``None``.
        job_id: the packaging job running or last run, or ``None``.
        epoch: counts the changes of extent, scales, layers or update mode: a package of an
            earlier epoch cannot be updated to a later one.
        latest: the number of the newest complete package, or ``None``.
        next_refresh_at: when the schedule next refreshes it (seconds since the epoch, UTC), or
            ``None``.
        server_url: the server's URL when the area was created or last packaged on request:
            what scheduled packagings point the package's online layers at.
        created: when it was created (seconds since the epoch).
        updated: when it last changed.
    """

    id: str
    map_id: str
    owner: str
    title: str
    area: dict[str, Any]
    source: dict[str, Any]
    description: str = ""
    min_scale: float = 0
    max_scale: float = 0
    overrides: dict[str, Any] | None = None
    attachments: str | None = None
    tile_format: str = "mbtiles"
    update_mode: str = "sync_with_feature_services"
    refresh: str = "never"
    thumbnail: str | None = None
    status: str = "packaging"
    reason: str | None = None
    job_id: str | None = None
    epoch: int = 1
    latest: int | None = None
    next_refresh_at: float | None = None
    server_url: str = ""
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class AreaPackage:
    """One complete package of an area.

    Attributes:
        area_id: the area.
        number: 1 for the first package, then one more per packaging.
        epoch: the area's epoch when it was packaged.
        created: when it completed (seconds since the epoch).
        job_id: the job that built it.
        files: each file's ``path``, ``size`` and ``sha256``, the manifest last.
        layer_errors: layers that failed under ``continue_on_errors``, with why.
        table_errors: tables that failed so.
        generations: each feature service's generation its replica file was read at.
        chains: the chain head a device holding this package has for each file update files
            keep fresh: ``base:`` and the file's SHA-256 for a file no update reached yet,
            else the SHA-256 of the update that brought it to this package.
        updates: the update files that bring the previous package's files to this one (each
            ``file``, ``kind``, ``path``, ``size``, ``sha256``, ``previous_sha256``,
            ``from_number``, ``to_number``).
        services: each feature service's ``file``, ``scope`` (which rows of each layer the
            file holds) and ``attachments``: what its next update file is read with.
        sources: a mark of each tile layer's content (by layer id) when packaged: its archive's
            size and modification time, ``None`` where there is none.
        map_digest: the SHA-256 of the web map document it was packaged from.
        incremental: whether it was built from the previous package and the update files
            rather than extracted again.
        replaced: files that changed since the previous package (or came or went) and that no
            update file keeps fresh (a PMTiles archive, say): a device cannot reach this package
            by update files, and takes it whole.
    """

    area_id: str
    number: int
    epoch: int
    created: float
    job_id: str
    files: tuple[dict[str, Any], ...]
    layer_errors: dict[str, str] = field(default_factory=dict)
    table_errors: dict[str, str] = field(default_factory=dict)
    generations: dict[str, int] = field(default_factory=dict)
    chains: dict[str, str] = field(default_factory=dict)
    updates: tuple[dict[str, Any], ...] = ()
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, str | None] = field(default_factory=dict)
    map_digest: str = ""
    incremental: bool = False
    replaced: tuple[str, ...] = ()

    @property
    def bytes(self) -> int:
        """The package's size: its files' sizes summed."""
        return sum(int(entry["size"]) for entry in self.files)


NextRefresh = Callable[[MapArea, float], float | None]
"""When an area is next refreshed, given now (seconds since the epoch)."""


@runtime_checkable
class MapAreaStore(Protocol):
    """The preplanned map areas of a server: the seam a PostgreSQL store implements too."""

    def create(self, area: MapArea) -> MapArea:
        """Record a new area (its ``id`` is made here when empty); returns it."""
        ...

    def get(self, area_id: str, *, map_id: str | None = None) -> MapArea:
        """The area ``area_id`` (of map ``map_id`` when given).

        Raises:
            MapAreaDeletedError: it was deleted.
            MapAreaNotFoundError: there is no such area (on that map).
        """
        ...

    def for_map(self, map_id: str) -> list[MapArea]:
        """The areas of a map, oldest first."""
        ...

    def update(self, area_id: str, **changes: Any) -> MapArea:
        """Change some fields of an area (``updated`` set to now), read and written in one
        step so that writers of other fields are not undone; returns it.

        Raises:
            MapAreaNotFoundError: there is no such area (any more).
        """
        ...

    def delete(self, area_id: str) -> None:
        """Remove an area and its packages' records, leaving a tombstone."""
        ...

    def add_package(self, package: AreaPackage, **changes: Any) -> MapArea:
        """Record a complete package and change the area's fields (its ``latest``, status) in
        one step; returns the area.

        Raises:
            MapAreaNotFoundError: the area was deleted meanwhile.
        """
        ...

    def packages(self, area_id: str) -> list[AreaPackage]:
        """An area's packages, oldest first."""
        ...

    def remove_packages(self, area_id: str, numbers: list[int]) -> None:
        """Forget packages (once their files are removed)."""
        ...

    def named_files(self) -> set[str]:
        """The SHA-256 of every file a package of any area names: its files, its update files
        and the attachment blobs these name that it does not hold."""
        ...

    def claim_due(self, now: float, next_refresh: NextRefresh) -> list[MapArea]:
        """The areas whose refresh is due at ``now``, each moved on to its next time: an area
        is claimed by one caller only, however many ask at once."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


def _area(document: str) -> MapArea:
    return MapArea(**json.loads(document))


def _package(document: str) -> AreaPackage:
    data = json.loads(document)
    return AreaPackage(
        **{
            **data,
            "files": tuple(data["files"]),
            "updates": tuple(data.get("updates", ())),
            "replaced": tuple(data.get("replaced", ())),
        }
    )


class SQLiteMapAreaStore:
    """:class:`MapAreaStore` in one SQLite file (WAL; one connection, writes in ``BEGIN
    IMMEDIATE`` transactions so that several processes take turns)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise FeatureStoreError(f"cannot open the map area store {path}: {exc}") from None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE, so other processes wait their turn."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, parameters).fetchall()

    def create(self, area: MapArea) -> MapArea:
        now = time.time()
        area = replace(area, id=area.id or uuid.uuid4().hex, created=now, updated=now)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO areas (id, map_id, document, next_refresh_at) VALUES (?, ?, ?, ?)",
                (area.id, area.map_id, json.dumps(asdict(area)), area.next_refresh_at),
            )
        return area

    def get(self, area_id: str, *, map_id: str | None = None) -> MapArea:
        rows = self._read("SELECT document FROM areas WHERE id = ?", (area_id,))
        if rows:
            area = _area(rows[0][0])
            if map_id is None or area.map_id == map_id:
                return area
        gone = self._read("SELECT map_id, title FROM area_tombstones WHERE id = ?", (area_id,))
        if gone and map_id in (None, gone[0][0]):
            raise MapAreaDeletedError(
                f"map area {area_id} ({gone[0][1]!r}) was deleted by its author"
            )
        raise MapAreaNotFoundError(f"no map area {area_id[:64]!r} on this map")

    def for_map(self, map_id: str) -> list[MapArea]:
        rows = self._read("SELECT document FROM areas WHERE map_id = ? ORDER BY rowid", (map_id,))
        return [_area(document) for (document,) in rows]

    def update(self, area_id: str, **changes: Any) -> MapArea:
        with self._transaction() as db:
            return self._update(db, area_id, changes)

    @staticmethod
    def _update(db: sqlite3.Connection, area_id: str, changes: dict[str, Any]) -> MapArea:
        row = db.execute("SELECT document FROM areas WHERE id = ?", (area_id,)).fetchone()
        if row is None:
            raise MapAreaNotFoundError(f"map area {area_id[:64]} was deleted")
        area = replace(_area(row[0]), **{**changes, "updated": time.time()})
        db.execute(
            "UPDATE areas SET document = ?, next_refresh_at = ? WHERE id = ?",
            (json.dumps(asdict(area)), area.next_refresh_at, area.id),
        )
        return area

    def delete(self, area_id: str) -> None:
        with self._transaction() as db:
            row = db.execute("SELECT document FROM areas WHERE id = ?", (area_id,)).fetchone()
            if row is None:
                return
            area = _area(row[0])
            db.execute("DELETE FROM areas WHERE id = ?", (area_id,))
            db.execute("DELETE FROM area_packages WHERE area_id = ?", (area_id,))
            db.execute(
                "INSERT OR REPLACE INTO area_tombstones (id, map_id, title, deleted) "
                "VALUES (?, ?, ?, ?)",
                (area_id, area.map_id, area.title, time.time()),
            )

    def add_package(self, package: AreaPackage, **changes: Any) -> MapArea:
        with self._transaction() as db:
            area = self._update(db, package.area_id, changes)
            db.execute(
                "INSERT INTO area_packages (area_id, number, document) VALUES (?, ?, ?)",
                (package.area_id, package.number, json.dumps(asdict(package))),
            )
        return area

    def packages(self, area_id: str) -> list[AreaPackage]:
        rows = self._read(
            "SELECT document FROM area_packages WHERE area_id = ? ORDER BY number", (area_id,)
        )
        return [_package(document) for (document,) in rows]

    def remove_packages(self, area_id: str, numbers: list[int]) -> None:
        with self._transaction() as db:
            db.executemany(
                "DELETE FROM area_packages WHERE area_id = ? AND number = ?",
                [(area_id, number) for number in numbers],
            )

    def named_files(self) -> set[str]:
        named: set[str] = set()
        for (document,) in self._read("SELECT document FROM area_packages", ()):
            package = _package(document)
            named.update(str(entry["sha256"]) for entry in package.files)
            named.update(str(update["sha256"]) for update in package.updates)
            named.update(str(sha256) for u in package.updates for sha256 in u.get("blobs", ()))
        return named

    def claim_due(self, now: float, next_refresh: NextRefresh) -> list[MapArea]:
        claimed = []
        with self._transaction() as db:  # BEGIN IMMEDIATE: one claimer at a time
            rows = db.execute(
                "SELECT document FROM areas WHERE next_refresh_at <= ? ORDER BY next_refresh_at",
                (now,),
            ).fetchall()
            for (document,) in rows:
                area = _area(document)
                changes = {"next_refresh_at": next_refresh(area, now)}
                claimed.append(self._update(db, area.id, changes))
        return claimed

    def close(self) -> None:
        with self._lock:
            self._conn.close()
