"""Tile update files: the tiles of a tile layer that changed between two packages of an area.

A tile update file is an MBTiles 1.3 file (any MBTiles reader reads its ``tiles`` and
``metadata``) holding only the tiles added or changed, plus the update header and the tiles
removed. :func:`diff_tiles` compares two archives' tiles by SHA-256, :func:`write_tile_update`
and :func:`build_tile_update` write the file, :func:`build_cover_tile_update` writes it from
a tile source and a package archive compared in SQLite itself, :class:`TileUpdateReader`
reads it, and
:func:`apply_tile_update` applies it to an MBTiles archive in one transaction, or to a PMTiles
archive by rewriting it (a PMTiles archive is immutable and clustered) into a new file renamed
over it, checking the chain. A PMTiles archive keeps its chain state in its JSON metadata
(:func:`read_archive_chain_state`, :func:`write_archive_chain_state`); :func:`rewrite_pmtiles`
is the rewrite. The format is in docs/update-files.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from offmaps.containers import TileReader, TilesetMetadata, open_reader
from offmaps.containers.mbtiles import APPLICATION_ID, tms_row
from offmaps.containers.pmtiles import PMTilesReader, write_json_metadata, write_patched
from offmaps.errors import OffmapsError, PackageError, UpdateChainError, UpdateIntegrityError
from offmaps.offline.updates._header import (
    header_rows,
    link_of,
    open_read_only,
    parse_created,
    read_header,
    write_header,
)
from offmaps.offline.updates.chain import (
    ChainState,
    UpdateFile,
    UpdateLink,
    check_file,
    check_link,
    file_sha256,
    find_chain_state,
    read_chain_state,
    store_chain_state,
    write_chain_state,
)
from offmaps.offline.updates.features import PAGE_SIZE
from offmaps.types import Tile

if TYPE_CHECKING:
    from offmaps.tiling import TileCover

__all__ = [
    "PMTILES_CHAIN_KEY",
    "TileDiff",
    "TileUpdateApplied",
    "TileUpdateInfo",
    "TileUpdateReader",
    "apply_tile_update",
    "apply_tile_updates",
    "build_cover_tile_update",
    "build_tile_update",
    "diff_tiles",
    "iter_pmtiles_hashes",
    "read_archive_chain_state",
    "rewrite_pmtiles",
    "tile_hashes",
    "write_archive_chain_state",
    "write_tile_update",
]

KIND = "tiles"
_TMS = "WebMercatorQuad"
_BATCH = 500
_KEY = "zoom_level INTEGER NOT NULL, tile_column INTEGER NOT NULL, tile_row INTEGER NOT NULL"

PMTILES_CHAIN_KEY = "offmaps_sync_state"
"""The key of a PMTiles archive's JSON metadata that holds its chain state: a string, the JSON
object ``{"area_id", "epoch", "package_number", "chain_head"}`` (docs/update-files.md)."""


@dataclass(frozen=True, slots=True)
class TileUpdateInfo:
    """The header of a tile update file.

    Attributes:
        link: where it sits in its chain.
        layer: the tile layer (its id in the web map).
        format: the tiles' format, as MBTiles' ``format`` metadata names it (``png``, ``jpg``,
            ``webp``, ``pbf``).
        tms: the tile matrix set; MBTiles holds ``WebMercatorQuad`` only.
        created: when it was written, in UTC (``None``: now, when writing).
    """

    link: UpdateLink
    layer: str
    format: str
    tms: str = _TMS
    created: datetime | None = None


@dataclass(frozen=True, slots=True)
class TileDiff:
    """What changed between two versions of a tile layer.

    Attributes:
        changed: tiles added, or whose bytes changed.
        removed: tiles the new version no longer has.
    """

    changed: tuple[Tile, ...]
    removed: tuple[Tile, ...]


@dataclass(frozen=True, slots=True)
class TileUpdateApplied:
    """What :func:`apply_tile_update` did.

    Attributes:
        changed: tiles written (added or replaced).
        removed: tiles deleted (those the archive did not hold count too).
        state: the archive's chain state now.
    """

    changed: int
    removed: int
    state: ChainState


def tile_hashes(reader: TileReader) -> dict[Tile, str]:
    """The SHA-256 of every tile of a container, by tile."""
    return {tile: hashlib.sha256(data).hexdigest() for tile, data in reader.iter_tiles()}


def diff_tiles(old: Mapping[Tile, str], new: Mapping[Tile, str]) -> TileDiff:
    """The tiles that differ between two versions of a layer, given as {tile: SHA-256}: both
    lists in (z, x, y) order."""
    changed = sorted(
        (tile for tile, digest in new.items() if old.get(tile) != digest),
        key=lambda t: (t.z, t.x, t.y),
    )
    removed = sorted((tile for tile in old if tile not in new), key=lambda t: (t.z, t.x, t.y))
    return TileDiff(tuple(changed), tuple(removed))


def _metadata(info: TileUpdateInfo) -> dict[str, str]:
    rows = {"name": info.layer, "format": info.format, "type": "overlay", "version": "1"}
    if info.format == "pbf":
        rows["json"] = json.dumps({"vector_layers": []})  # the spec asks for it with pbf
    return rows


def write_tile_update(
    path: Path,
    info: TileUpdateInfo,
    tiles: Iterable[tuple[Tile, bytes]],
    removed: Iterable[Tile],
) -> UpdateFile:
    """Write a tile update file: the tiles added or changed, and those removed.

    The file is written beside ``path`` and renamed into place when complete.

    Args:
        path: the update file; it must not exist.
        info: its header.
        tiles: the tiles added or changed, with their new bytes.
        removed: the tiles removed.

    Returns:
        The file, its SHA-256 and size.

    Raises:
        FileExistsError: ``path`` exists.
        ValueError: a tile matrix set other than WebMercatorQuad, a tile given twice, or
            both written and removed.
    """
    path = Path(path)
    if info.tms != _TMS:
        raise ValueError(f"tile update files hold {_TMS} tiles only, not {info.tms}")
    if path.exists():
        raise FileExistsError(f"{path} exists already")
    header = header_rows(KIND, info.link, info.created)
    header.update(layer=info.layer, tms=info.tms, format=info.format)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        conn = sqlite3.connect(temp, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("BEGIN")
            conn.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
            conn.execute("CREATE UNIQUE INDEX name ON metadata (name)")
            conn.executemany("INSERT INTO metadata VALUES (?, ?)", _metadata(info).items())
            conn.execute(f"CREATE TABLE tiles ({_KEY}, tile_data BLOB NOT NULL)")
            conn.execute(
                "CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row)"
            )
            conn.execute(
                f"CREATE TABLE offmaps_update_removed ({_KEY}, "
                "PRIMARY KEY (zoom_level, tile_column, tile_row))"
            )
            write_header(conn, header)
            try:
                _insert(conn, "INSERT INTO tiles VALUES (?, ?, ?, ?)", _rows(tiles))
                _insert(
                    conn,
                    "INSERT INTO offmaps_update_removed VALUES (?, ?, ?)",
                    ((t.z, t.x, tms_row(t.y, t.z)) for t in removed),
                )
                both = conn.execute(
                    "SELECT count(*) FROM tiles JOIN offmaps_update_removed "
                    "USING (zoom_level, tile_column, tile_row)"
                ).fetchone()[0]
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"a tile is given twice: {exc}") from None
            if both:
                raise ValueError(f"{both} tiles are both written and removed")
            conn.execute("COMMIT")
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            conn.execute("VACUUM")
        finally:
            conn.close()
        with temp.open("rb+") as stream:
            os.fsync(stream.fileno())
        if path.exists():
            raise FileExistsError(f"{path} appeared while the update was written")
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        temp.with_name(temp.name + "-journal").unlink(missing_ok=True)
        raise
    sha256, size = file_sha256(path)
    return UpdateFile(path, sha256, size)


def _rows(tiles: Iterable[tuple[Tile, bytes]]) -> Iterator[tuple[int, int, int, bytes]]:
    for tile, data in tiles:
        yield tile.z, tile.x, tms_row(tile.y, tile.z), data


def _insert(conn: sqlite3.Connection, sql: str, rows: Iterable[tuple[object, ...]]) -> None:
    batch: list[tuple[object, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= _BATCH:
            conn.executemany(sql, batch)
            batch = []
    conn.executemany(sql, batch)


def build_tile_update(
    path: Path,
    info: TileUpdateInfo,
    old: Path | str | Mapping[Tile, str],
    new: Path | str,
    *,
    new_hashes: Mapping[Tile, str] | None = None,
) -> tuple[UpdateFile, TileDiff]:
    """Write the tile update file from one version of a tile layer to the next.

    Args:
        path: the update file; it must not exist.
        info: its header.
        old: the previous archive (any container :func:`~offmaps.containers.open_reader`
            opens), or its tiles' SHA-256 as recorded when it was packaged.
        new: the new archive.
        new_hashes: the new archive's tiles' SHA-256, when known (else they are read).

    Returns:
        The file written, and the tiles it changes and removes.
    """
    if isinstance(old, Mapping):
        old_hashes: Mapping[Tile, str] = old
    else:
        with open_reader(old) as reader:
            old_hashes = tile_hashes(reader)
    with open_reader(new) as reader:
        hashes = new_hashes if new_hashes is not None else tile_hashes(reader)
        diff = diff_tiles(old_hashes, hashes)
        written = write_tile_update(
            path, info, ((tile, reader.get_tile(tile)) for tile in diff.changed), diff.removed
        )
    return written, diff


# the source's tiles in the cover that the previous archive lacks or holds other bytes of
# (``IS NOT`` compares the blobs with memcmp, in C); the levels drive it, so only the cover's
# boxes of the source's tile index are read. {prev} is the previous archive's tiles: its
# ``tiles`` (MBTiles), or ``temp.prev_hashes`` with the SHA-256 of each (a PMTiles archive,
# not SQLite: the source's tiles of the cover are hashed to be compared)
_CHANGED = """
SELECT t.zoom_level, t.tile_column, t.tile_row, t.tile_data
FROM temp.levels l
JOIN main.tiles t ON t.zoom_level = l.z AND t.tile_column BETWEEN l.x0 AND l.x1
    AND t.tile_row BETWEEN l.r0 AND l.r1
