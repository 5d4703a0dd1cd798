"""The tile side of a preplanned area's refresh (docs/preplanned.md, "Incremental refreshes"):
what marks a tile source's content for an area (an archive file's size and time, a tile cache's
digest of its index over the area's cover), the tiles of a previous package's archive, and an
archive brought up to date made exactly as an extraction makes it (its metadata, no chain
state). :mod:`offmaps.offline.preplanned` compares and applies with these."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, runtime_checkable

from offmaps.containers import TilesetMetadata, open_writer
from offmaps.containers.mbtiles import tms_row
from offmaps.containers.pmtiles import PMTilesReader
from offmaps.errors import OffmapsError, PackageError
from offmaps.offline.plan import TileLayerPlan
from offmaps.offline.updates.tiles import iter_pmtiles_hashes
from offmaps.sources import TileSourceInfo
from offmaps.storage import BlobStore
from offmaps.tiling import TileCover, get_tms, tile_cover
from offmaps.types import Tile

__all__ = [
    "WEB_MERCATOR",
    "IndexedTileSource",
    "Key",
    "Row",
    "archive_format",
    "archive_rows",
    "as_extracted",
    "blob_bytes",
    "cache_cover",
    "cache_mark",
    "content_mark",
    "file_mark",
    "metadata_rows",
]

_log = logging.getLogger(__name__)


@runtime_checkable
class IndexedTileSource(Protocol):
    """A tile source whose index knows the SHA-256 of every tile it holds, the bytes kept once
    per content in a blob store: a tile cache (:class:`offmaps.cache.TileCache`, which this
    layer does not import). :meth:`get_tile` reads through: a tile it lacks is asked of the
    cache's own source (and stored)."""

    @property
    def info(self) -> TileSourceInfo: ...

    @property
    def blobs(self) -> BlobStore: ...

    def get_tile(self, tile: Tile) -> bytes: ...

    def stored_hashes(self, cover: TileCover) -> Iterator[Row]: ...


WEB_MERCATOR = "WebMercatorQuad"
Key = tuple[int, int, int]
"""A tile's z, x, y (rows from the top)."""
Row = tuple[int, int, int, str]
"""A tile's z, x, y and the SHA-256 of its bytes."""


def cache_cover(info: TileSourceInfo, plan: TileLayerPlan) -> tuple[TileCover, int]:
    """The tiles an extraction asks a cache for (the cover of the layer's area, as
    :func:`~offmaps.offline.generate.export_tiles` walks it), and how many of them are at the
    cache's levels (the others it serves none of)."""
    cover = tile_cover(plan.area.aoi(), get_tms(info.tms_id), plan.zooms)
    served = sum(n for z, n in cover.counts().items() if info.min_zoom <= z <= info.max_zoom)
    return cover, served


def content_mark(
    info: TileSourceInfo, plan: TileLayerPlan, tiles: Iterable[tuple[Key, str]]
) -> str:
    """The mark of a tile cache's tiles for an area: a SHA-256 of what the package's metadata
    comes from (the cache's format, title, attribution, levels, the layer's levels) and of
    each (tile, SHA-256) of ``tiles``, in (z, x, y) order."""
    digest = hashlib.sha256()
    described = [
        info.tms_id,
        info.tile_format.value,
        info.title,
        info.attribution,
        info.tile_compression.value,
        list(info.vector_layers),
        info.min_zoom,
        info.max_zoom,
        plan.zooms.min,
        plan.zooms.max,
    ]
    digest.update(json.dumps(described).encode())
    digest.update(
        "".join(f"{z}/{x}/{y}={sha256}\n" for (z, x, y), sha256 in sorted(tiles)).encode()
    )
    return f"cache:{digest.hexdigest()}"


def _is_pmtiles(archive: Path) -> bool:
    return archive.suffix.lower() == ".pmtiles"


def archive_rows(archive: Path) -> dict[Key, str]:
    """The SHA-256 of each tile of an MBTiles or PMTiles archive, by (z, x, y).

    Raises:
        ContainerError: a PMTiles archive cannot be read.
        sqlite3.Error: an MBTiles archive cannot be read.
    """
    if _is_pmtiles(archive):
        return {(t.z, t.x, t.y): sha256 for t, sha256 in iter_pmtiles_hashes(archive)}
    conn = sqlite3.connect(f"{archive.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {
            (z, x, (1 << z) - 1 - row): hashlib.sha256(data).hexdigest()
            for z, x, row, data in conn.execute(
                "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles"
            )
        }
    finally:
        conn.close()


def cache_mark(
    source: IndexedTileSource, plan: TileLayerPlan | None
) -> tuple[str, list[Row]] | None:
    """What says an extraction of a tile cache for the area gives what the previous package's
    archive holds: the :func:`content_mark` of the tiles its index holds in the area's cover
    at the cache's levels, which a package records as the mark of the tiles its archive holds
    (:mod:`offmaps.offline.preplanned`, as it packages and refreshes): equal, the archive is
    what an extraction gives now (content against content, so a tile changed while the previous
    package was made, and changed back since, is seen).

    It covers the area only (tiles changed elsewhere do not matter) and is a digest of the
    content itself: the index keeps no change counter; its rows' ``stored`` times miss
    removals; and its file's size and time move at every read (usage counters, read times)
    and do not exist in PostgreSQL. A cache lacking tiles of the cover gets a mark that
    matches none: an extraction asks the cache's source for those again, and it may have them
    now. ``None`` (extracted again) for a cache an MBTiles archive cannot hold or whose index
    cannot be read; else the mark and the rows it was made of.
    """
    info = source.info
    if plan is None or info.tms_id != WEB_MERCATOR:
        return None
    try:
        cover, served = cache_cover(info, plan)
        rows = [
            row for row in source.stored_hashes(cover) if info.min_zoom <= row[0] <= info.max_zoom
        ]
    except OffmapsError as exc:
        _log.warning("tile cache %s cannot be marked: %s", info.name, exc)
        return None
    mark = content_mark(info, plan, (((z, x, y), sha256) for z, x, y, sha256 in rows))
    if len(rows) < served:
        mark += f":lacks:{served - len(rows)}:{uuid.uuid4().hex}"
    return mark, rows


