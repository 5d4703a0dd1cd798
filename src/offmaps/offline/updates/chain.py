"""The chain of a preplanned area's update files, and the state each packaged file keeps of it.

Every update file names the area, the epoch (it changes when the area is repackaged from
scratch), the package numbers it goes from and to, and the SHA-256 of the update before it for
the same file (``base:<sha256>`` of the package file as served, for the first). A file of the
package (a replica GeoPackage, an MBTiles archive) keeps, in its ``offmaps_sync_state`` table,
the area, the epoch, the package number it is at and the SHA-256 of the last update applied to
it: its *chain head*. An update applies only where all of them follow (:func:`check_link`), and
the new state is written in the same transaction as the update's rows. See docs/update-files.md.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from offmaps.errors import UpdateChainError, UpdateIntegrityError

__all__ = [
    "BASE_PREFIX",
    "ChainState",
    "UpdateFile",
    "UpdateLink",
    "check_file",
    "check_link",
    "file_sha256",
    "find_chain_state",
    "fold_wal",
    "read_chain_state",
    "store_chain_state",
    "write_chain_state",
]

BASE_PREFIX = "base:"
"""Starts the ``previous_sha256`` of a chain's first update: ``base:`` and the SHA-256 of the
package file as served."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_STATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS offmaps_sync_state (key TEXT NOT NULL PRIMARY KEY, value TEXT)"
)
_READ_CHUNK = 1 << 20


def _is_head(text: str) -> bool:
    """Whether ``text`` is a SHA-256 in hex, or ``base:`` and one."""
    return bool(_SHA256.match(text.removeprefix(BASE_PREFIX)))


@dataclass(frozen=True, slots=True)
class UpdateLink:
    """Where an update file sits in its chain (the header keys every update file has).

    Attributes:
        area_id: the preplanned map area.
        map_id: the web map the area belongs to.
        epoch: the area's epoch: a repackage from scratch starts a new one, and a new chain.
        from_number: the package number the update applies to.
        to_number: the package number it brings the file to (greater than ``from_number``).
        previous_sha256: the SHA-256 of the update before it for the same file, or
            ``base:`` and the SHA-256 of the package file as served for the first.
    """

    area_id: str
    map_id: str
    epoch: int
    from_number: int
    to_number: int
    previous_sha256: str

    def __post_init__(self) -> None:
        if not self.area_id:
            raise ValueError("an update names its area")
        if self.epoch < 0 or self.from_number < 1 or self.to_number <= self.from_number:
            raise ValueError(
                f"an update goes from a package number >= 1 to a greater one (epoch >= 0), "
                f"not {self.from_number} -> {self.to_number} in epoch {self.epoch}"
            )
        if not _is_head(self.previous_sha256):
            raise ValueError(
                f"previous_sha256 is a SHA-256 in lowercase hex, or base: and one, not "
                f"{self.previous_sha256[:80]!r}"
            )


@dataclass(frozen=True, slots=True)
class ChainState:
    """What a packaged file holds of its chain (keys of its ``offmaps_sync_state`` table).

    Attributes:
        area_id: the preplanned map area.
        epoch: the area's epoch.
        package_number: the package the file's content is at.
        chain_head: the SHA-256 of the last update applied to the file, or ``base:`` and the
            SHA-256 of the package file as it was served, before any update.
    """

    area_id: str
    epoch: int
    package_number: int
    chain_head: str

    def __post_init__(self) -> None:
        if not self.area_id or self.epoch < 0 or self.package_number < 1:
            raise ValueError(f"not a chain state: {self!r}")
        if not _is_head(self.chain_head):
            raise ValueError(f"a chain head is a SHA-256, or base: and one: {self.chain_head!r}")

    def after(self, link: UpdateLink, sha256: str) -> ChainState:
        """The state once the update ``link`` (whose file has ``sha256``) is applied."""
        return ChainState(self.area_id, self.epoch, link.to_number, sha256)


@dataclass(frozen=True, slots=True)
class UpdateFile:
    """An update file written.

    Attributes:
        path: where it is.
        sha256: the SHA-256 of its bytes: the next update's ``previous_sha256``, and what the
            server lists for devices to check.
        size: its size in bytes.
    """

    path: Path
    sha256: str
    size: int


