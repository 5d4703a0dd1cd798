"""Seeding: fetching the tiles of an area and zoom range into a cache before anyone asks.

A seed walks the exact tile cover of the area level by level, row span by row span, in chunks
of :data:`CHUNK_TILES`: for each chunk it asks the index which tiles are stored already (and
checked since ``refresh_before``), fetches the others with ``concurrency`` requests in flight
(each paced by the source's rate limiter, retried with exponential backoff and jitter), stores
what came while the next chunk is fetched (its blobs put several at once), and reports progress.
Memory stays bounded by two chunks, not the area.

Nothing is refetched on a rerun: the index is the seed's journal, so a seed stopped by a crash,
``kill -9`` or a cancel resumes where it stopped when started again. Fetches that still fail
after their retries count against the failure budget; once it is spent the seed stops with
:class:`~offmaps.errors.SeedFailedError` (what it stored stays), rather than retrying forever.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from offmaps.cache.index import Span, TileIndex
from offmaps.cache.model import UpstreamSettings
from offmaps.cache.tiles import Fetch, TileCache, store_tiles
from offmaps.errors import (
    ContainerError,
    InvalidZoomError,
    JobCancelledError,
    SeedFailedError,
    TileNotFoundError,
)
from offmaps.tiling import DEFAULT_TILE_BYTES, AreaOfInterest, tile_cover
from offmaps.types import Tile, ZoomRange

__all__ = [
    "CHUNK_TILES",
    "RateLimiter",
    "SeedPlan",
    "SeedProgress",
    "plan_seed",
    "seed",
]

CHUNK_TILES = 256
"""Tiles looked up, fetched and stored together."""


class RateLimiter:
    """Paces requests to ``rate`` per second, a burst of one second's worth allowed (token bucket).

    Shared by every seed and read-through fetch of one source in a process. The ``limits``
    library counts requests in windows and says no; a seed must wait instead, which is this.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Wait until a request may start."""
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            time.sleep(wait)


@dataclass(frozen=True, slots=True)
class SeedPlan:
    """What a seed would do: a dry run.

    Attributes:
        cache: the cache's name.
        levels: tiles of the area per level.
        stored: of those, tiles stored (and checked since ``refresh_before``) per level.
        bytes_per_tile: the mean size assumed per level (from the cache's own tiles of the
            level, else :data:`offmaps.tiling.DEFAULT_TILE_BYTES`).
    """

    cache: str
    levels: dict[int, int]
    stored: dict[int, int]
    bytes_per_tile: dict[int, int]

    @property
    def tiles(self) -> int:
        """Tiles of the area."""
        return sum(self.levels.values())

    @property
    def to_fetch(self) -> int:
        """Tiles a seed would fetch."""
        return self.tiles - sum(self.stored.values())

    @property
    def estimated_bytes(self) -> int:
        """Bytes the tiles to fetch would take, before dedup."""
        return sum(
            (count - self.stored.get(z, 0)) * self.bytes_per_tile[z]
            for z, count in self.levels.items()
        )

    def as_dict(self) -> dict[str, Any]:
        """The dry run as JSON (the API's and the CLI's document)."""
        return {
            "cache": self.cache,
            "tiles": self.tiles,
            "stored": sum(self.stored.values()),
            "to_fetch": self.to_fetch,
            "estimated_bytes": self.estimated_bytes,
            "levels": [
                {
                    "z": z,
                    "tiles": count,
                    "stored": self.stored.get(z, 0),
                    "bytes_per_tile": self.bytes_per_tile[z],
                }
                for z, count in sorted(self.levels.items())
            ],
        }


@dataclass(slots=True)
class SeedProgress:
    """Where a seed is: tiles of the area done (stored, skipped or missing), bytes, errors.

    Attributes:
        total: tiles of the area.
        done: tiles dealt with so far.
        skipped: of those, stored already.
        fetched: of those, fetched and stored.
        missing: of those, the source has none of (404).
        errors: fetches that failed after their retries.
        bytes: bytes fetched.
        written: fetched tiles whose bytes were new for them.
        level: the level being seeded.
    """

    total: int
    done: int = 0
    skipped: int = 0
    fetched: int = 0
    missing: int = 0
    errors: int = 0
    bytes: int = 0
    written: int = 0
    level: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        """Share of the area's tiles dealt with."""
        return self.done / self.total if self.total else 1.0

    def as_dict(self) -> dict[str, Any]:
        """The outcome as JSON (a seed job's result, the CLI's document)."""
        found = asdict(self)
        del found["level"]
        return found

    def message(self) -> str:
        """One line for a progress bar or a job's status."""
        return (
            f"level {self.level}: {self.done:,}/{self.total:,} tiles, {self.fetched:,} fetched "
            f"({self.bytes:,} bytes), {self.skipped:,} stored already, {self.missing:,} missing, "
            f"{self.errors:,} errors"
        )


