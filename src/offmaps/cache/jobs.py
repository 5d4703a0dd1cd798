"""Seeding, cleaning, exporting and importing caches as jobs: payloads any process can run,
with progress and cancel.

A seed of a country at z15 runs for hours, so it is a job of the process's runner (the same
machinery as offline map generation): the HTTP API, GraphQL and ``offmaps cache seed --server``
submit it and follow it; ``offmaps cache seed --data`` runs the same work in the foreground.

An export through the server ("copy data from server", for clients that cannot reach the
cache's storage) writes its container in the job's scratch folder and moves each of its files
into the job's output area, where it is downloaded with ranges (resumable) until the job is
removed, ``job_keep_s`` after it ended. An import reads a tile archive the user uploaded first
(resumable, hash-checked: ``PUT /api/cache-archives/{sha256}``), kept in the server's object
store under ``cache-archives/<sha256>`` until the import of it succeeds.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from offmaps.cache.seed import SeedProgress
from offmaps.cache.service import TileCacheService
from offmaps.containers.registry import ContainerKind, Location, open_reader
from offmaps.errors import CacheError
from offmaps.jobs import JobContext, JobKind
from offmaps.storage import ObjectStore
from offmaps.tiling import Area
from offmaps.types import ZoomRange

if TYPE_CHECKING:
    from offmaps.cache.imports import ImportResult
    from offmaps.containers.export import ExportResult, FailedTile

__all__ = [
    "ARCHIVE_KINDS",
    "CLEAN_TILE_CACHE",
    "EXPORT_TILE_CACHE",
    "IMPORT_TILE_CACHE",
    "SEED_TILE_CACHE",
    "CleanCache",
    "CleanSteps",
    "ExportCache",
    "ExportSteps",
    "ImportCache",
    "ImportSteps",
    "OptionalLevels",
    "SeedArea",
    "SeedCache",
    "clean_cache",
    "clean_cache_kind",
    "export_cache",
    "export_cache_kind",
    "export_document",
    "failed_tiles",
    "import_cache",
    "import_cache_kind",
    "import_document",
    "parse_colour",
    "seed_cache",
    "seed_cache_kind",
]

SEED_TILE_CACHE = "seed_tile_cache"
"""The name of the seed job kind."""
CLEAN_TILE_CACHE = "clean_tile_cache"
"""The name of the cleanup job kind."""
EXPORT_TILE_CACHE = "export_tile_cache"
"""The name of the export job kind."""
IMPORT_TILE_CACHE = "import_tile_cache"
"""The name of the import job kind."""
ArchiveFormat = Literal["mbtiles", "gpkg", "pmtiles"]
ARCHIVE_KINDS = tuple(ContainerKind(value) for value in get_args(ArchiveFormat))
"""The containers an import through the server takes: the single-file ones (a folder cache is
converted into one first, with ``offmaps tiles convert``)."""
_CHUNK = 1024 * 1024


def parse_colour(text: str) -> tuple[int, int, int]:
    """``#RRGGBB`` or ``R,G,B`` (0-255 each) as an RGB triple.

    Raises:
        ValueError: anything else.
    """
    raw = text.strip()
    if len(raw.lstrip("#")) == 6 and all(c in "0123456789abcdefABCDEF" for c in raw.lstrip("#")):
        value = int(raw.lstrip("#"), 16)
        return (value >> 16) & 255, (value >> 8) & 255, value & 255
    parts = raw.split(",")
    if len(parts) == 3 and all(p.strip().isdigit() and int(p) <= 255 for p in parts):
        return int(parts[0]), int(parts[1]), int(parts[2])
    raise ValueError(f"a colour is #RRGGBB or R,G,B (0-255 each), not {text[:32]!r}")


class SeedArea(BaseModel):
    """An area and levels to seed.

    Attributes:
        area: the area (GeoJSON in CRS84; crossing the antimeridian allowed).
        min_zoom: the lowest level.
        max_zoom: the highest level.
        refresh_before: refetch stored tiles the source last gave before this time; by default
            every stored tile is kept (a rerun fetches nothing it has).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    area: Area
    min_zoom: int = Field(ge=0, le=30)
    max_zoom: int = Field(ge=0, le=30)
    refresh_before: datetime | None = None

    @model_validator(mode="after")
    def _check(self) -> SeedArea:
        if self.min_zoom > self.max_zoom:
            raise ValueError(f"zoom range {self.min_zoom}-{self.max_zoom} is inverted")
        if self.refresh_before is not None and self.refresh_before.tzinfo is None:
            raise ValueError("refresh_before needs a time zone (e.g. 2026-12-01T00:00:00Z)")
        return self

    @property
    def zooms(self) -> ZoomRange:
        """The levels."""
        return ZoomRange(self.min_zoom, self.max_zoom)