LEFT JOIN {prev} p ON p.zoom_level = t.zoom_level AND p.tile_column = t.tile_column
    AND p.tile_row = t.tile_row
WHERE (l.whole OR EXISTS (SELECT 1 FROM temp.spans s WHERE s.z = t.zoom_level
        AND s.r = t.tile_row AND s.x0 <= t.tile_column AND s.x1 >= t.tile_column))
    AND ({differs})
"""
_DIFFERS = "p.tile_data IS NULL OR p.tile_data IS NOT t.tile_data"
_DIFFERS_HASHED = "p.sha256 IS NULL OR p.sha256 IS NOT offmaps_sha256(t.tile_data)"

# the previous archive's tiles outside the cover (the temporary tables ``levels``: each
# level's box, in MBTiles rows; ``spans``: the rows of a level that is not its whole box), or
# that the source no longer has
_REMOVED = """
SELECT p.zoom_level, p.tile_column, p.tile_row FROM {prev} p
WHERE NOT EXISTS (SELECT 1 FROM temp.levels l WHERE l.z = p.zoom_level
        AND p.tile_column BETWEEN l.x0 AND l.x1 AND p.tile_row BETWEEN l.r0 AND l.r1
        AND (l.whole OR EXISTS (SELECT 1 FROM temp.spans s WHERE s.z = p.zoom_level
            AND s.r = p.tile_row AND s.x0 <= p.tile_column AND s.x1 >= p.tile_column)))
    OR NOT EXISTS (SELECT 1 FROM main.tiles t WHERE t.zoom_level = p.zoom_level
        AND t.tile_column = p.tile_column AND t.tile_row = p.tile_row)