def _spans(cover_rows: Iterator[tuple[int, int, int]], z: int) -> Iterator[list[Span]]:
    """Row spans of a level, cut into chunks of at most CHUNK_TILES tiles."""
    chunk: list[Span] = []
    size = 0
    for y, start, stop in cover_rows:
        x = start
        while x <= stop:
            end = min(stop, x + (CHUNK_TILES - size) - 1)
            chunk.append(Span(z, y, x, end))
            size += end - x + 1
            x = end + 1
            if size >= CHUNK_TILES:
                yield chunk
                chunk, size = [], 0
    if chunk:
        yield chunk


def _level_spans(
    aoi: AreaOfInterest, cache: TileCache, zooms: ZoomRange
) -> Iterator[tuple[int, int, Iterator[list[Span]]]]:
    cover = tile_cover(aoi, cache.tms, zooms)
    for z in zooms.levels():
        level = cover.level(z)
        rows = zip(level.rows.tolist(), level.starts.tolist(), level.stops.tolist(), strict=True)
        yield z, level.count, _spans(rows, z)


def _fresh(index: TileIndex, name: str, spans: list[Span], since: float | None) -> set[Tile]:
    return {
        row.tile for row in index.find_spans(name, spans) if since is None or row.checked >= since
    }


def _check_zooms(cache: TileCache, zooms: ZoomRange) -> None:
    info = cache.info
    if zooms.min < info.min_zoom or zooms.max > info.max_zoom or zooms.min > zooms.max:
        raise InvalidZoomError(
            f"tile cache {info.name!r} caches levels {info.min_zoom}-{info.max_zoom}: "
            f"not {zooms.min}-{zooms.max}",
            zoom=zooms.min if zooms.min < info.min_zoom else zooms.max,
        )


def plan_seed(
    cache: TileCache,
    index: TileIndex,
    aoi: AreaOfInterest,
    zooms: ZoomRange,
    *,
    refresh_before: float | None = None,
) -> SeedPlan:
    """A dry run: tiles of the area per level, how many are stored, and the bytes to fetch.

    Raises:
        InvalidZoomError: levels outside the cache's.
        InvalidAOIError: an area outside the tile matrix set.
    """
    _check_zooms(cache, zooms)
    stats = {level.z: level for level in index.stats(cache.name).levels}
    fallback = DEFAULT_TILE_BYTES[cache.info.tile_format]
    levels: dict[int, int] = {}
    stored: dict[int, int] = {}
    sizes: dict[int, int] = {}
    for z, count, chunks in _level_spans(aoi, cache, zooms):
        levels[z] = count
        level = stats.get(z)
        sizes[z] = level.bytes // level.tiles if level is not None and level.tiles else fallback
        stored[z] = (
            sum(len(_fresh(index, cache.name, spans, refresh_before)) for spans in chunks)
            if level is not None and level.tiles
            else 0
        )
    return SeedPlan(cache.name, levels, stored, sizes)


def _fetch_with_retries(
    fetch: Fetch, tile: Tile, settings: UpstreamSettings, cancelled: Callable[[], bool]
) -> bytes:
    attempt = 0
    while True:
        try:
            return fetch(tile)
        except TileNotFoundError:
            raise
        except ContainerError:
            if attempt >= settings.retries or cancelled():
                raise
            delay = settings.backoff_s * (2**attempt)
            time.sleep(delay * (0.5 + random.random()))  # noqa: S311 (jitter, not crypto)
            attempt += 1