class SeedCache(SeedArea):
    """A seed job's payload: an area and levels of a cache.

    Attributes:
        cache: the cache's name.
    """

    cache: str = Field(min_length=1, max_length=64)


class OptionalLevels(BaseModel):
    """Levels that may be given, as ``min_zoom`` and ``max_zoom`` both, or neither.

    Attributes:
        min_zoom: the lowest level.
        max_zoom: the highest level.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_zoom: int | None = Field(default=None, ge=0, le=30)
    max_zoom: int | None = Field(default=None, ge=0, le=30)

    @model_validator(mode="after")
    def _check_levels(self) -> Self:
        if (self.min_zoom is None) != (self.max_zoom is None):
            raise ValueError("give both min_zoom and max_zoom, or neither")
        zooms = self.zooms
        if zooms is not None and zooms.min > zooms.max:
            raise ValueError(f"zoom range {self.min_zoom}-{self.max_zoom} is inverted")
        return self

    @property
    def zooms(self) -> ZoomRange | None:
        """The levels, if given."""
        if self.min_zoom is None or self.max_zoom is None:
            return None
        return ZoomRange(self.min_zoom, self.max_zoom)


class CleanSteps(OptionalLevels):
    """What to clean, in this order: truncate an area or levels, drop old tiles, trim to a byte
    quota by least recent use, then collect orphan blobs.

    Attributes:
        area: truncate the tiles inside this area (with ``min_zoom``/``max_zoom``: those levels).
        min_zoom: lowest level to truncate (with ``max_zoom``; without an area: whole levels).
        max_zoom: highest level to truncate.
        older_than: remove tiles stored before this time.
        max_bytes: remove least recently used tiles until the cache's take at most this.
        gc: then delete the blobs no cache names any more.
    """

    area: Area | None = None
    older_than: datetime | None = None
    max_bytes: int | None = Field(default=None, ge=0)
    gc: bool = False

    @model_validator(mode="after")
    def _check(self) -> CleanSteps:
        if self.older_than is not None and self.older_than.tzinfo is None:
            raise ValueError("older_than needs a time zone (e.g. 2026-12-01T00:00:00Z)")
        if not (self.cleans_cache or self.gc):
            raise ValueError("nothing to clean: give an area, levels, older_than, max_bytes or gc")
        return self

    @property
    def cleans_cache(self) -> bool:
        """Whether a step other than ``gc`` is asked, which needs a cache."""
        truncates = self.area is not None or self.min_zoom is not None
        return truncates or self.older_than is not None or self.max_bytes is not None


class CleanCache(CleanSteps):
    """A cleanup job's payload.

    Attributes:
        cache: the cache's name (None: only ``gc``, over the whole store).
    """

    cache: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _check_cache(self) -> CleanCache:
        if self.cache is None and self.cleans_cache:
            raise ValueError("truncating or cleaning needs the cache's name")
        return self


class _Clipping(BaseModel):
    """What export and import share: the colour of JPEG pixels outside the area."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    background: str = Field(
        default="#ffffff", pattern=r"^(#?[0-9a-fA-F]{6}|\d{1,3},\d{1,3},\d{1,3})$"
    )

    @field_validator("background")
    @classmethod
    def _check_background(cls, value: str) -> str:
        parse_colour(value)
        return value


class ExportSteps(SeedArea, _Clipping):
    """What to export of a cache: an area and levels, into which container.

    Attributes:
        format: the container written (``mbtiles``, ``gpkg``, ``pmtiles``, ``esri-compact``,
            ``esri-exploded``, ``xyz``, ``tms``).
        background: the colour of JPEG pixels outside the area (``#RRGGBB``).
    """

    format: ContainerKind = ContainerKind.MBTILES


class ExportCache(ExportSteps):
    """An export job's payload.

    Attributes:
        cache: the cache's name.
        max_tiles: the cache's limit of tiles per export (from its definition).
    """

    cache: str = Field(min_length=1, max_length=64)
    max_tiles: int = Field(ge=1)


class ImportSteps(OptionalLevels, _Clipping):
    """What to import into a cache: an uploaded tile archive, limited to an area and levels.

    Attributes:
        archive: the SHA-256 of the uploaded archive (``PUT /api/cache-archives/{sha256}``).
        archive_format: its container (``mbtiles``, ``gpkg`` or ``pmtiles``).
        area: import only this area (GeoJSON in CRS84), tiles cut by its boundary clipped.
        min_zoom: the lowest level imported (with ``max_zoom``; default: the levels the
            archive and the cache share).
        max_zoom: the highest level imported.
        overwrite: replace the cache's tiles rather than merge over them.
    """

    archive: str = Field(pattern=r"^[0-9a-f]{64}$")
    archive_format: ArchiveFormat = "mbtiles"
    area: Area | None = None
    overwrite: bool = False


