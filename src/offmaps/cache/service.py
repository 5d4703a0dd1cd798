"""The tile cache service: create, list, seed, read, measure, verify and clean tile caches.

One :class:`TileCacheService` per process holds the cache index, the blob store the tiles'
bytes live in (shared by every cache, so identical tiles are stored once across caches), one
:class:`~offmaps.cache.tiles.TileCache` per cache in use and one rate limiter per upstream host.
The REST API, GraphQL, the CLI and jobs all call it with the same arguments.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import httpx

from offmaps.cache.index import Span, TileIndex
from offmaps.cache.model import CacheDefinition, CacheStats, SourceKind
from offmaps.cache.seed import RateLimiter, SeedPlan, SeedProgress, plan_seed, seed
from offmaps.cache.tiles import Fetch, TileCache
from offmaps.errors import (
    BlobIntegrityError,
    BlobNotFoundError,
    CacheError,
    CacheExistsError,
    ContainerError,
)
from offmaps.sources import (
    ArchiveTileSource,
    TileSource,
    UpstreamFetcher,
    source_tms,
)
from offmaps.storage import BlobStore
from offmaps.tiling import AreaOfInterest, tile_cover
from offmaps.tiling.tms import check_compatible, get_tms
from offmaps.types import Tile, ZoomRange

__all__ = ["GarbageCollection", "StoreStats", "TileCacheService", "VerifyReport"]

LayerLookup = Callable[[str], TileSource | None]


@dataclass(frozen=True, slots=True)
class StoreStats:
    """The blob store under every cache.

    Attributes:
        blobs: blobs stored.
        bytes: their bytes.
        referenced: blobs some cache's tile names.
        orphans: blobs no tile names (garbage collection removes them).
        orphan_bytes: their bytes.
    """

    blobs: int
    bytes: int
    referenced: int
    orphans: int
    orphan_bytes: int


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What a verification found.

    Attributes:
        checked: blobs hashed again.
        damaged: keys of the blobs whose bytes no longer hash to their key (dropped, with the
            tiles naming them, so that they are fetched again).
    """

    checked: int
    damaged: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GarbageCollection:
    """What a garbage collection did.

    Attributes:
        examined: blobs looked at.
        deleted: blobs no tile named, deleted.
    """

    examined: int
    deleted: int