def seed(
    cache: TileCache,
    index: TileIndex,
    fetch: Fetch,
    aoi: AreaOfInterest,
    zooms: ZoomRange,
    *,
    refresh_before: float | None = None,
    progress: Callable[[SeedProgress], None] = lambda _: None,
    cancelled: Callable[[], bool] = lambda: False,
) -> SeedProgress:
    """Fetch the tiles of ``aoi`` at ``zooms`` that the cache lacks (or holds from before
    ``refresh_before``) from ``fetch``, and store them.

    Args:
        cache: the cache to fill.
        index: its index.
        fetch: one attempt at one tile from the source (rate limited by the caller's fetch).
        aoi: the area.
        zooms: the levels.
        refresh_before: refetch stored tiles last checked before this time (Unix seconds);
            None keeps every stored tile.
        progress: called after each chunk.
        cancelled: asked between chunks and before retries; a true answer stops the seed
            with ``JobCancelledError`` (what is stored stays).

    Raises:
        SeedFailedError: more fetches failed than the cache's failure budget.
        JobCancelledError: ``cancelled()`` said so.
        InvalidZoomError, InvalidAOIError: the levels or the area do not fit the cache.
    """
    _check_zooms(cache, zooms)
    settings = cache.definition.upstream
    levels = list(_level_spans(aoi, cache, zooms))
    state = SeedProgress(total=sum(count for _, count, _ in levels))
    progress(state)
    # a chunk's tiles are stored (in the "seed-store" thread, its blobs put through the pool)
    # while the next chunk's are fetched: the disk's waits and the upstream's overlap. At most
    # one chunk is being stored, so memory stays bounded by two chunks.
    with (
        ThreadPoolExecutor(settings.concurrency, thread_name_prefix="seed") as pool,
        ThreadPoolExecutor(1, thread_name_prefix="seed-store") as storer,
    ):
        storing: Future[None] | None = None

        def stored() -> None:
            nonlocal storing
            if storing is not None:
                done, storing = storing, None
                done.result()
                progress(state)

        try:
            for z, _, chunks in levels:
                state.level = z
                for spans in chunks:
                    if cancelled():
                        raise JobCancelledError(f"seeding {cache.name!r} was cancelled")
                    got, size = _fetch_chunk(
                        cache, index, fetch, spans, refresh_before, settings, pool, state, cancelled
                    )
                    stored()
                    storing = storer.submit(_store_chunk, cache, index, got, size, pool, state)
                    if state.errors > settings.failure_budget:
                        stored()
                        cache.flush()
                        raise SeedFailedError(
                            f"seeding {cache.name!r} stopped: {state.errors} fetches failed, "
                            f"more than its failure budget of {settings.failure_budget} (last: "
                            f"{state.failures[-1] if state.failures else '?'}); what was "
                            "fetched is stored, and a rerun skips it",
                            errors=state.errors,
                            budget=settings.failure_budget,
                        )
            stored()
        finally:
            if storing is not None:  # a failure or a cancel: what was fetched is still stored
                with contextlib.suppress(Exception):
                    storing.result()
    cache.flush()
    return state


def _fetch_chunk(
    cache: TileCache,
    index: TileIndex,
    fetch: Fetch,
    spans: list[Span],
    refresh_before: float | None,
    settings: UpstreamSettings,
    pool: ThreadPoolExecutor,
    state: SeedProgress,
    cancelled: Callable[[], bool],
) -> tuple[list[tuple[Tile, bytes]], int]:
    """Fetch the tiles of a chunk the cache lacks; returns them and the chunk's size."""
    fresh = _fresh(index, cache.name, spans, refresh_before)
    wanted = [
        Tile(x, span.y, span.z)
        for span in spans
        for x in range(span.start, span.stop + 1)
        if Tile(x, span.y, span.z) not in fresh
    ]
    size = sum(span.stop - span.start + 1 for span in spans)
    state.skipped += size - len(wanted)

    def one(tile: Tile) -> tuple[Tile, bytes | None, str | None]:
        try:
            return tile, _fetch_with_retries(fetch, tile, settings, cancelled), None
        except TileNotFoundError:
            return tile, None, None
        except ContainerError as exc:
            return tile, None, str(exc)

    got: list[tuple[Tile, bytes]] = []
    errors = 0
    for tile, data, error in pool.map(one, wanted):
        if data is not None:
            got.append((tile, data))
            state.fetched += 1
            state.bytes += len(data)
        elif error is None:
            state.missing += 1
        else:
            errors += 1
            state.failures = [*state.failures[-4:], f"{tile.z}/{tile.x}/{tile.y}: {error}"]
    state.errors += errors
    cache.record(spans[0].z, fetches=len(wanted), errors=errors)
    return got, size


def _store_chunk(
    cache: TileCache,
    index: TileIndex,
    got: list[tuple[Tile, bytes]],
    size: int,
    pool: ThreadPoolExecutor,
    state: SeedProgress,
) -> None:
    """Store a fetched chunk, its blobs put through ``pool``; then count it done."""
    written = store_tiles(index, cache.blobs, cache.name, got, pool=pool)
    state.written += written
    state.done += size
