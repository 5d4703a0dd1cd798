"""Import of a container's tiles into an existing tile cache (``offmaps cache import``).

The source is any :class:`~offmaps.containers.TileReader` (an archive or folder the containers
read, or another cache through :class:`~offmaps.cache.export.CacheTileReader`). Before any tile
is read, the source's tile matrix set must line up with the cache's
(:func:`~offmaps.tiling.check_compatible` names the first difference: CRS, origin, tile size, a
level's cell size) and its tile format must be the cache's; a mixed cache
(:attr:`~offmaps.cache.model.CacheDefinition.mixed`, ArcGIS's MIXED format) takes PNG and JPEG
sources, each tile checked by its own magic bytes. A mixed source (a mixed cache, an Esri cache
whose ``conf.xml`` says ``MIXED``: :attr:`~offmaps.containers.base.TilesetMetadata.mixed`) goes
only into a mixed cache: into a PNG or JPEG cache its tiles of the other format would not match.

Each tile the source holds (in the area, when one is given: clipped as on export, with
:class:`~offmaps.containers.clip.AreaClipper`) is

* stored as it comes when the cache lacks it;
* **merged** by default over the tile the cache holds with
  :func:`~offmaps.containers.merge.merge_tiles`: transparent incoming pixels keep the existing
  ones, a fully opaque incoming tile is stored as given (a JPEG, or a PNG whose headers show no
  alpha channel nor ``tRNS`` chunk, without being decoded: like a tile copied on export, a
  truncated one is not caught there);
* stored as it comes, replacing the existing one, with ``overwrite=True``.

Vector tiles have no pixels to composite: an incoming one replaces the existing one either way.
Into a mixed cache, a merge is stored as PNG where the result has a transparent pixel and as
JPEG elsewhere; a JPEG tile cut by the area's boundary is clipped to transparency (as PNG) rather
than filled with ``background``, so the merge keeps the cache's pixels outside the area.

Tiles are stored with :func:`~offmaps.cache.tiles.store_tiles` in batches of
:data:`IMPORT_BATCH`: each batch is one index transaction, written once its blobs are stored, so
an import stopped anywhere leaves every tile either old or new, never torn.

**A rerun of a stopped import skips what is done.** Each batch's transaction also records its
tiles, with the SHA-256 stored for each, in the import's *journal* in the cache index (SQLite
or PostgreSQL: every process and worker sharing the index sees it), so a kill leaves journal
and tiles consistent. The journal's key is the import's identity: the cache, the source's
fingerprint (its path with the size and modification time of the file, or of every file of a
folder; a cache's name and tile count and bytes; or the ``source_id`` given, such as an
uploaded archive's SHA-256; and its metadata), the area, the levels and
the mode (merge or overwrite, and the JPEG background). A rerun with the same identity reads
the source again but leaves the tiles the journal records as they are (not clipped, merged nor
stored: :attr:`ImportResult.skipped`), unless the cache's bytes of a tile are no longer the ones
the journal recorded (re-seeded, truncated or replaced since): that tile is imported again. (A
tile another import merged over since is then composited again too: the journal cannot tell
that from a re-seed.) Tiles left out or failed are not journaled: a rerun checks them again and
lists the failures again. A source the identity cannot fingerprint (a reader with neither a
path nor a cache behind it) gets no journal: a rerun reads and merges everything again.

A finished import drops its journal: running it once more is a new import. Overwriting, that
stores the same bytes. Merging, it leaves every pixel the overlay has fully opaque or fully
transparent as it was (the composite of an overlay over its own result is that result, and
encoding the same pixels gives the same bytes); a **semi-transparent** incoming pixel is
composited once more over its own result, so it gets more opaque. ``resume=False`` forgets a
stopped import's journal and starts afresh. A cache's journals go when it is deleted.

Compositing is most of an import's work (decoding two tiles and encoding one: milliseconds per
tile). Once an import has composited :data:`INLINE_MERGES` tiles in its own process, each
batch's composites go to worker processes (``processes``, one per CPU by default; forked from a
process running one thread, else from a fork server: :func:`offmaps.processes.worker_context`),
the batch's reading, clipping and storing staying in the importing process.

Needs Pillow and rasterio (the ``raster`` extra) for clipping and merging.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from offmaps.cache.export import CacheTileReader
from offmaps.cache.index import TileIndex
from offmaps.cache.tiles import store_tiles
from offmaps.containers.base import TileReader, detect_tile_format
from offmaps.containers.clip import DEFAULT_BACKGROUND, AreaClipper, TileRelation
from offmaps.containers.export import (
    FailedTile,
    ProgressCallback,
    TileTally,
    plan_export,
)
from offmaps.containers.merge import (
    MIXED,
    CacheTileFormat,
    as_png,
    merge_tiles,
    mixed_tile_format,
)
from offmaps.errors import CacheError, ContainerError, InvalidTileDataError
from offmaps.processes import worker_context
from offmaps.storage import BlobStore
from offmaps.tiling import AreaOfInterest, check_compatible, get_tms
from offmaps.types import Tile, TileFormat, ZoomRange

__all__ = ["IMPORT_BATCH", "INLINE_MERGES", "ImportResult", "import_tiles"]

IMPORT_BATCH = 256
"""Tiles stored per index transaction: the unit an interrupted import leaves whole."""
INLINE_MERGES = 256
"""Tiles composited in the importing process before worker processes take the rest."""


@dataclass(frozen=True)
class ImportResult:
    """What an import did.

    Attributes:
        read: tiles read from the source.
        new: tiles the cache lacked, stored as they came (clipped to the area).
        merged: tiles composited over the cache's existing ones.
        overwritten: tiles that replaced the cache's existing ones.
        left_out: tiles read but not imported: outside the area, or no pixel of theirs inside.
        clipped: of the tiles imported, those cut by the area's boundary and clipped.
        changed: tiles whose stored bytes changed (a merge or overwrite giving the bytes the
            cache held already changes nothing).
        failures: tiles left out because their bytes are not a valid image of the format.
        failed: the first :data:`~offmaps.containers.export.MAX_LISTED_FAILURES` of them, with
            their keys.
        skipped: of the tiles read, those an earlier, stopped run of the same import had
            stored (and the cache still holds as it stored them): left as they are, neither
            clipped, merged nor stored again.
    """

    read: int
    new: int
    merged: int
    overwritten: int
    left_out: int
    clipped: int
    changed: int
    failures: int
    failed: tuple[FailedTile, ...]
    skipped: int = 0

    @property
    def imported(self) -> int:
        """Tiles stored: new, merged or overwritten."""
        return self.new + self.merged + self.overwritten


def import_tiles(
    index: TileIndex,
    blobs: BlobStore,
    name: str,
    source: TileReader,
    *,
    aoi: AreaOfInterest | None = None,
    zooms: ZoomRange | None = None,
    overwrite: bool = False,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    progress: ProgressCallback | None = None,
    resume: bool = True,
    source_id: str | None = None,
    processes: int | None = None,
) -> ImportResult:
    """Import the tiles of ``source`` into the existing cache ``name``.

    Args:
        index: the cache index.
        blobs: the blob store of the cache's tiles.
        name: the receiving cache.
        source: an open reader.
        aoi: import only this area (any CRS), tiles cut by its boundary clipped; the whole
            source when None.
        zooms: only these levels; by default the levels the source and the cache share.
        overwrite: replace the cache's tiles rather than merge over them.
        background: the RGB colour of JPEG pixels outside the area.
        progress: called as tiles are handled, for progress bars.
        resume: skip the tiles a stopped run of the same import stored; False forgets that
            run's journal and imports every tile again.
        source_id: what identifies the source's tiles in the import's identity, in place of
            its path, size and modification time: for a source whose path says nothing (an
            uploaded archive's SHA-256, copied to a new scratch folder by each job).
        processes: the most worker processes compositing tiles (default: one per CPU; 1 or
            less: all in this process).

    Raises:
        CacheNotFoundError: when no cache has this name.
        IncompatibleTileMatrixSetError: the tiling schemes differ (the first difference named).
        CacheError: the formats differ, or the levels asked for are not the cache's.
        InvalidAOIError: the area does not meet the source's tiles.
    """
    definition = index.definition(name)
    meta = source.metadata
    check_compatible(get_tms(definition.tms), meta.tms)
    if not meta.tile_formats <= definition.tile_formats:
        raise CacheError(
            f"the source's tiles are {meta.format_name}"
            f"{' (PNG and JPEG)' if meta.mixed else ''}, cache {name!r} holds "
            f"{definition.format_name} tiles: an import keeps the cache's format"
            + (" (import into a mixed cache)" if meta.mixed else "")
        )
    mixed = definition.mixed
    levels = _levels(
        name, definition.min_zoom, definition.max_zoom, meta.minzoom, meta.maxzoom, zooms
    )
    plan = plan_export(source, aoi=aoi, zooms=levels)
    raster = meta.tile_format.is_raster
    clipper = (
        AreaClipper(aoi, meta.tms, background=background) if aoi is not None and raster else None
    )
    existing = CacheTileReader(index, blobs, name)
    tally = _Tally()
    journal = _journal_key(name, source, source_id, aoi, levels, overwrite, background)
    if journal is not None and not resume:
        index.drop_journal(journal)
    resuming = journal is not None and journal in index.journals(name)
    tiles = source.iter_cover(plan.cover) if plan.cover else source.iter_tiles(levels.levels())
    merges = _Merges(
        MIXED if mixed else definition.format,
        max(1, processes if processes is not None else (os.cpu_count() or 1)),
    )
    try:
        for batch in _batched(tiles):
            to_store: list[tuple[Tile, bytes | None]] = []
            pending: list[tuple[int, Tile, bytes, bytes]] = []  # (position, tile, held, incoming)
            done = (
                index.find_done(journal, name, (t for t, _ in batch))
                if journal and resuming
                else ()
            )
            for tile, data in batch:
                tally.read += 1
                if tile in done:
                    tally.skipped += 1
                    continue
                tile_format = _mixed_format(data) if mixed else None
                if tile_format is None and meta.mixed:  # a mixed source's tile of neither
                    tally.fail(tile, _neither(tile, data))
                    continue
                incoming = _incoming(
                    tile, data, tile_format or meta.tile_format, clipper, tally, mixed=mixed
                )
                if incoming is None:
                    continue
                held = existing.find_tile(tile)  # a missing or damaged blob: as if absent
                if held is None:
                    tally.new += 1
                elif overwrite or not raster:
                    tally.overwritten += 1
                elif not _opaque_by_header(incoming):  # else merge_tiles would return it
                    pending.append((len(to_store), tile, held, incoming))
                    to_store.append((tile, None))  # its composite, below
                    continue
                else:
                    tally.merged += 1
                to_store.append((tile, incoming))
            for position, composite in zip(
                (p for p, *_ in pending), merges.run([m[1:] for m in pending]), strict=True
            ):
                tile = to_store[position][0]
                if isinstance(composite, ContainerError):  # a tile that does not decode
                    tally.fail(tile, str(composite))
                else:
                    tally.merged += 1
                    to_store[position] = (tile, composite)
            stored = [(tile, data) for tile, data in to_store if data is not None]
            tally.changed += store_tiles(index, blobs, name, stored, journal=journal)
            tally.step(progress)
    finally:
        merges.close()
    if journal is not None:  # finished: a rerun is a new import
        index.drop_journal(journal)
    tally.step(progress, force=True)
    return tally.result()


class _Merges:
    """Composites of incoming tiles over held ones: in this process for the first
    :data:`INLINE_MERGES`, then in up to ``workers`` worker processes."""

    def __init__(self, cache_format: CacheTileFormat, workers: int) -> None:
        self.cache_format = cache_format
        self.workers = workers
        self.done = 0
        self._pool: ProcessPoolExecutor | None = None

    def run(self, items: Sequence[tuple[Tile, bytes, bytes]]) -> list[bytes | ContainerError]:
        """The composite of each ``(tile, held, incoming)``, or the error of a tile that does
        not decode, in order."""
        if not items:
            return []
        self.done += len(items)
        if self.workers <= 1 or self.done <= INLINE_MERGES:
            return [_merge_one(self.cache_format, *item) for item in items]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=worker_context(["offmaps.cache.imports"]),
            )
        formats = itertools.repeat(self.cache_format)
        tiles, held, incoming = zip(*items, strict=True)
        chunk = max(1, len(items) // (4 * self.workers))
        return list(self._pool.map(_merge_one, formats, tiles, held, incoming, chunksize=chunk))

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def _merge_one(
    cache_format: CacheTileFormat, tile: Tile, held: bytes, incoming: bytes
) -> bytes | ContainerError:
    """One composite, or why it could not be made (returned, so a pool passes it back)."""
    try:
        return merge_tiles(held, incoming, cache_format=cache_format, tile=tile)
    except ContainerError as exc:  # the incoming or the held tile does not decode
        return exc


def _journal_key(
    name: str,
    source: TileReader,
    source_id: str | None,
    aoi: AreaOfInterest | None,
    levels: ZoomRange,
    overwrite: bool,
    background: tuple[int, int, int],
) -> str | None:
    """The identity of an import, the key of its journal: the SHA-256 of the cache, the
    source's fingerprint, the area, the levels and the mode. None when the source cannot be
    fingerprinted (a reader with neither a path nor a cache behind it): no journal then."""
    fingerprint = _source_fingerprint(source, source_id)
    if fingerprint is None:
        return None
    identity = {
        "cache": name,
        "source": fingerprint,
        "area": None if aoi is None else [aoi.geometry.wkb_hex, aoi.crs.to_wkt()],
        "zooms": [levels.min, levels.max],
        "mode": "overwrite" if overwrite else "merge",
        "background": list(background),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _source_fingerprint(source: TileReader, source_id: str | None) -> list[object] | None:
    """What identifies a source's tiles without reading them: the id given, a cache's name and
    figures, or a path with its size and modification time (for a folder, those of every file
    in it); and the metadata in every case."""
    meta = source.metadata
    described: list[object] = [
        meta.format_name,
        meta.tms.id,
        meta.minzoom,
        meta.maxzoom,
        None if meta.bounds is None else list(meta.bounds),
    ]
    if source_id is not None:
        return ["id", source_id, *described]
    if isinstance(source, CacheTileReader):
        stats = source.index.stats(source.name)
        return ["cache", source.name, stats.tiles, stats.bytes, *described]
    path = getattr(source, "path", None)
    if not isinstance(path, Path):
        return None
    return ["path", str(path.absolute()), _stat_fingerprint(path), *described]


def _stat_fingerprint(path: Path) -> list[int] | str | None:
    """A file's size and modification time; a hash of every file's relative path, size and
    modification time in a folder; None when the path is not on this machine."""
    try:
        if path.is_file():
            stat = path.stat()
            return [stat.st_size, stat.st_mtime_ns]
        if not path.is_dir():
            return None
        digest = hashlib.sha256()
        for folder, dirs, files in os.walk(path):
            dirs.sort()
            for file in sorted(files):
                full = os.path.join(folder, file)
                stat = os.stat(full)
                relative = os.path.relpath(full, path)
                digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()
    except OSError:
        return None


def _levels(
    name: str,
    cache_min: int,
    cache_max: int,
    source_min: int | None,
    source_max: int | None,
    zooms: ZoomRange | None,
) -> ZoomRange:
    """The levels imported: ``zooms`` if the cache has them all, else those both hold."""
    if zooms is not None:
        if zooms.min < cache_min or zooms.max > cache_max:
            raise CacheError(
                f"cache {name!r} holds levels {cache_min}-{cache_max}, not {zooms.min}-{zooms.max}"
            )
        return zooms
    low = max(cache_min, source_min if source_min is not None else cache_min)
    high = min(cache_max, source_max if source_max is not None else cache_max)
    if low > high:
        raise CacheError(
            f"the source's levels {source_min}-{source_max} are none of cache {name!r}'s "
            f"({cache_min}-{cache_max})"
        )
    return ZoomRange(low, high)


def _incoming(
    tile: Tile,
    data: bytes,
    tile_format: TileFormat,
    clipper: AreaClipper | None,
    tally: _Tally,
    *,
    mixed: bool = False,
) -> bytes | None:
    """The bytes to import for ``tile`` (clipped to the area), or None: left out or failed."""
    if clipper is not None:
        if clipper.relation(tile) is TileRelation.OUTSIDE:
            tally.left_out += 1
            return None
        given = data
        try:
            if (
                tile_format is TileFormat.JPEG
                and mixed
                and clipper.relation(tile) is TileRelation.CUT
            ):
                # a mixed cache's clip makes outside pixels transparent (PNG), not background:
                # the merge then keeps the cache's pixels there
                data, tile_format = as_png(data, tile), TileFormat.PNG
            clipped = clipper.clip(tile, data, tile_format)
        except InvalidTileDataError as exc:
            tally.fail(tile, str(exc))
            return None
        if clipped is data:  # wholly inside after all: the bytes as given
            return given
        if clipped is None:
            tally.left_out += 1
        elif clipped is not data and clipped != data:
            tally.clipped += 1
        return clipped
    problem = _format_problem(tile, data, tile_format)
    if problem is not None:
        tally.fail(tile, problem)
        return None
    return data


def _mixed_format(data: bytes) -> TileFormat | None:
    """The format of a tile bound for a mixed cache: PNG or JPEG by its magic bytes; None for
    anything else (checked then against the source's format, and refused)."""
    found, _ = detect_tile_format(data)
    return found if found in (TileFormat.PNG, TileFormat.JPEG) else None


def _neither(tile: Tile, data: bytes) -> str:
    """Why a mixed source's tile is neither PNG nor JPEG."""
    try:
        mixed_tile_format(data, tile)
    except InvalidTileDataError as exc:
        return str(exc)
    return f"tile {tile.z}/{tile.x}/{tile.y} is neither PNG nor JPEG"  # not reached


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


def _opaque_by_header(data: bytes) -> bool:
    """Whether ``data``'s headers alone say every pixel is opaque: a JPEG, or a PNG with no alpha
    channel (greyscale, RGB or palette) and no ``tRNS`` chunk before its image data. False when
    they do not tell (an RGBA PNG may still be opaque: :func:`merge_tiles` decodes it to find
    out)."""
    if data.startswith(_JPEG_SIGNATURE):
        return True
    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        return False
    # colour types 0 (grey), 2 (RGB) and 3 (palette) have no alpha channel: only tRNS adds one
    if data[25] not in (0, 2, 3):
        return False
    offset = 8
    while offset + 8 <= len(data):  # chunk headers only: length, type
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        if kind == b"tRNS":
            return False
        if kind == b"IDAT":
            return True
        offset += 12 + length
    return False


def _format_problem(tile: Tile, data: bytes, tile_format: TileFormat) -> str | None:
    """Why ``data`` is not a tile of ``tile_format`` by its magic bytes; None when it is one."""
    name = f"tile {tile.z}/{tile.x}/{tile.y}"
    if not data:
        return f"{name} is empty: zero bytes"
    found, _ = detect_tile_format(data)
    if found is tile_format:
        return None
    what = "neither PNG, JPEG nor WebP" if found is TileFormat.MVT else found.value
    return f"{name} should be {tile_format.value} but its bytes are {what}"


def _batched(tiles: Iterator[tuple[Tile, bytes]]) -> Iterator[list[tuple[Tile, bytes]]]:
    while batch := list(itertools.islice(tiles, IMPORT_BATCH)):
        yield batch


class _Tally(TileTally):
    """Counts of an import, and the failed tiles."""

    def __init__(self) -> None:
        super().__init__()
        self.new = self.merged = self.overwritten = 0
        self.left_out = self.clipped = self.changed = self.skipped = 0

    def result(self) -> ImportResult:
        return ImportResult(
            read=self.read,
            new=self.new,
            merged=self.merged,
            overwritten=self.overwritten,
            left_out=self.left_out,
            clipped=self.clipped,
            changed=self.changed,
            failures=self.failures,
            failed=tuple(self.failed),
            skipped=self.skipped,
        )
