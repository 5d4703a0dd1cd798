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

A large seed of an upstream spreads over worker processes (:class:`SeedProcesses`): each
fetches with its share of the concurrency and the rate, and stores what it fetched through its
own index connection and blob store; this process looks up which tiles are stored, hands out
the chunks that need fetching and adds up the progress. One Python process spends about a
millisecond of CPU per tile (the HTTP client, hashing, storing) and so cannot keep two cores
busy; the processes do (bench/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import multiprocessing.util
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from typing import Any

from offmaps.cache.index import Span, TileIndex
from offmaps.cache.model import CacheDefinition, UpstreamSettings
from offmaps.cache.tiles import Fetch, TileCache, store_tiles
from offmaps.errors import (
    CacheError,
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
    "PROCESS_MIN_TILES",
    "RateLimiter",
    "SeedPlan",
    "SeedProcesses",
    "SeedProgress",
    "plan_seed",
    "seed",
]

CHUNK_TILES = 256
"""Tiles looked up, fetched and stored together."""

PROCESS_MIN_TILES = 2000
"""Areas of fewer tiles per worker process are seeded in this process: starting the workers
(about half a second) would take longer than the work."""


@dataclass(frozen=True, slots=True)
class SeedProcesses:
    """How a seed spreads over worker processes (see the module's docstring).

    Attributes:
        processes: the most worker processes, at most one per request the cache may have in
            flight (its ``concurrency``); each gets ``concurrency / processes`` of them, rounded
            up, and ``1 / processes`` of its rate.
        fetcher: makes a worker's fetch from its share of the rate; it, the index and the blob
            store must pickle (a function of a module, and stores that reopen by file or URL).
    """

    processes: int
    fetcher: Callable[[CacheDefinition, float], tuple[Fetch, Callable[[], None]]]


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

    def add(self, fetched: _Fetched) -> None:
        """Count a chunk's fetches."""
        self.fetched += fetched.count
        self.bytes += fetched.bytes
        self.missing += fetched.missing
        self.errors += fetched.errors
        self.failures = [*self.failures, *fetched.failures][-5:]

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
    processes: SeedProcesses | None = None,
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
        processes: spread the fetching and storing over worker processes (when the area has
            :data:`PROCESS_MIN_TILES` tiles per process or more); None: all in this process.

    Raises:
        SeedFailedError: more fetches failed than the cache's failure budget.
        JobCancelledError: ``cancelled()`` said so.
        InvalidZoomError, InvalidAOIError: the levels or the area do not fit the cache.
        CacheError: a worker process died.
    """
    _check_zooms(cache, zooms)
    levels = list(_level_spans(aoi, cache, zooms))
    state = SeedProgress(total=sum(count for _, count, _ in levels))
    progress(state)
    # one worker per request in flight at most
    count = (
        1 if processes is None else min(processes.processes, cache.definition.upstream.concurrency)
    )
    if processes is not None and count > 1 and state.total >= PROCESS_MIN_TILES * count:
        _seed_in_processes(
            cache,
            index,
            levels,
            refresh_before,
            state,
            progress,
            cancelled,
            processes.fetcher,
            count,
        )
    else:
        _seed_here(cache, index, fetch, levels, refresh_before, state, progress, cancelled)
    cache.flush()
    return state


_Levels = list[tuple[int, int, Iterator[list[Span]]]]


def _chunks(
    index: TileIndex, name: str, levels: _Levels, since: float | None, state: SeedProgress
) -> Iterator[tuple[int, list[Tile]]]:
    """Each chunk's tiles to fetch (stored ones counted as skipped), with the chunk's size."""
    for z, _, chunks in levels:
        state.level = z
        for spans in chunks:
            fresh = _fresh(index, name, spans, since)
            wanted = [
                tile
                for span in spans
                for x in range(span.start, span.stop + 1)
                if (tile := Tile(x, span.y, span.z)) not in fresh
            ]
            size = sum(span.stop - span.start + 1 for span in spans)
            state.skipped += size - len(wanted)
            yield size, wanted


def _check_budget(name: str, state: SeedProgress, budget: int) -> None:
    if state.errors > budget:
        raise SeedFailedError(
            f"seeding {name!r} stopped: {state.errors} fetches failed, more than its failure "
            f"budget of {budget} (last: {state.failures[-1] if state.failures else '?'}); "
            "what was fetched is stored, and a rerun skips it",
            errors=state.errors,
            budget=budget,
        )


def _check_cancelled(name: str, cancelled: Callable[[], bool]) -> None:
    if cancelled():
        raise JobCancelledError(f"seeding {name!r} was cancelled")


def _seed_here(
    cache: TileCache,
    index: TileIndex,
    fetch: Fetch,
    levels: _Levels,
    refresh_before: float | None,
    state: SeedProgress,
    progress: Callable[[SeedProgress], None],
    cancelled: Callable[[], bool],
) -> None:
    settings = cache.definition.upstream
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
            for size, wanted in _chunks(index, cache.name, levels, refresh_before, state):
                _check_cancelled(cache.name, cancelled)
                fetched = _fetch_tiles(cache, fetch, wanted, pool, cancelled)
                state.add(fetched)
                stored()
                storing = storer.submit(_store, cache, index, fetched, size, pool, state)
                if state.errors > settings.failure_budget:
                    stored()
                    _check_budget(cache.name, state, settings.failure_budget)
            stored()
        finally:
            if storing is not None:  # a failure or a cancel: what was fetched is still stored
                with contextlib.suppress(Exception):
                    storing.result()


def _seed_in_processes(
    cache: TileCache,
    index: TileIndex,
    levels: _Levels,
    refresh_before: float | None,
    state: SeedProgress,
    progress: Callable[[SeedProgress], None],
    cancelled: Callable[[], bool],
    fetcher: Callable[[CacheDefinition, float], tuple[Fetch, Callable[[], None]]],
    count: int,
) -> None:
    settings = cache.definition.upstream
    threads = math.ceil(settings.concurrency / count)
    work = (cache.definition, index, cache.blobs, fetcher, threads, count)
    pool: ProcessPoolExecutor | None = None  # started when a chunk needs fetching
    running: dict[Future[_Fetched], tuple[int, list[Tile]]] = {}

    def collect() -> None:
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            size, _ = running.pop(future)
            try:
                fetched = future.result()
            except BrokenProcessPool:
                raise CacheError(
                    f"seeding {cache.name!r} stopped: a worker process died; what was stored "
                    "stays, and a rerun skips it"
                ) from None
            state.add(fetched)
            state.written += fetched.written
            state.done += size
        progress(state)
        _check_budget(cache.name, state, settings.failure_budget)

    try:
        for size, wanted in _chunks(index, cache.name, levels, refresh_before, state):
            _check_cancelled(cache.name, cancelled)
            if not wanted:
                state.done += size
                continue
            if pool is None:
                pool = ProcessPoolExecutor(
                    count,
                    mp_context=_context(fetcher, index, cache.blobs),
                    initializer=_start_worker,
                    initargs=work,
                )
            # at most two chunks' worth of tiles per worker in flight (small levels' chunks of a
            # few tiles go out together)
            while sum(len(chunk) for chunk in running.values()) >= 2 * count * CHUNK_TILES:
                collect()
            running[pool.submit(_seed_chunk, wanted)] = (size, wanted)
        while running:
            collect()
    finally:
        if pool is not None:
            # on a failure or a cancel, chunks not started are dropped; those running finish
            # (and what they fetched is stored)
            pool.shutdown(wait=True, cancel_futures=True)


def _context(*used: object) -> multiprocessing.context.BaseContext:
    # never fork a server's threads: workers come from a fork server (started once per process),
    # with the modules of seeding, the fetcher and the stores loaded before it forks them
    modules = {__name__} | {getattr(thing, "__module__", __name__) for thing in used}
    modules |= {type(thing).__module__ for thing in used}
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(sorted(modules - {"builtins"}))
    return context


@dataclass(slots=True)
class _Worker:
    cache: TileCache
    index: TileIndex
    fetch: Fetch
    pool: ThreadPoolExecutor | None


_worker: _Worker | None = None


def _start_worker(
    definition: CacheDefinition,
    index: TileIndex,
    blobs: Any,
    fetcher: Callable[[CacheDefinition, float], tuple[Fetch, Callable[[], None]]],
    threads: int,
    processes: int,
) -> None:
    global _worker  # noqa: PLW0603 - one per worker process, made by its initializer
    fetch, close = fetcher(definition, definition.upstream.requests_per_second / processes)
    cache = TileCache(definition, index, blobs, fetch)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="seed") if threads > 1 else None
    _worker = _Worker(cache, index, fetch, pool)
    # when the worker exits (multiprocessing runs these finalizers, not atexit's), its
    # connections close: the last one to a SQLite file folds its write-ahead log back in
    multiprocessing.util.Finalize(None, _stop_worker, args=(index, blobs, close), exitpriority=10)


def _stop_worker(index: TileIndex, blobs: Any, close: Callable[[], None]) -> None:
    close()
    index.close()
    close_blobs = getattr(blobs, "close", None)
    if callable(close_blobs):
        close_blobs()


def _seed_chunk(wanted: list[Tile]) -> _Fetched:
    """A worker's task: fetch and store a chunk's tiles; what it fetched, without the bytes."""
    worker = _worker
    if worker is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("not a seeding worker process")
    fetched = _fetch_tiles(worker.cache, worker.fetch, wanted, worker.pool, lambda: False)
    fetched.written = store_tiles(
        worker.index, worker.cache.blobs, worker.cache.name, fetched.got, pool=worker.pool
    )
    fetched.got = []
    worker.cache.flush()
    return fetched


@dataclass(slots=True)
class _Fetched:
    """What fetching a chunk's tiles gave."""

    got: list[tuple[Tile, bytes]]
    count: int = 0
    bytes: int = 0
    missing: int = 0
    errors: int = 0
    written: int = 0
    failures: list[str] = field(default_factory=list)


def _fetch_tiles(
    cache: TileCache,
    fetch: Fetch,
    wanted: list[Tile],
    pool: ThreadPoolExecutor | None,
    cancelled: Callable[[], bool],
) -> _Fetched:
    """Fetch ``wanted`` with ``pool``'s threads (None: one at a time), each with its retries;
    count the fetches."""
    settings = cache.definition.upstream

    def one(tile: Tile) -> tuple[Tile, bytes | None, str | None]:
        try:
            return tile, _fetch_with_retries(fetch, tile, settings, cancelled), None
        except TileNotFoundError:
            return tile, None, None
        except ContainerError as exc:
            return tile, None, str(exc)

    fetched = _Fetched([])
    for tile, data, error in (map if pool is None else pool.map)(one, wanted):
        if data is not None:
            fetched.got.append((tile, data))
            fetched.count += 1
            fetched.bytes += len(data)
        elif error is None:
            fetched.missing += 1
        else:
            fetched.errors += 1
            fetched.failures = [*fetched.failures[-4:], f"{tile.z}/{tile.x}/{tile.y}: {error}"]
    if wanted:
        cache.record(wanted[0].z, fetches=len(wanted), errors=fetched.errors)
    return fetched


def _store(
    cache: TileCache,
    index: TileIndex,
    fetched: _Fetched,
    size: int,
    pool: ThreadPoolExecutor,
    state: SeedProgress,
) -> None:
    """Store a fetched chunk, its blobs put through ``pool``; then count it done."""
    state.written += store_tiles(index, cache.blobs, cache.name, fetched.got, pool=pool)
    state.done += size
