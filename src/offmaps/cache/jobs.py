"""Seeding and cleaning caches as jobs: payloads any process can run, with progress and cancel.

A seed of a country at z15 runs for hours, so it is a job of the process's runner (the same
machinery as offline map generation): the HTTP API, GraphQL and ``offmaps cache seed --server``
submit it and follow it; ``offmaps cache seed --data`` runs the same work in the foreground.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from offmaps.cache.seed import SeedProgress
from offmaps.cache.service import TileCacheService
from offmaps.jobs import JobContext, JobKind
from offmaps.tiling import Area
from offmaps.types import ZoomRange

__all__ = [
    "CLEAN_TILE_CACHE",
    "SEED_TILE_CACHE",
    "CleanCache",
    "CleanSteps",
    "SeedArea",
    "SeedCache",
    "clean_cache",
    "clean_cache_kind",
    "seed_cache",
    "seed_cache_kind",
]

SEED_TILE_CACHE = "seed_tile_cache"
"""The name of the seed job kind."""
CLEAN_TILE_CACHE = "clean_tile_cache"
"""The name of the cleanup job kind."""


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


class CleanSteps(BaseModel):
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

    model_config = ConfigDict(extra="forbid", frozen=True)

    area: Area | None = None
    min_zoom: int | None = Field(default=None, ge=0, le=30)
    max_zoom: int | None = Field(default=None, ge=0, le=30)
    older_than: datetime | None = None
    max_bytes: int | None = Field(default=None, ge=0)
    gc: bool = False

    @model_validator(mode="after")
    def _check(self) -> CleanSteps:
        if (self.min_zoom is None) != (self.max_zoom is None):
            raise ValueError("give both min_zoom and max_zoom, or neither")
        zooms = self.zooms
        if zooms is not None and zooms.min > zooms.max:
            raise ValueError(f"zoom range {self.min_zoom}-{self.max_zoom} is inverted")
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

    @property
    def zooms(self) -> ZoomRange | None:
        """The levels to truncate, if given."""
        if self.min_zoom is None or self.max_zoom is None:
            return None
        return ZoomRange(self.min_zoom, self.max_zoom)


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


def seed_cache_kind(service: TileCacheService) -> JobKind[SeedCache]:
    """The seed job kind, bound to a process's cache service."""
    return JobKind(SEED_TILE_CACHE, SeedCache, partial(seed_cache, service))


def clean_cache_kind(service: TileCacheService) -> JobKind[CleanCache]:
    """The cleanup job kind, bound to a process's cache service."""
    return JobKind(CLEAN_TILE_CACHE, CleanCache, partial(clean_cache, service))