"""


def _load_cover(conn: sqlite3.Connection, cover: TileCover) -> None:
    """The cover into the temporary tables ``levels`` and ``spans`` of ``conn``: a tile is in
    it when it is in its level's box and, unless the level is its whole box, in a span of its
    row, as :meth:`~offmaps.containers.mbtiles.MBTilesReader.iter_cover` keeps it."""
    conn.execute(
        "CREATE TEMP TABLE levels (z INTEGER PRIMARY KEY, x0 INTEGER, x1 INTEGER, "
        "r0 INTEGER, r1 INTEGER, whole INTEGER)"
    )
    conn.execute(
        "CREATE TEMP TABLE spans (z INTEGER, r INTEGER, x0 INTEGER, x1 INTEGER, "
        "PRIMARY KEY (z, r, x0)) WITHOUT ROWID"
    )
    for z in cover.zooms.levels():
        level = cover.level(z)
        bounds = level.bounds()
        if bounds is None:
            continue
        x0, y0, x1, y1 = bounds
        whole = level.count == (x1 - x0 + 1) * (y1 - y0 + 1)
        conn.execute(
            "INSERT INTO temp.levels VALUES (?, ?, ?, ?, ?, ?)",
            (z, x0, x1, tms_row(y1, z), tms_row(y0, z), whole),
        )
        if not whole:
            _insert(
                conn,
                "INSERT INTO temp.spans VALUES (?, ?, ?, ?)",
                (
                    (z, tms_row(row, z), start, stop)
                    for row, start, stop in zip(
                        level.rows.tolist(),
                        level.starts.tolist(),
                        level.stops.tolist(),
                        strict=True,
                    )
                ),
            )


def _is_pmtiles(path: Path) -> bool:
    return path.suffix.lower() == ".pmtiles"


def iter_pmtiles_hashes(path: Path) -> Iterator[tuple[Tile, str]]:
    """The SHA-256 of each tile of a PMTiles archive, in tile-id order (a run of identical
    tiles hashed once).

    Raises:
        ContainerError: the archive cannot be read (or is damaged).
    """
    with PMTilesReader(path) as reader:
        last: bytes | None = None
        digest = ""
        for tile, data in reader.iter_tiles():
            if data is not last:  # a run's tiles come with the same bytes object
                last, digest = data, hashlib.sha256(data).hexdigest()
            yield tile, digest


def _load_pmtiles_hashes(conn: sqlite3.Connection, path: Path) -> None:
    """The SHA-256 of each tile of the PMTiles archive ``path`` into the temporary table
    ``prev_hashes`` of ``conn``, keyed as MBTiles keys tiles (TMS rows)."""
    conn.execute(
        f"CREATE TEMP TABLE prev_hashes ({_KEY}, sha256 TEXT NOT NULL, "
        "PRIMARY KEY (zoom_level, tile_column, tile_row)) WITHOUT ROWID"
    )
    _insert(
        conn,
        "INSERT INTO temp.prev_hashes VALUES (?, ?, ?, ?)",
        ((t.z, t.x, tms_row(t.y, t.z), sha256) for t, sha256 in iter_pmtiles_hashes(path)),
    )


def build_cover_tile_update(
    path: Path,
    info: TileUpdateInfo,
    previous: Path,
    source: Path,
    cover: TileCover,
) -> tuple[UpdateFile, TileDiff]:
    """Write the tile update file that brings the archive ``previous`` to the tiles an
    extraction of ``cover`` from the MBTiles archive ``source`` gives: the source's tiles in
    the cover, byte for byte (as :func:`offmaps.offline.extract.extract_tiles` copies them).

    Both are compared in SQLite itself, ``source`` opened read-only (what its write-ahead log
    holds committed is read too) and an MBTiles ``previous`` attached read-only: the source's
    tiles of the cover that ``previous`` lacks or holds other bytes of are written, and the
    tiles of ``previous`` outside the cover or no longer in the source removed. Only those
    tiles pass through Python; ``previous`` may hold any tiles (another cover's, an older
    source's). A PMTiles ``previous`` (a ``.pmtiles`` file) is read with
    :class:`~offmaps.containers.pmtiles.PMTilesReader`, the SHA-256 of each of its tiles (of
    each run once) loaded into a temporary table, and compared with the SHA-256 of the
    source's tiles of the cover, hashed in the query.

    Args:
        path: the update file; it must not exist.
        info: its header.
        previous: the archive the update applies to (MBTiles, plain or deduplicated schema,
            or PMTiles).
        source: the tile source's archive.
        cover: the tiles to extract (of WebMercatorQuad, as MBTiles holds).

    Returns:
        The file written, and the tiles it changes and removes (in (z, x, y) order).

    Raises:
        PackageError: ``source`` or ``previous`` cannot be read as an archive, or
            ``source`` holds a tile of the cover with no bytes or twice.
    """
    source, previous = Path(source), Path(previous)
    for found in (source, previous):
        if not found.is_file():
            raise PackageError(f"{found}: no such archive")
    hashed = _is_pmtiles(previous)
    prev = "temp.prev_hashes" if hashed else "prev.tiles"
    changed_sql = _CHANGED.format(prev=prev, differs=_DIFFERS_HASHED if hashed else _DIFFERS)
    removed_sql = _REMOVED.format(prev=prev)
    try:
        conn = sqlite3.connect(
            f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise PackageError(f"{source}: cannot open the archive: {exc}") from None
    changed: list[Tile] = []

    def rows() -> Iterator[tuple[Tile, bytes]]:
        for z, x, row, data in conn.execute(changed_sql):
            if not (type(z) is int and type(x) is int and type(row) is int):
                raise PackageError(f"{source}: a tile key that is not integers: {z!r}/{x!r}")
            tile = Tile(x, tms_row(row, z), z)
            if not isinstance(data, bytes) or not data:
                raise PackageError(f"{source}: tile {z}/{tile.x}/{tile.y} has no tile data")
            changed.append(tile)
            yield tile, data

    try:
        if hashed:
            conn.create_function("offmaps_sha256", 1, _sha256, deterministic=True)
            _load_pmtiles_hashes(conn, previous)
        else:
            conn.execute("ATTACH DATABASE ? AS prev", (f"{previous.resolve().as_uri()}?mode=ro",))
        conn.execute("BEGIN")  # one snapshot of the source for both queries
        _load_cover(conn, cover)
        removed = [Tile(x, tms_row(row, z), z) for z, x, row in conn.execute(removed_sql)]
        written = write_tile_update(path, info, rows(), removed)
    except OffmapsError as exc:  # the previous PMTiles archive is damaged
        raise PackageError(f"{previous}: cannot read the archive: {exc}") from None
    except sqlite3.Error as exc:
        raise PackageError(f"{source}: cannot compare the tiles with {previous}: {exc}") from None
    except ValueError as exc:  # a tile given twice: the source has no unique tile index
        raise PackageError(f"{source}: {exc}") from None
    finally:
        conn.close()
    order = lambda t: (t.z, t.x, t.y)  # noqa: E731
    return written, TileDiff(tuple(sorted(changed, key=order)), tuple(sorted(removed, key=order)))


class TileUpdateReader:
    """Reads a tile update file (opened read-only).

    Args:
        path: the update file.

    Raises:
        UpdateIntegrityError: not a tile update file of a format this version reads, or a
            malformed or damaged one.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn = open_read_only(self.path)
        try:
            rows = read_header(self._conn, self.path, KIND)
            self.info = TileUpdateInfo(
                link_of(rows, self.path),
                rows["layer"],
                rows["format"],
                rows["tms"],
                parse_created(rows.get("created", ""), self.path),
            )
        except KeyError as exc:
            self._conn.close()
            raise UpdateIntegrityError(
                f"{self.path}: malformed update header: no {exc}", path=self.path
            ) from None
        except BaseException:
            self._conn.close()
            raise
        tables = {
            str(name)
            for (name,) in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        problem = None
        if self.info.tms != _TMS:
            problem = f"tiles of {self.info.tms[:80]}, not {_TMS}"
        elif not {"tiles", "metadata", "offmaps_update_removed"} <= tables:
            problem = "the tiles, metadata or offmaps_update_removed table is missing"
        if problem is not None:
            self._conn.close()
            raise UpdateIntegrityError(f"{self.path}: {problem}", path=self.path)

    def _damaged(self, exc: BaseException) -> UpdateIntegrityError:
        return UpdateIntegrityError(f"{self.path}: damaged update file: {exc}", path=self.path)

    def iter_tiles(self) -> Iterator[tuple[Tile, bytes]]:
        """The tiles added or changed, with their bytes."""
        try:
            for z, x, row, data in self._conn.execute(
                "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles"
            ):
                yield Tile(x, tms_row(row, z), z), bytes(data)
        except sqlite3.Error as exc:
            raise self._damaged(exc) from None

    def iter_changed(self) -> Iterator[Tile]:
        """The tiles added or changed, without their bytes."""
        try:
            for z, x, row in self._conn.execute(
                "SELECT zoom_level, tile_column, tile_row FROM tiles"
            ):
                yield Tile(x, tms_row(row, z), z)
        except sqlite3.Error as exc:
            raise self._damaged(exc) from None

    def iter_removed(self) -> Iterator[Tile]:
        """The tiles removed."""
        try:
            for z, x, row in self._conn.execute(
                "SELECT zoom_level, tile_column, tile_row FROM offmaps_update_removed"
            ):
                yield Tile(x, tms_row(row, z), z)
        except sqlite3.Error as exc:
            raise self._damaged(exc) from None

    def close(self) -> None:
        """Close the file. Closing twice is fine."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _layout(conn: sqlite3.Connection, archive: Path) -> str:
    """``plain`` (a ``tiles`` table) or ``dedup`` (``map`` + ``images`` behind a ``tiles``
    view, as :class:`~offmaps.containers.mbtiles.MBTilesWriter` writes with ``dedup``).

    Raises:
        PackageError: neither.
    """
    kinds = dict(
        conn.execute(
            "SELECT name, type FROM main.sqlite_master WHERE name IN ('tiles', 'map', 'images')"
        ).fetchall()
    )
    if kinds.get("tiles") == "table":
        return "plain"
    if kinds.get("tiles") == "view" and kinds.get("map") == kinds.get("images") == "table":
        return "dedup"
    raise PackageError(f"{archive}: not an MBTiles archive offmaps can update")


def apply_tile_update(
    archive: Path, update: Path, *, sha256: str, size: int | None = None, durable: bool = True
) -> TileUpdateApplied:
    """Apply a tile update file to an MBTiles archive, in one transaction, or to a PMTiles
    archive (a ``.pmtiles`` file), rewritten.

    The update's size and SHA-256 are checked first, then, in the transaction, the chain
    (:func:`~offmaps.offline.updates.chain.check_link`); the tiles are written, the removed
    ones deleted, and the archive's new chain state recorded. The archive's metadata is left
    as it is. On any failure the archive is as it was.

    A PMTiles archive is immutable and clustered (its tiles in tile-id order): it is rewritten
    from its tiles and the update's (:func:`rewrite_pmtiles`) into a new file beside it, with
    its chain state after the update in its JSON metadata, and that file is renamed over it.
    Its metadata is kept, but for the levels the header gives (those of the tiles it holds
    now, which a reader checks the tiles against).

    Args:
        archive: the MBTiles archive (plain or deduplicated schema), or PMTiles archive.
        update: the tile update file.
        sha256: the SHA-256 the update must have.
        size: the size it must have, when known.
        durable: flush the transaction to disk as it commits; ``False`` for a staged copy
            its owner makes durable once all its updates are applied (a rewritten PMTiles
            archive is always flushed before it is renamed).

    Returns:
        What was done, and the archive's chain state now.

    Raises:
        UpdateIntegrityError: the update is truncated, tampered or not a tile update file.
        UpdateChainError: it does not follow the archive's chain.
        PackageError: ``archive`` is not an archive offmaps can update, or the database or
            the disk failed (a full disk, say).
    """
    archive, update = Path(archive), Path(update)
    check_file(update, sha256, size)
    with TileUpdateReader(update) as reader:
        link = reader.info.link
    if not archive.is_file():
        raise PackageError(f"{archive}: no such archive")
    if _is_pmtiles(archive):
        return _apply_to_pmtiles(archive, [update], [(link, sha256.lower())])
    try:
        conn = sqlite3.connect(
            f"{archive.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None, timeout=30
        )
    except sqlite3.Error as exc:
        raise PackageError(f"{archive}: cannot open the archive: {exc}") from None
    try:
        conn.create_function("offmaps_sha256", 1, _sha256, deterministic=True)
        if not durable:
            conn.execute("PRAGMA synchronous = OFF")
        conn.execute("ATTACH DATABASE ? AS up", (f"{update.resolve().as_uri()}?mode=ro",))
        conn.execute("BEGIN IMMEDIATE")
        try:
            state = find_chain_state(conn)
            check_link(state, link, path=archive)
            if state is None:
                raise AssertionError("check_link lets no file without a chain through")
            changed, removed = _apply(conn, _layout(conn, archive))
            after = state.after(link, sha256.lower())
            store_chain_state(conn, after)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (a full disk)
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise PackageError(f"{archive}: the update was not applied: {exc}") from None
    finally:
        conn.close()
    return TileUpdateApplied(changed, removed, after)


_TOUCHED = (
    "SELECT zoom_level, tile_column, tile_row FROM up.tiles UNION ALL "
    "SELECT zoom_level, tile_column, tile_row FROM up.offmaps_update_removed"
)
_DELETE_TILE = "DELETE FROM main.tiles WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?"
_FIND_MAPPED = (
    "SELECT tile_id FROM main.map WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?"
)
_DELETE_MAPPED = "DELETE FROM main.map WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?"


def _apply(conn: sqlite3.Connection, layout: str) -> tuple[int, int]:
    """Write the attached update ``up`` into the archive; returns (changed, removed)."""
    touched = conn.execute(_TOUCHED).fetchall()
    (changed,) = conn.execute("SELECT count(*) FROM up.tiles").fetchone()
    removed = len(touched) - int(changed)
    if layout == "plain":
        conn.executemany(_DELETE_TILE, touched)
        conn.execute(
            "INSERT INTO main.tiles (zoom_level, tile_column, tile_row, tile_data) "
            "SELECT zoom_level, tile_column, tile_row, tile_data FROM up.tiles"
        )
        return int(changed), removed
    old_ids: set[str] = set()
    for key in touched:
        row = conn.execute(_FIND_MAPPED, key).fetchone()
        if row is not None:
            old_ids.add(str(row[0]))
    conn.executemany(_DELETE_MAPPED, touched)
    conn.execute(
        "INSERT OR IGNORE INTO main.images (tile_id, tile_data) "
        "SELECT offmaps_sha256(tile_data), tile_data FROM up.tiles"
    )
    conn.execute(
        "INSERT INTO main.map (zoom_level, tile_column, tile_row, tile_id) "
        "SELECT zoom_level, tile_column, tile_row, offmaps_sha256(tile_data) FROM up.tiles"
    )
    if old_ids:
        conn.execute(
            "DELETE FROM main.images WHERE tile_id IN (SELECT value FROM json_each(?)) "
            "AND tile_id NOT IN (SELECT tile_id FROM main.map WHERE tile_id IS NOT NULL)",
            (json.dumps(sorted(old_ids)),),
        )
    return int(changed), removed


def _state_text(state: ChainState) -> str:
    return json.dumps(
        {
            "area_id": state.area_id,
            "epoch": state.epoch,
            "package_number": state.package_number,
            "chain_head": state.chain_head,
        },
        separators=(",", ":"),
    )


def _pmtiles_state(path: Path, metadata: TilesetMetadata) -> ChainState | None:
    text = metadata.extra.get(PMTILES_CHAIN_KEY)
    if text is None:
        return None
    try:
        found = json.loads(text)
        return ChainState(
            str(found["area_id"]),
            int(found["epoch"]),
            int(found["package_number"]),
            str(found["chain_head"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise UpdateChainError(
            f"{path}: the archive's update chain state is malformed: {exc!r}", path=path
        ) from None


def read_archive_chain_state(path: Path) -> ChainState | None:
    """The chain state a replica GeoPackage, an MBTiles archive or a PMTiles archive holds
    (``None``: none). A PMTiles archive keeps it in its JSON metadata, under
    :data:`PMTILES_CHAIN_KEY`.

    Raises:
        UpdateChainError: the state is malformed.
        ContainerError: a PMTiles archive cannot be read.
        sqlite3.Error: another file is not a SQLite file.
    """
    path = Path(path)
    if not _is_pmtiles(path):
        return read_chain_state(path)
    with PMTilesReader(path) as reader:
        return _pmtiles_state(path, reader.metadata)


def write_archive_chain_state(path: Path, state: ChainState, *, durable: bool = True) -> None:
    """Record in a replica GeoPackage, an MBTiles archive or a PMTiles archive which package
    of which area it holds (:func:`~offmaps.offline.updates.chain.write_chain_state`). A
    PMTiles archive is written again with the state in its JSON metadata, its directories and
    tiles copied as they are, and renamed over the old one (always flushed first).

    Raises:
        ContainerError: a PMTiles archive cannot be read or written.
        sqlite3.Error: another file cannot be written.
    """
    path = Path(path)
    if not _is_pmtiles(path):
        write_chain_state(path, state, durable=durable)
        return
    with PMTilesReader(path) as reader:
        document = reader.json_metadata
    document[PMTILES_CHAIN_KEY] = _state_text(state)
    write_json_metadata(path, path, document)


def rewrite_pmtiles(
    previous: Path, update: Path | Sequence[Path], target: Path, metadata: TilesetMetadata
) -> tuple[int, int]:
    """Write at ``target`` the PMTiles archive that holds the tiles of the PMTiles archive
    ``previous`` with the tile update ``update`` applied (its tiles written, its removed tiles
    gone), or several updates one after the other, and ``metadata``: what
    :class:`~offmaps.containers.pmtiles.PMTilesWriter` makes of them, which depends on the
    tiles and the metadata only (an extraction of the same tiles with the same metadata is the
    same bytes). ``target`` appears whole or not at all; it may be ``previous``. The updates
    are not checked against a chain (:func:`apply_tile_update` does that).

    Several updates make one rewrite: for each tile the last update naming it decides (its
    bytes, or its removal), and only those bytes are read.

    Returns:
        How many tiles the updates wrote, and how many they removed (tiles of the result).

    Raises:
        UpdateIntegrityError: an update is not a tile update file, or damaged.
        PackageError: ``previous`` cannot be read, its tiles are not of an update's format,
            or ``target`` cannot be written (a full disk, say).
    """
    previous, target = Path(previous), Path(target)
    updates = [Path(update)] if isinstance(update, (str, Path)) else [Path(u) for u in update]
    last: dict[tuple[int, int, int], int] = {}  # the update that decides a tile; -1: removed
    held = metadata.tile_format.value
    for index, path in enumerate(updates):
        with TileUpdateReader(path) as reader:
            if reader.info.format != held:
                raise PackageError(
                    f"{previous}: {path.name} holds {reader.info.format} tiles, the archive {held}"
                )
            last.update(((t.z, t.x, t.y), -1) for t in reader.iter_removed())
            last.update(((t.z, t.x, t.y), index) for t in reader.iter_changed())

    def changed() -> Iterator[tuple[Tile, bytes]]:
        for index, path in enumerate(updates):
            with TileUpdateReader(path) as reader:
                for tile, data in reader.iter_tiles():
                    if last[(tile.z, tile.x, tile.y)] == index:
                        yield tile, data

    gone = [Tile(x, y, z) for (z, x, y), index in last.items() if index < 0]
    try:
        write_patched(previous, target, metadata, changed(), gone)
    except UpdateIntegrityError:
        raise
    except OffmapsError as exc:
        raise PackageError(f"{previous}: the update was not applied: {exc}") from exc
    removed = sum(1 for index in last.values() if index < 0)
    return len(last) - removed, removed


def apply_tile_updates(
    archive: Path, updates: Sequence[tuple[Path, str, int | None]], *, durable: bool = True
) -> TileUpdateApplied:
    """Apply tile updates to one archive in order, each ``(update, sha256, size)`` as
    :func:`apply_tile_update` takes it: one after the other to an MBTiles archive; to a
    PMTiles archive in **one** rewrite (every update's size, SHA-256 and place in the chain
    checked first, the chain state after the last recorded), since each rewrite costs the
    whole archive. On any failure a PMTiles archive is as it was; an MBTiles archive keeps the
    updates applied before the one that failed (each is its own transaction).

    Returns:
        What was done (the counts of the last update for MBTiles, of the result for PMTiles)
        and the archive's chain state now.

    Raises:
        ValueError: no update is given.
        UpdateIntegrityError, UpdateChainError, PackageError: as :func:`apply_tile_update`.
    """
    archive = Path(archive)
    if not updates:
        raise ValueError("no tile update to apply")
    if not _is_pmtiles(archive):
        done = [
            apply_tile_update(archive, update, sha256=sha256, size=size, durable=durable)
            for update, sha256, size in updates  # in order, each its own transaction
        ]
        return done[-1]
    links = []
    for update, sha256, size in updates:
        check_file(Path(update), sha256, size)
        with TileUpdateReader(Path(update)) as reader:
            links.append((reader.info.link, sha256.lower()))
    if not archive.is_file():
        raise PackageError(f"{archive}: no such archive")
    return _apply_to_pmtiles(archive, [Path(u) for u, _, _ in updates], links)


def _apply_to_pmtiles(
    archive: Path, updates: list[Path], links: list[tuple[UpdateLink, str]]
) -> TileUpdateApplied:
    """Apply checked update files to a PMTiles archive: their chain checked in order, then one
    rewrite with the updates and the chain state after the last, renamed over it."""
    try:
        with PMTilesReader(archive) as reader:
            metadata = reader.metadata
    except OffmapsError as exc:
        raise PackageError(f"{archive}: not a PMTiles archive offmaps can update: {exc}") from exc
    state = _pmtiles_state(archive, metadata)
    for link, sha256 in links:
        check_link(state, link, path=archive)
        if state is None:
            raise AssertionError("check_link lets no file without a chain through")
        state = state.after(link, sha256)
    if state is None:
        raise AssertionError("a PMTiles archive is rewritten with one update at least")
    kept = replace(
        metadata,
        minzoom=None,  # the levels of the tiles held: the header must span them
        maxzoom=None,
        extra={**metadata.extra, PMTILES_CHAIN_KEY: _state_text(state)},
    )
    changed, removed = rewrite_pmtiles(archive, updates, archive, kept)
    return TileUpdateApplied(changed, removed, state)
