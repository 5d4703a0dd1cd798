"""The ``offmaps_update(key, value)`` table every update file starts with."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from offmaps.errors import UpdateIntegrityError
from offmaps.offline.updates.chain import UpdateLink

FORMAT_VERSION = "1.0"
"""The update file format this module writes and reads (docs/update-files.md, "Versions")."""

_TABLE = "CREATE TABLE offmaps_update (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL)"


def header_rows(kind: str, link: UpdateLink, created: datetime | None) -> dict[str, str]:
    """The header keys every update file has."""
    moment = (created or datetime.now(UTC)).astimezone(UTC)
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "area_id": link.area_id,
        "map_id": link.map_id,
        "epoch": str(link.epoch),
        "from_number": str(link.from_number),
        "to_number": str(link.to_number),
        "previous_sha256": link.previous_sha256,
        "created": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
    }


def write_header(conn: sqlite3.Connection, rows: Mapping[str, str]) -> None:
    """Create and fill ``offmaps_update`` (inside the caller's transaction)."""
    conn.execute(_TABLE)
    conn.executemany("INSERT INTO offmaps_update (key, value) VALUES (?, ?)", rows.items())


def read_header(conn: sqlite3.Connection, path: Path, kind: str) -> dict[str, str]:
    """The header of an update file of ``kind``.

    Raises:
        UpdateIntegrityError: no header, another kind, or a format version this module does
            not read.
    """
    try:
        rows = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM offmaps_update")}
    except sqlite3.Error as exc:
        raise UpdateIntegrityError(f"{path}: not an update file: {exc}", path=path) from None
    version = rows.get("format_version")
    if version is None or version.split(".", 1)[0] != FORMAT_VERSION.split(".", 1)[0]:
        raise UpdateIntegrityError(
            f"{path}: update file format {version!r} is not {FORMAT_VERSION}", path=path
        )
    if rows.get("kind") != kind:
        raise UpdateIntegrityError(
            f"{path}: the update holds {rows.get('kind')!r}, not {kind}", path=path
        )
    return rows


def link_of(rows: Mapping[str, str], path: Path) -> UpdateLink:
    """The chain link a header names.

    Raises:
        UpdateIntegrityError: a key is missing or malformed.
    """
    try:
        return UpdateLink(
            rows["area_id"],
            rows["map_id"],
            int(rows["epoch"]),
            int(rows["from_number"]),
            int(rows["to_number"]),
            rows["previous_sha256"],
        )
    except (KeyError, ValueError) as exc:
        raise UpdateIntegrityError(f"{path}: malformed update header: {exc}", path=path) from None


def parse_created(text: str, path: Path) -> datetime:
    """The header's ``created`` time.

    Raises:
        UpdateIntegrityError: it is not an ISO 8601 time.
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UpdateIntegrityError(
            f"{path}: malformed created time {text[:40]!r}", path=path
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to an update file (nothing is ever written to it).

    Raises:
        UpdateIntegrityError: it is missing or not a SQLite file.
    """
    path = Path(path)
    if not path.is_file():
        raise UpdateIntegrityError(f"{path}: no such update file", path=path)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise UpdateIntegrityError(f"{path}: cannot open the update: {exc}", path=path) from None
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        raise UpdateIntegrityError(f"{path}: not a SQLite file: {exc}", path=path) from None
    return conn
