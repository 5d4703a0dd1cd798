"""Export of tiles to a new container, clipped to an area of interest (``offmaps cache export``).

The source is any :class:`~offmaps.containers.TileReader` (an archive or folder the containers
read); the destination any container kind, so converting between storage formats (Esri exploded
and compact, MBTiles, GeoPackage, PMTiles, XYZ and TMS folders) is part of an export, and the
tiling-scheme files travel with the tiles as the writers write them (``tilematrixset.json`` beside
folders, ``conf.xml`` and ``conf.cdi`` beside Esri caches).

With an area of interest, each tile of its exact tile cover that the source holds is

* copied byte for byte when wholly inside the area (never decoded nor re-encoded; only its magic
  bytes are checked against the tile set's format);
* clipped with :class:`~offmaps.containers.clip.AreaClipper` when the area's boundary cuts it:
  pixels whose centre is outside made transparent (PNG, WebP) or filled with the background
  colour (JPEG), and re-encoded in the source's format;
* left out when wholly outside (or when no pixel centre of a cut tile is inside).

Vector tiles have no pixels: every tile of the cover is copied whole.

A mixed source (PNG and JPEG tiles: a mixed cache, an Esri cache whose ``conf.xml`` says
``MIXED``) is checked tile by tile against PNG and JPEG, and its cut tiles are clipped to
transparency as PNG (see :class:`~offmaps.containers.merge.MixedExport`). A folder destination
stays mixed (an Esri cache's ``conf.xml`` says ``MIXED``); into MBTiles, GeoPackage or PMTiles,
which declare one format, it becomes PNG: its JPEG tiles are re-encoded as PNG
(:attr:`ExportResult.reencoded`).

Planning comes first (:func:`plan_export`): the exact count of the tiles the export covers,
checked against a per-export limit (:data:`DEFAULT_EXPORT_TILE_LIMIT`, as ArcGIS's "limit export
cache") before any file is created. A tile whose bytes are not a valid image of the tile set's
format is left out and listed with its key in :attr:`ExportResult.failed`; the export goes on.

Decoding and encoding cut tiles is the costly part (a few tenths of a millisecond per tile,
against microseconds for a tile copied), so cut tiles are gathered into tasks of
:data:`CUT_TILES_PER_TASK` (their area rasterised together) and clipped in worker processes
(``processes``, one per CPU by default), with at most :data:`TASKS_PER_PROCESS` tasks per worker
and :data:`IN_FLIGHT_BYTES` in flight so that memory stays bounded; the exporting process reads,
classifies and writes. A process running one thread (the CLI) forks its workers at once, which
then load nothing again; one that may run threads (a server) is never forked: its workers come
from a fork server, started once the export has met more than :data:`INLINE_CUT_TILES` cut tiles
(clipped here until then).

The destination is written atomically by the containers' writers: it appears only once the
export has finished, and a failure leaves nothing.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace

import shapely
from morecantile import TileMatrixSet
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from offmaps.containers.base import (
    TileReader,
    TilesetMetadata,
    TileWriter,
    detect_tile_format,
)
from offmaps.containers.clip import DEFAULT_BACKGROUND, AreaClipper, TileRelation
from offmaps.containers.convert import subset_metadata
from offmaps.containers.merge import MixedExport
from offmaps.containers.registry import Location, open_writer, parse_location
from offmaps.errors import (
    ContainerError,
    InvalidAOIError,
    InvalidTileDataError,
    InvalidZoomError,
    TileLimitError,
)
from offmaps.processes import worker_context
from offmaps.tiling import AreaOfInterest, TileCover, check_zooms, tile_cover
from offmaps.types import Tile, TileFormat, ZoomRange

__all__ = [
    "DEFAULT_EXPORT_TILE_LIMIT",
    "CUT_TILES_PER_TASK",
    "INLINE_CUT_TILES",
    "IN_FLIGHT_BYTES",
    "MAX_LISTED_FAILURES",
    "TASKS_PER_PROCESS",
    "ExportPlan",
    "ExportResult",
    "FailedTile",
    "ProgressCallback",
    "TileTally",
    "check_tile_limit",
    "export_tiles",
    "plan_export",
]

DEFAULT_EXPORT_TILE_LIMIT = 100_000
"""The most tiles one export may cover unless told otherwise (ArcGIS's default)."""
INLINE_CUT_TILES = 256
"""Cut tiles clipped in this process before worker processes are started for the rest, when
they would come from a fork server (forked ones start at once)."""
CUT_TILES_PER_TASK = 32
"""Cut tiles sent to a worker process at once."""
IN_FLIGHT_BYTES = 64 * 1024 * 1024
"""Bytes of cut tiles sent to workers and not back yet, at most (one task more may go when none
is in flight): with :data:`TASKS_PER_PROCESS`, what bounds the memory of a parallel export
whatever the tiles' size."""
TASKS_PER_PROCESS = 8
"""Tasks in flight per worker process: with :data:`CUT_TILES_PER_TASK`, what bounds the memory
of a parallel export."""
MAX_LISTED_FAILURES = 1000
"""Failed tiles listed in a result (all are counted)."""

ProgressCallback = Callable[[int], None]
"""Called with the number of source tiles handled since the previous call."""

_PROGRESS_STEP = 256
_BATCH = 256  # tiles classified at once


@dataclass(frozen=True)
class ExportPlan:
    """What an export covers, known before any tile is read.

    Attributes:
        zooms: the levels exported.
        tiles: the number of tiles the export covers, which the tile limit is checked against:
            the exact tile cover of the area at those levels; without an area, the tiles the
            source holds (with ``zooms``, the tile cover of the source's bounds at those levels
            when it records them: the most it can hold there).
        aoi: the area tiles are clipped to; None for the whole source.
        cover: the area's tile cover, None without an area.
    """

    zooms: ZoomRange | None
    tiles: int
    aoi: AreaOfInterest | None = None
    cover: TileCover | None = None


@dataclass(frozen=True)
class FailedTile:
    """A source tile left out of an export, with why."""

    tile: Tile
    error: str


@dataclass(frozen=True)
class ExportResult:
    """What an export did.

    Attributes:
        read: tiles read from the source.
        copied: tiles written byte for byte (wholly inside the area, or every pixel centre
            inside, or no area).
        clipped: tiles cut by the area's boundary and written clipped (re-encoded).
        left_out: tiles read but not written: outside the area, or no pixel of theirs inside.
        failures: tiles left out because their bytes are not a valid image of the tile set's
            format.
        failed: the first :data:`MAX_LISTED_FAILURES` of them, with their keys.
        tile_format: the destination's tile format: ``mixed`` (a mixed source into a folder),
            or one format's name (``png``, ``jpg``...).
        reencoded: of the tiles copied, the JPEG tiles of a mixed source re-encoded as PNG
            (the same pixels) for a destination of one format.
    """

    read: int
    copied: int
    clipped: int
    left_out: int
    failures: int
    failed: tuple[FailedTile, ...]
    tile_format: str = ""
    reencoded: int = 0

    @property
    def written(self) -> int:
        """Tiles written to the destination."""
        return self.copied + self.clipped


def plan_export(
    source: TileReader, *, aoi: AreaOfInterest | None = None, zooms: ZoomRange | None = None
) -> ExportPlan:
    """Count the tiles an export of ``source`` covers, before doing any of it.

    Args:
        source: an open reader.
        aoi: clip to this area (any CRS); the whole source when None.
        zooms: only these levels; the source's levels when None.

    Raises:
        InvalidZoomError: zooms outside the source's tile matrix set, or an area given for a
            source that does not record its levels and no ``zooms``.
        InvalidAOIError: an area that does not meet the source's bounds or its tile matrix set.
    """
    meta = source.metadata
    if zooms is not None:
        check_zooms(meta.tms, zooms)
    if aoi is None:
        if zooms is None or meta.bounds is None:
            return ExportPlan(zooms, source.count_tiles())
        whole = AreaOfInterest.from_bbox(*meta.bounds, crs="EPSG:4326")
        return ExportPlan(zooms, tile_cover(whole, meta.tms, zooms).total)
    if meta.bounds is not None:
        _check_touches(aoi, meta.bounds)
    levels = zooms or _source_zooms(meta)
    cover = tile_cover(aoi, meta.tms, levels)
    return ExportPlan(levels, cover.total, aoi, cover)


def _source_zooms(meta: TilesetMetadata) -> ZoomRange:
    if meta.minzoom is None or meta.maxzoom is None:
        raise InvalidZoomError("the source does not record its zoom levels: give the zooms")
    return ZoomRange(meta.minzoom, meta.maxzoom)


def _check_touches(aoi: AreaOfInterest, bounds: tuple[float, float, float, float]) -> None:
    west, south, east, north = bounds
    extent: BaseGeometry = box(west, south, east, north)
    if west > east:  # across the antimeridian
        extent = shapely.union(box(west, south, 180, north), box(-180, south, east, north))
    area = aoi.to_wgs84()
    if not area.intersects(extent) or area.touches(extent):
        raise InvalidAOIError(
            "the area of interest does not meet the source's tiles (lon/lat bounds "
            f"{west:.6g}, {south:.6g}, {east:.6g}, {north:.6g})"
        )


def check_tile_limit(plan: ExportPlan, limit: int = DEFAULT_EXPORT_TILE_LIMIT) -> None:
    """Refuse a plan covering more than ``limit`` tiles.

    Raises:
        TileLimitError: naming both counts.
    """
    if plan.tiles > limit:
        raise TileLimitError(
            f"the export covers {plan.tiles:,} tiles, more than the limit of {limit:,} per "
            "export: export a smaller area or fewer levels, or raise the limit",
            tiles=plan.tiles,
            limit=limit,
        )


def export_tiles(
    source: TileReader,
    destination: Location | str,
    plan: ExportPlan | None = None,
    *,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    max_tiles: int = DEFAULT_EXPORT_TILE_LIMIT,
    overwrite: bool = False,
    processes: int | None = None,
    progress: ProgressCallback | None = None,
) -> ExportResult:
    """Export the tiles of ``plan`` from ``source`` into a new container at ``destination``.

    Args:
        source: an open reader.
        destination: where to write; the kind is told by suffix or ``kind:`` prefix.
        plan: from :func:`plan_export` (the whole source when None).
        background: the RGB colour of JPEG pixels outside the area.
        max_tiles: refuse exports covering more tiles than this.
        overwrite: replace an existing destination (else it is refused before any work).
        processes: the most worker processes clipping cut tiles (default: one per CPU; 1 or
            less: all in this process).
        progress: called as tiles are handled, for progress bars (at most ``plan.tiles`` in
            all).

    Raises:
        TileLimitError: the plan covers more than ``max_tiles`` tiles (nothing is read
            nor created).
        ContainerError: the source holds no tile to export (nothing is created); subclasses
            for unreadable sources and unwritable destinations.
    """
    if plan is None:
        plan = plan_export(source)
    check_tile_limit(plan, max_tiles)
    meta = source.metadata
    target = subset_metadata(meta, plan.zooms, plan.aoi)
    mixed: MixedExport | None = None
    if meta.mixed:  # a folder keeps it mixed; an archive of one format gets PNG
        kind = (
            destination if isinstance(destination, Location) else parse_location(destination)
        ).kind
        mixed = MixedExport(kind.holds_mixed)
        target = target if mixed.keep else replace(target, mixed=False)
    workers = max(1, processes if processes is not None else (os.cpu_count() or 1))
    tally = _Tally(target.format_name)
    with open_writer(destination, target, overwrite=overwrite) as writer:
        clips: _Clips | None = None
        if plan.aoi is not None and meta.tile_format.is_raster:
            clipper = AreaClipper(plan.aoi, meta.tms, background=background)
            clips = _Clips(clipper, plan.aoi, meta, background, workers, mixed)
        try:
            for batch in _batched(_tiles(source, plan)):
                tally.read += len(batch)
                if clips is None:
                    raster = meta.tile_format.is_raster
                    for tile, data in batch:
                        if mixed is not None:
                            _write(writer, tile, _copy_mixed(mixed, tile, data), tally)
                            continue
                        problem = _format_problem(tile, data, meta.tile_format) if raster else None
                        if problem is not None:  # never a tile of another format under its name
                            tally.fail(tile, problem)
                            continue
                        writer.write_tile(tile, data)
                        tally.copied += 1
                else:
                    for done, clipped in clips.add(batch):
                        _write(writer, done, clipped, tally)
                tally.step(progress)
            if clips is not None:
                for done, clipped in clips.drain():
                    _write(writer, done, clipped, tally)
        finally:
            if clips is not None:
                clips.close()
        tally.step(progress, force=True)
        if tally.copied + tally.clipped == 0:
            raise ContainerError(_nothing(plan, meta, tally))
    return tally.result()


def _nothing(plan: ExportPlan, meta: TilesetMetadata, tally: _Tally) -> str:
    """Why an export wrote no tile."""
    zooms = plan.zooms or ZoomRange(meta.minzoom or 0, meta.maxzoom or 0)
    where = f"{' in the area' if plan.aoi is not None else ''} at levels {zooms.min}-{zooms.max}"
    if tally.read == 0:
        return f"nothing to export: the source holds no tiles{where}"
    first = f" (first: {tally.failed[0].error})" if tally.failed else ""
    return (
        f"nothing to export: of the {tally.read:,} tiles the source holds{where}, "
        f"{tally.failures:,} are not valid images{first} and {tally.left_out:,} have no pixel "
        "inside the area"
    )


def _tiles(source: TileReader, plan: ExportPlan) -> Iterator[tuple[Tile, bytes]]:
    if plan.cover is not None:
        return source.iter_cover(plan.cover)
    return source.iter_tiles(plan.zooms.levels() if plan.zooms is not None else None)


def _batched(tiles: Iterator[tuple[Tile, bytes]]) -> Iterator[list[tuple[Tile, bytes]]]:
    while batch := list(itertools.islice(tiles, _BATCH)):
        yield batch


class TileTally:
    """Source tiles read so far, the failed ones (all counted, the first
    :data:`MAX_LISTED_FAILURES` listed), and progress reported every 256 tiles read: what an
    export and an import count alike."""

    def __init__(self) -> None:
        self.read = self.failures = 0
        self.failed: list[FailedTile] = []
        self._reported = 0

    def fail(self, tile: Tile, error: str) -> None:
        """Count a failed tile, and list it while the list is short."""
        self.failures += 1
        if len(self.failed) < MAX_LISTED_FAILURES:
            self.failed.append(FailedTile(tile, error))

    def step(self, progress: ProgressCallback | None, *, force: bool = False) -> None:
        """Tell ``progress`` of the tiles read since it was last told (every 256, or now)."""
        pending = self.read - self._reported
        if progress is not None and pending and (force or pending >= _PROGRESS_STEP):
            progress(pending)
            self._reported = self.read


class _Tally(TileTally):
    """Counts of an export, and the failed tiles."""

    def __init__(self, tile_format: str = "") -> None:
        super().__init__()
        self.copied = self.clipped = self.left_out = self.reencoded = 0
        self.tile_format = tile_format

    def result(self) -> ExportResult:
        return ExportResult(
            read=self.read,
            copied=self.copied,
            clipped=self.clipped,
            left_out=self.left_out,
            failures=self.failures,
            failed=tuple(self.failed),
            tile_format=self.tile_format,
            reencoded=self.reencoded,
        )


@dataclass(frozen=True)
class _Clipped:
    """What became of one tile: its new bytes (None: left out) or why it failed."""

    relation: TileRelation
    data: bytes | None = None
    error: str | None = None
    reencoded: bool = False


def _write(writer: TileWriter, tile: Tile, clipped: _Clipped, tally: _Tally) -> None:
    if clipped.error is not None:
        tally.fail(tile, clipped.error)
    elif clipped.data is None:
        tally.left_out += 1
    else:
        writer.write_tile(tile, clipped.data)
        if clipped.relation is TileRelation.INSIDE:
            tally.copied += 1
            tally.reencoded += clipped.reencoded
        else:
            tally.clipped += 1


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


def _copy_mixed(mixed: MixedExport, tile: Tile, data: bytes) -> _Clipped:
    """A mixed source's tile wholly inside: its bytes, or re-encoded as PNG (see
    :class:`MixedExport`), an invalid one becoming a failure."""
    try:
        written = mixed.copy(tile, data)
    except InvalidTileDataError as exc:
        return _Clipped(TileRelation.INSIDE, error=str(exc))
    return _Clipped(TileRelation.INSIDE, written, reencoded=written is not data)


def _clip(
    clipper: AreaClipper,
    task: list[tuple[Tile, bytes]],
    tile_format: TileFormat,
    mixed: MixedExport | None = None,
) -> list[_Clipped]:
    """Clip tiles cut by the area's boundary (the batch's classification said so), together
    (a mixed source's one by one); an invalid one becomes a failure rather than an error."""
    outcomes = (
        clipper.clip_cuts(task, tile_format)
        if mixed is None
        else [_clip_mixed(mixed, clipper, tile, data) for tile, data in task]
    )
    found = []
    for (tile, data), clipped in zip(task, outcomes, strict=True):
        if isinstance(clipped, InvalidTileDataError):
            found.append(_Clipped(TileRelation.CUT, error=str(clipped)))
        elif clipped is not None and (clipped is data or clipped == data):
            # every pixel centre inside: its bytes are kept
            found.append(
                _Clipped(TileRelation.INSIDE, clipped)
                if mixed is None
                else _copy_mixed(mixed, tile, data)
            )
        else:
            found.append(_Clipped(TileRelation.CUT, clipped))
    return found


def _clip_mixed(
    mixed: MixedExport, clipper: AreaClipper, tile: Tile, data: bytes
) -> bytes | InvalidTileDataError | None:
    try:
        return mixed.clip(clipper, tile, data)
    except InvalidTileDataError as exc:
        return exc


class _Clips:
    """Tiles through the clipper: tiles inside or outside the area here; cut ones gathered
    into tasks of :data:`CUT_TILES_PER_TASK` and clipped in worker processes (at most
    :data:`TASKS_PER_PROCESS` tasks each in hand), or here: with one process, and while fewer
    than :data:`INLINE_CUT_TILES` were met when the workers would come from a fork server. This
    process reads, classifies and writes every tile: with workers, it clips none itself."""

    def __init__(
        self,
        clipper: AreaClipper,
        aoi: AreaOfInterest,
        meta: TilesetMetadata,
        background: tuple[int, int, int],
        workers: int,
        mixed: MixedExport | None = None,
    ) -> None:
        self.clipper = clipper
        self.tile_format = meta.tile_format
        self.mixed = mixed
        self.work = (aoi, meta.tms, background, meta.tile_format, mixed)
        self.workers = workers
        self.cuts = 0
        self.pending: list[tuple[Tile, bytes]] = []
        self.pool: ProcessPoolExecutor | None = None
        self.running: dict[Future[list[_Clipped]], list[Tile]] = {}
        self.sizes: dict[Future[list[_Clipped]], int] = {}  # the bytes each task sent

    def add(self, batch: Sequence[tuple[Tile, bytes]]) -> Iterator[tuple[Tile, _Clipped]]:
        """Clip a batch of tiles; yields the tiles done meanwhile (of this batch or earlier)."""
        relations = self.clipper.relations([tile for tile, _ in batch])
        for (tile, data), relation in zip(batch, relations, strict=True):
            if relation is TileRelation.OUTSIDE:
                yield tile, _Clipped(relation)
            elif relation is TileRelation.INSIDE and self.mixed is not None:
                yield tile, _copy_mixed(self.mixed, tile, data)
            elif relation is TileRelation.INSIDE:
                problem = _format_problem(tile, data, self.tile_format)
                yield tile, _Clipped(relation, data if problem is None else None, problem)
            else:
                self.pending.append((tile, data))
        while len(self.pending) >= CUT_TILES_PER_TASK:
            task = self.pending[:CUT_TILES_PER_TASK]
            del self.pending[:CUT_TILES_PER_TASK]
            yield from self._cut(task)
        yield from self._collect(block=False)

    def _cut(
        self, task: list[tuple[Tile, bytes]], *, start: bool = True
    ) -> Iterator[tuple[Tile, _Clipped]]:
        pooled = self._pooled() if start else self.pool
        self.cuts += len(task)
        if pooled is None:
            clipped = _clip(self.clipper, task, self.tile_format, self.mixed)
            yield from zip([tile for tile, _ in task], clipped, strict=True)
            return
        while self.running and (
            len(self.running) >= TASKS_PER_PROCESS * self.workers
            or sum(self.sizes.values()) >= IN_FLIGHT_BYTES
        ):
            yield from self._collect(block=True)
        future = pooled.submit(_clip_in_worker, task)
        self.running[future] = [tile for tile, _ in task]
        self.sizes[future] = sum(len(data) for _, data in task)

    def _pooled(self) -> ProcessPoolExecutor | None:
        """The worker processes, started when the export is worth them; None: clip here."""
        if self.pool is None and self.workers > 1:
            context = worker_context([__name__])
            forked = context.get_start_method() == "fork"  # at once: nothing to load again
            if forked or self.cuts >= INLINE_CUT_TILES:
                self.pool = ProcessPoolExecutor(
                    self.workers, mp_context=context, initializer=_start_worker, initargs=self.work
                )
        return self.pool

    def drain(self) -> Iterator[tuple[Tile, _Clipped]]:
        """The tiles still gathered or in the workers, as they finish."""
        if self.pending:  # less than a task: not worth starting workers for
            task, self.pending = self.pending, []
            yield from self._cut(task, start=False)
        while self.running:
            yield from self._collect(block=True)

    def _collect(self, *, block: bool) -> Iterator[tuple[Tile, _Clipped]]:
        if not self.running:
            return
        done, _ = wait(self.running, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for future in done:
            tiles = self.running.pop(future)
            del self.sizes[future]
            try:
                clipped = future.result()
            except BrokenProcessPool:
                raise ContainerError(
                    "the export stopped: a worker process died; nothing was written"
                ) from None
            yield from zip(tiles, clipped, strict=True)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


_worker_clipper: AreaClipper | None = None
_worker_format: TileFormat | None = None
_worker_mixed: MixedExport | None = None


def _start_worker(
    aoi: AreaOfInterest,
    tms: TileMatrixSet,
    background: tuple[int, int, int],
    tile_format: TileFormat,
    mixed: MixedExport | None,
) -> None:
    # the worker projects the area as the exporting process did: the same pixels either way
    global _worker_clipper, _worker_format, _worker_mixed  # noqa: PLW0603 - one per worker
    _worker_clipper = AreaClipper(aoi, tms, background=background)
    _worker_format = tile_format
    _worker_mixed = mixed


def _clip_in_worker(task: list[tuple[Tile, bytes]]) -> list[_Clipped]:
    if _worker_clipper is None or _worker_format is None:
        raise ContainerError("an export worker was not started with its area")
    return _clip(_worker_clipper, task, _worker_format, _worker_mixed)