class TileCacheService:
    """Every tile cache of a server.

    Args:
        index: the cache index (definitions and tile → blob rows).
        blobs: where tiles' bytes are kept, once per distinct content.
        layers: finds a tile layer of this server by name (``layer`` sources).
        published: where each cache is put as a tile source when it opens, and removed from
            when it is deleted: the catalog's tile layers, so that ``/tiles/{name}/...``
            serves a cache and a web map's tile layer may be one. Every cache is opened and
            published at start.
        client: the HTTP client for upstream sources (tests pass one with a mock transport);
            by default each upstream gets one with the cache's timeout.
    """

    def __init__(
        self,
        index: TileIndex,
        blobs: BlobStore,
        *,
        layers: LayerLookup = lambda name: None,
        published: MutableMapping[str, TileSource] | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.index = index
        self.blobs = blobs
        self._layers = layers
        self._published = published
        self._client = client
        self._lock = threading.Lock()
        self._caches: dict[str, TileCache] = {}
        self._fetchers: dict[str, tuple[Fetch, Callable[[], None]]] = {}
        self._limiters: dict[str, RateLimiter] = {}
        if published is not None:
            for definition in self.list():
                self.cache(definition.name)

    # --- caches ----------------------------------------------------------------------------

    def create(self, definition: CacheDefinition) -> CacheDefinition:
        """Create a cache after checking its tile matrix set and its source.

        Raises:
            CacheExistsError: the name is taken.
            UnknownTileMatrixSetError: the tile matrix set is not registered.
            CacheError: a layer or archive source is missing or does not match the cache's
                tile matrix set or format.
        """
        tms = get_tms(definition.tms)
        if self._layers(definition.name) is not None:
            raise CacheExistsError(
                f"a tile layer called {definition.name!r} exists already", name=definition.name
            )
        source = definition.source
        if source.kind is not SourceKind.XYZ:
            found = self._open_source(definition)
            try:
                check_compatible(tms, source_tms(found))
            except ContainerError as exc:
                raise CacheError(f"cache {definition.name!r}: {exc}") from None
            if found.info.tile_format is not definition.format:
                raise CacheError(
                    f"cache {definition.name!r} is {definition.format.value}, but its source "
                    f"{source.location!r} serves {found.info.tile_format.value}"
                )
            if isinstance(found, ArchiveTileSource):
                found.close()
        self.index.create_cache(definition)
        if self._published is not None:
            self.cache(definition.name)
        return definition

    def list(self) -> list[CacheDefinition]:
        """Every cache, by name."""
        return self.index.list_caches()

    def definition(self, name: str) -> CacheDefinition:
        """A cache's definition. Raises ``CacheNotFoundError``."""
        return self.index.definition(name)

    def delete(self, name: str) -> int:
        """Remove a cache and its tiles (their blobs go at the next garbage collection)."""
        with self._lock:
            cache = self._caches.pop(name, None)
            closer = self._fetchers.pop(name, None)
            published = self._published
            if cache is not None and published is not None and published.get(name) is cache:
                del published[name]
        if cache is not None:
            cache.flush()
        if closer is not None:
            closer[1]()
        return self.index.delete_cache(name)

    def cache(self, name: str) -> TileCache:
        """The cache called ``name``, ready to serve (read-through from its source)."""
        with self._lock:
            found = self._caches.get(name)
        if found is not None:
            return found
        definition = self.index.definition(name)
        fetch = self._fetch(definition)
        with self._lock:
            found = self._caches.setdefault(
                name, TileCache(definition, self.index, self.blobs, fetch)
            )
            if self._published is not None:
                self._published[name] = found
        return found

    # --- sources ---------------------------------------------------------------------------

    def _open_source(self, definition: CacheDefinition) -> TileSource:
        source = definition.source
        if source.kind is SourceKind.LAYER:
            layer = self._layers(source.location)
            if layer is None:
                raise CacheError(
                    f"cache {definition.name!r}: no tile layer {source.location!r} here"
                )
            return layer
        try:
            return ArchiveTileSource(definition.name, source.location)
        except ContainerError as exc:
            raise CacheError(
                f"cache {definition.name!r}: its archive cannot be read: {exc}"
            ) from None

    def _fetch(self, definition: CacheDefinition) -> Fetch:
        with self._lock:
            known = self._fetchers.get(definition.name)
        if known is not None:
            return known[0]
        source = definition.source
        if source.kind is SourceKind.XYZ:
            settings = definition.upstream
            fetcher = UpstreamFetcher(
                source.location,
                definition.format,
                client=self._client,
                timeout_s=settings.timeout_s,
                max_bytes=settings.max_tile_bytes,
            )
            host = urlsplit(source.location).hostname or ""
            with self._lock:
                limiter = self._limiters.setdefault(host, RateLimiter(settings.requests_per_second))
            limiter.rate = min(limiter.rate, settings.requests_per_second)

            def fetch(tile: Tile) -> bytes:
                limiter.acquire()
                what = f"cache {definition.name!r}, tile {tile.z}/{tile.x}/{tile.y}"
                return fetcher.fetch(tile, what)

            entry: tuple[Fetch, Callable[[], None]] = (fetch, fetcher.close)
        else:
            opened = self._open_source(definition)
            close = opened.close if isinstance(opened, ArchiveTileSource) else (lambda: None)
            entry = (opened.get_tile, close)
        with self._lock:
            return self._fetchers.setdefault(definition.name, entry)[0]

    # --- seeding ---------------------------------------------------------------------------

    def plan(
        self,
        name: str,
        aoi: AreaOfInterest,
        zooms: ZoomRange,
        *,
        refresh_before: datetime | None = None,
    ) -> SeedPlan:
        """A dry run of a seed: tiles per level, stored already, bytes to fetch."""
        return plan_seed(
            self.cache(name), self.index, aoi, zooms, refresh_before=_seconds(refresh_before)
        )

    def seed(
        self,
        name: str,
        aoi: AreaOfInterest,
        zooms: ZoomRange,
        *,
        refresh_before: datetime | None = None,
        progress: Callable[[SeedProgress], None] = lambda _: None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> SeedProgress:
        """Fetch what the cache lacks of an area (see :func:`offmaps.cache.seed.seed`)."""
        cache = self.cache(name)
        return seed(
            cache,
            self.index,
            self._fetch(cache.definition),
            aoi,
            zooms,
            refresh_before=_seconds(refresh_before),
            progress=progress,
            cancelled=cancelled,
        )

    # --- figures ---------------------------------------------------------------------------

    def stats(self, name: str) -> CacheStats:
        """A cache's figures, per level, counters of this process included."""
        with self._lock:
            cache = self._caches.get(name)
        if cache is not None:
            cache.flush()
        return self.index.stats(name)

    def store_stats(self) -> StoreStats:
        """The blob store's totals and its orphans (lists every blob: not for every request)."""
        referenced = self.index.blob_sizes()
        blobs = size = orphans = orphan_bytes = 0
        for key in self.blobs.iter_keys():
            known = referenced.get(key)
            blob_size = known if known is not None else self._size(key)
            blobs += 1
            size += blob_size
            if known is None:
                orphans += 1
                orphan_bytes += blob_size
        return StoreStats(blobs, size, len(referenced), orphans, orphan_bytes)

    def _size(self, key: str) -> int:
        try:
            return self.blobs.size(key)
        except BlobNotFoundError:  # collected while we listed
            return 0

    def verify(self, name: str | None = None) -> VerifyReport:
        """Hash again every blob a cache (or every cache) names; damaged ones are dropped with
        the tiles naming them, so that the next read or seed fetches them again."""
        keys = sorted(self.index.blob_sizes(name))
        damaged: list[str] = []
        for key in keys:
            try:
                self.blobs.verify(key)
            except (BlobIntegrityError, BlobNotFoundError):
                damaged.append(key)
                self.index.forget_blob(key)
                with contextlib.suppress(BlobNotFoundError):
                    self.blobs.delete(key)
        return VerifyReport(len(keys), tuple(damaged))

    # --- cleanup ---------------------------------------------------------------------------

    def truncate(
        self, name: str, aoi: AreaOfInterest | None = None, zooms: ZoomRange | None = None
    ) -> int:
        """Remove a cache's tiles inside an area (or all) at some levels (or all); tiles removed."""
        definition = self.index.definition(name)
        if aoi is None:
            return self.index.truncate(name, None, zooms.levels() if zooms else None)
        levels = zooms or ZoomRange(definition.min_zoom, definition.max_zoom)
        cover = tile_cover(aoi, get_tms(definition.tms), levels)

        def spans() -> Iterator[Span]:
            for z in levels.levels():
                level = cover.level(z)
                for y, start, stop in zip(
                    level.rows.tolist(), level.starts.tolist(), level.stops.tolist(), strict=True
                ):
                    yield Span(z, y, start, stop)

        return self.index.truncate(name, spans(), None)

    def cleanup(
        self, name: str, *, older_than: datetime | None = None, max_bytes: int | None = None
    ) -> int:
        """Remove tiles stored before ``older_than``, then least recently used ones until the
        cache's tiles take at most ``max_bytes``; tiles removed."""
        removed = 0
        if older_than is not None:
            removed += self.index.remove_older(name, older_than.timestamp())
        if max_bytes is not None:
            with self._lock:
                cache = self._caches.get(name)
            if cache is not None:
                cache.flush()  # the latest reads count for recency
            removed += self.index.trim_to(name, max_bytes)
        if older_than is None and max_bytes is None:
            self.index.definition(name)
        return removed

    def gc(self) -> GarbageCollection:
        """Delete the blobs no cache's tile names, safely while seeding and serving go on."""

        def delete(key: str) -> None:
            with contextlib.suppress(BlobNotFoundError):  # deleted by another collector
                self.blobs.delete(key)

        deleted, examined = self.index.collect(self.blobs.iter_keys(), delete)
        return GarbageCollection(examined, deleted)

    def close(self) -> None:
        """Write counters, close sources, the index and every upstream client made here."""
        with self._lock:
            caches = list(self._caches.values())
            fetchers = list(self._fetchers.values())
            self._caches.clear()
            self._fetchers.clear()
        for cache in caches:
            cache.flush()
        for _, close in fetchers:
            close()
        self.index.close()


def _seconds(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()