class ImportCache(ImportSteps):
    """An import job's payload.

    Attributes:
        cache: the receiving cache's name.
    """

    cache: str = Field(min_length=1, max_length=64)


def seed_cache(
    service: TileCacheService, payload: SeedCache, context: JobContext
) -> dict[str, Any]:
    """Run a seed as a job: progress after each chunk, cancel between chunks."""

    def report(state: SeedProgress) -> None:
        context.progress(state.fraction, state.message())

    done = service.seed(
        payload.cache,
        payload.area.aoi(),
        payload.zooms,
        refresh_before=payload.refresh_before,
        progress=report,
        cancelled=context.cancelled,
    )
    return done.as_dict()


def clean_cache(
    service: TileCacheService, payload: CleanCache, context: JobContext
) -> dict[str, Any]:
    """Run a cleanup as a job (see :class:`CleanCache` for the order of its steps)."""
    result: dict[str, Any] = {}
    name = payload.cache
    if name is not None:
        result["removed_tiles"] = 0
        if payload.area is not None or payload.zooms is not None:
            context.progress(0.1, f"truncating {name!r}")
            aoi = payload.area.aoi() if payload.area is not None else None
            result["removed_tiles"] += service.truncate(name, aoi, payload.zooms)
        if payload.older_than is not None or payload.max_bytes is not None:
            context.progress(0.4, f"removing old or least recently used tiles of {name!r}")
            result["removed_tiles"] += service.cleanup(
                name, older_than=payload.older_than, max_bytes=payload.max_bytes
            )
    if payload.gc:
        context.check_cancelled()
        context.progress(0.7, "collecting blobs no cache names")
        collected = service.gc(
            lambda examined: context.progress(0.7, f"collecting: {examined:,} blobs examined")
        )
        result["examined_blobs"] = collected.examined
        result["deleted_blobs"] = collected.deleted
    return result


def _counter(context: JobContext, total: int, verb: str) -> Callable[[int], None]:
    """A progress callback of the containers (tiles handled since the last call) reporting
    to ``context`` up to 0.95, and stopping the work when the job is cancelled."""
    done = [0]

    def advance(tiles: int) -> None:
        context.check_cancelled()
        done[0] += tiles
        context.progress(0.95 * min(done[0] / max(total, 1), 1.0), f"{done[0]:,} tiles {verb}")

    return advance


def failed_tiles(failures: Iterable[FailedTile]) -> list[dict[str, Any]]:
    """Tiles left out, as JSON: ``{"tile": [z, x, y], "error"}``."""
    return [{"tile": [f.tile.z, f.tile.x, f.tile.y], "error": f.error} for f in failures]


def export_cache(
    service: TileCacheService, payload: ExportCache, context: JobContext
) -> dict[str, Any]:
    """Export an area of a cache into a container in the job's output area.

    The result lists the container's files (``path``, ``size``, ``sha256``: an archive is one
    file, a folder container many, below a folder named after the cache) and the counts of
    :class:`~offmaps.containers.export.ExportResult`.
    """
    # Pillow and rasterio (the raster extra) load with the first export, not with the server
    from offmaps.cache.export import CacheTileReader  # noqa: PLC0415
    from offmaps.containers.export import (  # noqa: PLC0415
        check_tile_limit,
        export_tiles,
        plan_export,
    )

    reader = CacheTileReader(service.index, service.blobs, payload.cache)
    plan = plan_export(reader, aoi=payload.area.aoi(), zooms=payload.zooms)
    check_tile_limit(plan, payload.max_tiles)
    kind = payload.format
    name = payload.cache + kind.suffix
    target = context.scratch / "export"
    target.mkdir()
    context.progress(0.0, f"exporting {plan.tiles:,} tiles of {payload.cache!r} to {kind}")
    result = export_tiles(
        reader,
        Location(kind, target / name),
        plan,
        background=parse_colour(payload.background),
        max_tiles=payload.max_tiles,
        progress=_counter(context, plan.tiles, "exported"),
    )
    files = _publish(context, target)
    return {
        "format": kind.value,
        "files": files,
        **export_document(plan.tiles, result, reader.problems),
    }