def file_mark(path: Path) -> str | None:
    """The size and modification time of an archive file and of the write-ahead log beside it
    (a SQLite writer's changes may be only there); ``None`` when it cannot be read."""
    try:
        stat = path.stat()
    except OSError:
        return None
    mark = f"{stat.st_size}:{stat.st_mtime_ns}"
    try:
        wal = path.with_name(path.name + "-wal").stat()
    except FileNotFoundError:
        return mark
    except OSError:
        return None
    return f"{mark}:{wal.st_size}:{wal.st_mtime_ns}"


def _metadata_of(conn: sqlite3.Connection) -> dict[str, str]:
    """The ``metadata`` table of the MBTiles archive ``conn`` is open on."""
    return {str(k): str(v) for k, v in conn.execute("SELECT name, value FROM metadata")}


def metadata_rows(archive: Path) -> dict[str, str]:
    """The ``metadata`` table of an MBTiles archive."""
    conn = sqlite3.connect(f"{archive.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return _metadata_of(conn)
    finally:
        conn.close()


def archive_format(archive: Path) -> str | None:
    """The tile format of an MBTiles or PMTiles archive, as MBTiles' ``format`` metadata names
    it (``png``, ``jpg``, ``webp``, ``pbf``); ``None`` when an MBTiles archive names none.

    Raises:
        ContainerError: a PMTiles archive cannot be read.
        sqlite3.Error: an MBTiles archive cannot be read.
    """
    if _is_pmtiles(archive):
        with PMTilesReader(archive) as reader:
            return reader.metadata.tile_format.value
    return metadata_rows(archive).get("format")


_CHAIN_STATE_TABLE = "offmaps_sync_state"  # docs/update-files.md, "The chain"


def as_extracted(archive: Path, metadata: TilesetMetadata, scratch: Path) -> None:
    """Leave an archive brought up to date by an update as an extraction of its tiles writes
    it: without the chain state applying the update needed (a package as served holds none),
    and with the metadata an extraction writes, ``metadata`` completed from the tiles it holds
    (levels, bounds, centre), made by the writer an extraction uses: a tile at the lowest
    level and the corners of the highest decide them."""
    conn = sqlite3.connect(archive, isolation_level=None, timeout=30)
    try:
        low, high = conn.execute("SELECT min(zoom_level), max(zoom_level) FROM tiles").fetchone()
        corners: list[Tile] = []
        if high is not None:
            x0, x1, r0, r1 = conn.execute(
                "SELECT min(tile_column), max(tile_column), min(tile_row), max(tile_row) "
                "FROM tiles WHERE zoom_level = ?",
                (high,),
            ).fetchone()
            corners = [Tile(x0, tms_row(r1, high), high), Tile(x1, tms_row(r0, high), high)]
            low_x, low_row = conn.execute(
                "SELECT tile_column, tile_row FROM tiles WHERE zoom_level = ? LIMIT 1", (low,)
            ).fetchone()
            corners.append(Tile(low_x, tms_row(low_row, low), low))
        model = scratch / f"metadata-{archive.name}"
        model.unlink(missing_ok=True)
        with open_writer(str(model), metadata) as writer:
            for tile in corners:
                writer.write_tile(tile, b"\0")
        wanted = metadata_rows(model)
        model.unlink()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"DROP TABLE IF EXISTS {_CHAIN_STATE_TABLE}")
            if _metadata_of(conn) != wanted:
                conn.execute("DELETE FROM metadata")
                conn.executemany("INSERT INTO metadata (name, value) VALUES (?, ?)", wanted.items())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


_BLOB_READS = 8
"""Blobs read at once: a blob store in S3 answers each read over the network."""


def blob_bytes(blobs: BlobStore, wanted: list[tuple[Key, str]]) -> Iterator[tuple[Key, bytes]]:
    """The bytes of each (tile, SHA-256) from a content-addressed blob store, a few read at
    once, each checked against its SHA-256.

    Raises:
        PackageError: a blob's bytes do not hash to its key (damaged).
        BlobNotFoundError: a blob is missing.
    """
    chunk = 64 * _BLOB_READS
    with ThreadPoolExecutor(_BLOB_READS) as pool:
        for start in range(0, len(wanted), chunk):
            part = wanted[start : start + chunk]
            for (key, sha256), data in zip(
                part, pool.map(blobs.get, [sha256 for _, sha256 in part]), strict=True
            ):
                if hashlib.sha256(data).hexdigest() != sha256:
                    z, x, y = key
                    raise PackageError(f"the blob {sha256} of tile {z}/{x}/{y} is damaged")
                yield key, data