def check_link(state: ChainState | None, link: UpdateLink, *, path: Path | None = None) -> None:
    """Refuse an update that does not follow ``state``, the state of the file it is for.

    Raises:
        UpdateChainError: the file has no chain state; the update is of another area or
            epoch; it was applied already; one before it is missing; or it follows another
            update than the one applied.
    """
    if state is None:
        raise UpdateChainError(
            f"{path or 'the file'} holds no update chain: record its package first "
            "(write_chain_state)",
            path=path,
        )

    def refuse(message: str) -> UpdateChainError:
        return UpdateChainError(
            f"{path or 'the file'}: {message}", path=path, package_number=state.package_number
        )

    if link.area_id != state.area_id:
        raise refuse(f"the update is for area {link.area_id!r}, not {state.area_id!r}")
    if link.epoch != state.epoch:
        raise refuse(
            f"the update is of epoch {link.epoch}, the file of epoch {state.epoch}: the area "
            "was repackaged; download its full package"
        )
    if link.to_number <= state.package_number:
        raise refuse(
            f"the update to package {link.to_number} is applied already (the file is at "
            f"package {state.package_number})"
        )
    if link.from_number != state.package_number:
        raise refuse(
            f"the update goes from package {link.from_number}, the file is at package "
            f"{state.package_number}: apply the updates before it first"
        )
    if link.previous_sha256 != state.chain_head:
        raise refuse(
            f"the update follows {link.previous_sha256[:75]}, the file's last update is "
            f"{state.chain_head[:75]}"
        )


def file_sha256(path: Path) -> tuple[str, int]:
    """The SHA-256 (hex) and size of a file."""
    digest = hashlib.sha256()
    size = 0
    with Path(path).open("rb") as stream:
        while chunk := stream.read(_READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def check_file(path: Path, sha256: str, size: int | None = None) -> None:
    """Refuse an update file whose size or SHA-256 is not the expected one.

    Raises:
        UpdateIntegrityError: it is missing, truncated or tampered with.
    """
    try:
        found, found_size = file_sha256(path)
    except OSError as exc:
        raise UpdateIntegrityError(f"{path}: cannot read the update: {exc}", path=path) from None
    if size is not None and found_size != size:
        raise UpdateIntegrityError(
            f"{path}: the update has {found_size} bytes, not {size} (truncated?)", path=path
        )
    if found != sha256.lower():
        raise UpdateIntegrityError(
            f"{path}: the update's SHA-256 is {found}, not {sha256.lower()[:64]}", path=path
        )


def find_chain_state(conn: sqlite3.Connection) -> ChainState | None:
    """The chain state of the SQLite file ``conn`` is open on, or ``None`` when it has none.

    Raises:
        UpdateChainError: the state is there but malformed.
    """
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'offmaps_sync_state'"
    ).fetchone()
    if exists is None:
        return None
    rows = dict(
        conn.execute(
            "SELECT key, value FROM offmaps_sync_state "
            "WHERE key IN ('area_id', 'epoch', 'package_number', 'chain_head')"
        ).fetchall()
    )
    if not rows:
        return None
    try:
        return ChainState(
            str(rows["area_id"]),
            int(rows["epoch"]),
            int(rows["package_number"]),
            str(rows["chain_head"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise UpdateChainError(f"the file's update chain state is malformed: {exc!r}") from None


def store_chain_state(conn: sqlite3.Connection, state: ChainState) -> None:
    """Write ``state`` into the file ``conn`` is open on, inside the caller's transaction."""
    conn.execute(_STATE_TABLE)
    conn.executemany(
        "INSERT INTO offmaps_sync_state (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [
            ("area_id", state.area_id),
            ("epoch", str(state.epoch)),
            ("package_number", str(state.package_number)),
            ("chain_head", state.chain_head),
        ],
    )


def read_chain_state(path: Path) -> ChainState | None:
    """The chain state a replica GeoPackage or an MBTiles archive holds (``None``: none).

    Raises:
        UpdateChainError: the state is malformed.
        sqlite3.Error: ``path`` is not a SQLite file.
    """
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        return find_chain_state(conn)
    finally:
        conn.close()


def write_chain_state(path: Path, state: ChainState, *, durable: bool = True) -> None:
    """Record in a replica GeoPackage or an MBTiles archive which package of which area it
    holds, in one transaction (docs/update-files.md, "The chain").

    A package as served holds none (a file cannot hold its own hash): the device that
    downloaded one writes the head the server lists for each of its files (``chains`` of the
    package: ``base:`` and the file's SHA-256 as served, or the SHA-256 of the update that
    brought the file to that package) before applying updates.

    ``durable=False`` does not flush the transaction to disk: for a copy its owner makes
    durable once finished.

    Raises:
        sqlite3.Error: the file cannot be written.
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        if not durable:
            conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN IMMEDIATE")
        try:
            store_chain_state(conn, state)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


def fold_wal(path: Path, *, leave_wal_mode: bool = False) -> None:
    """Fold what a SQLite file's write-ahead log holds into the file (``wal_checkpoint``);
    with ``leave_wal_mode``, also switch it to a rollback journal, so that the one file is the
    whole database wherever it is copied or served. Nothing else changes.

    Raises:
        sqlite3.Error: the file cannot be opened or written.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if leave_wal_mode:
            conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