def export_document(
    tiles: int, result: ExportResult, skipped: Iterable[FailedTile] = ()
) -> dict[str, Any]:
    """An export's counts as JSON (a job's result, ``offmaps cache export --json``): ``tiles``
    the plan covered; ``skipped``, the stored tiles a cache's reader left out (missing or
    damaged blobs), count as failures; ``tile_format``, what the destination holds (``mixed``,
    ``png``...), and ``reencoded``, the JPEG tiles of a mixed source written as PNG into a
    container of one format."""
    skipped = list(skipped)
    return {
        "tiles": tiles,
        "tile_format": result.tile_format,
        "reencoded": result.reencoded,
        "read": result.read,
        "written": result.written,
        "copied": result.copied,
        "clipped": result.clipped,
        "left_out": result.left_out,
        "failures": result.failures + len(skipped),
        "failed": failed_tiles([*skipped, *result.failed]),
    }


def _publish(context: JobContext, folder: Path) -> list[dict[str, Any]]:
    """Move every file below ``folder`` into the job's output area; their entries."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    entries = []
    for number, path in enumerate(paths):
        context.check_cancelled()
        relative = path.relative_to(folder).as_posix()
        context.progress(0.95 + 0.05 * number / len(paths), f"publishing {relative}")
        with path.open("rb") as data:
            digest = hashlib.file_digest(data, "sha256").hexdigest()
        size = path.stat().st_size
        context.output.put_file(relative, path)
        entries.append({"path": relative, "size": size, "sha256": digest})
    return entries


def import_cache(
    service: TileCacheService,
    archives: ObjectStore,
    payload: ImportCache,
    context: JobContext,
) -> dict[str, Any]:
    """Import an uploaded tile archive into a cache (merged, or overwriting with
    ``overwrite``); the archive is removed once the import succeeded.

    Raises:
        CacheError: the archive is not (or no longer) on the server.
    """
    # Pillow and rasterio (the raster extra) load with the first import, not with the server
    from offmaps.cache.imports import import_tiles  # noqa: PLC0415
    from offmaps.containers.export import plan_export  # noqa: PLC0415

    service.definition(payload.cache)
    if not archives.exists(payload.archive):
        raise CacheError(
            f"no uploaded archive {payload.archive} on the server: upload it first "
            "(PUT /api/cache-archives/{sha256})"
        )
    kind = ContainerKind(payload.archive_format)
    local = context.scratch / f"source{kind.suffix}"
    context.progress(0.0, "reading the uploaded archive")
    with archives.open(payload.archive) as source, local.open("wb") as copy:
        shutil.copyfileobj(source, copy, _CHUNK)
    aoi = payload.area.aoi() if payload.area is not None else None
    with open_reader(Location(kind, local)) as reader:
        total = plan_export(reader, aoi=aoi, zooms=payload.zooms).tiles
        result = import_tiles(
            service.index,
            service.blobs,
            payload.cache,
            reader,
            aoi=aoi,
            zooms=payload.zooms,
            overwrite=payload.overwrite,
            background=parse_colour(payload.background),
            progress=_counter(context, total, "imported"),
            # the archive is copied into a new scratch folder by each job: its hash names it
            source_id=payload.archive,
        )
    archives.delete(payload.archive)
    return import_document(payload.cache, result)


def import_document(cache: str, result: ImportResult) -> dict[str, Any]:
    """An import's result as JSON (a job's result, ``offmaps cache import --json``)."""
    return {
        "cache": cache,
        "read": result.read,
        "imported": result.imported,
        "new": result.new,
        "merged": result.merged,
        "overwritten": result.overwritten,
        "left_out": result.left_out,
        "clipped": result.clipped,
        "changed": result.changed,
        "skipped": result.skipped,
        "failures": result.failures,
        "failed": failed_tiles(result.failed),
    }


def seed_cache_kind(service: TileCacheService) -> JobKind[SeedCache]:
    """The seed job kind, bound to a process's cache service."""
    return JobKind(SEED_TILE_CACHE, SeedCache, partial(seed_cache, service))


def clean_cache_kind(service: TileCacheService) -> JobKind[CleanCache]:
    """The cleanup job kind, bound to a process's cache service."""
    return JobKind(CLEAN_TILE_CACHE, CleanCache, partial(clean_cache, service))


def export_cache_kind(service: TileCacheService) -> JobKind[ExportCache]:
    """The export job kind, bound to a process's cache service."""
    return JobKind(EXPORT_TILE_CACHE, ExportCache, partial(export_cache, service))


def import_cache_kind(service: TileCacheService, archives: ObjectStore) -> JobKind[ImportCache]:
    """The import job kind, bound to a process's cache service and the store of uploaded
    archives."""
    return JobKind(IMPORT_TILE_CACHE, ImportCache, partial(import_cache, service, archives))
