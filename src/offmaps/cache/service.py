"""The tile cache service: create, list, seed, read, measure, verify and clean tile caches.

One :class:`TileCacheService` per process holds the cache index, the blob store the tiles'
bytes live in (shared by every cache, so identical tiles are stored once across caches), one
:class:`~offmaps.cache.tiles.TileCache` per cache in use and one rate limiter per upstream host.
The REST API, GraphQL, the CLI and jobs all call it with the same arguments.
"""

from __future__ import annotations

import builtins
import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from urllib.parse import urlsplit

import httpx

from offmaps.cache.index import Grant, Span, TileIndex, cover_spans
from offmaps.cache.model import CacheDefinition, CacheStats, SourceKind
from offmaps.cache.seed import (
    RateLimiter,
    SeedPlan,
    SeedProcesses,
    SeedProgress,
    plan_seed,
    seed,
)
from offmaps.cache.tiles import Fetch, TileCache
from offmaps.containers.registry import open_reader
from offmaps.errors import (
    BlobIntegrityError,
    BlobNotFoundError,
    CacheError,
    CacheExistsError,
    ContainerError,
    GrantCommittedError,
    GrantExpiredError,
    GrantNotFoundError,
    UploadMismatchError,
)
from offmaps.sources import (
    ArchiveTileSource,
    TileSource,
    UpstreamFetcher,
    check_key,
    source_tms,
)
from offmaps.storage import BlobStore, PresignedURL, PresigningBlobStore, check_blob_key
from offmaps.tiling import AreaOfInterest, TileCover, tile_cover
from offmaps.tiling.tms import check_compatible, get_tms
from offmaps.types import Tile, ZoomRange

__all__ = [
    "DEFAULT_URL_EXPIRY",
    "MAX_GRANT_TILES",
    "MAX_URLS_PAGE",
    "GarbageCollection",
    "StoreStats",
    "TileCacheService",
    "TileURL",
    "UploadGrant",
    "VerifyReport",
    "upstream_fetch",
]

DEFAULT_URL_EXPIRY = timedelta(minutes=15)
"""How long presigned URLs of tiles work unless asked otherwise: short."""
MAX_URLS_PAGE = 10_000
"""The most presigned download URLs in one answer (pages follow)."""
MAX_GRANT_TILES = 10_000
"""The most tiles one upload grant may name."""

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
class TileURL:
    """A presigned URL of one stored tile (or of where to upload one).

    Attributes:
        tile: the tile.
        sha256: the SHA-256 of its bytes (the blob's key).
        size: their length.
        url: the presigned URL, its method, expiry and any headers it needs.
    """

    tile: Tile
    sha256: str
    size: int
    url: PresignedURL


@dataclass(frozen=True, slots=True)
class UploadGrant:
    """Where to upload tiles straight to storage, and the id to commit them with.

    Attributes:
        id: the grant's id, for :meth:`TileCacheService.commit_uploads`.
        cache: the cache's name.
        expires_at: when the URLs and the grant stop working.
        uploads: a presigned PUT per tile, bound to its declared SHA-256.
    """

    id: str
    cache: str
    expires_at: datetime
    uploads: tuple[TileURL, ...]


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
        seed_processes: worker processes a large seed of an upstream spreads over (the index
            and the blob store must then reopen in another process: SQLite or PostgreSQL, a
            SQLite file or S3; see :class:`~offmaps.cache.seed.SeedProcesses`); 1 seeds in
            this process, and so does a seed with ``client`` given.
    """

    def __init__(
        self,
        index: TileIndex,
        blobs: BlobStore,
        *,
        layers: LayerLookup = lambda name: None,
        published: MutableMapping[str, TileSource] | None = None,
        client: httpx.Client | None = None,
        seed_processes: int = 1,
    ) -> None:
        self.index = index
        self._seed_processes = seed_processes
        self.blobs = blobs
        self._layers = layers
        self._published = published
        self._client = client
        self._lock = threading.Lock()
        self._caches: dict[str, TileCache] = {}
        self._fetchers: dict[str, tuple[Fetch, Callable[[], None]]] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self.last_store_stats: tuple[datetime, StoreStats] | None = None
        """The last :meth:`store_stats` and when it was measured (metrics show it)."""
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
            try:
                if found.info.tile_format not in definition.tile_formats:
                    raise CacheError(
                        f"cache {definition.name!r} is {definition.format_name}, but its source "
                        f"{source.location!r} serves {found.info.tile_format.value}"
                    )
                if isinstance(found, ArchiveTileSource) and not definition.mixed:
                    _refuse_mixed_archive(definition, found)
            finally:
                # an archive was opened for this check; a layer is the server's, never closed
                if source.kind is SourceKind.ARCHIVE and isinstance(found, ArchiveTileSource):
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
            fetcher = _upstream(definition, self._client)
            host = urlsplit(source.location).hostname or ""
            with self._lock:
                limiter = self._limiters.setdefault(host, RateLimiter(settings.requests_per_second))
            limiter.rate = min(limiter.rate, settings.requests_per_second)

            entry: tuple[Fetch, Callable[[], None]] = (
                _limited(definition.name, fetcher, limiter),
                fetcher.close,
            )
        else:
            lazy = _OpenedOnUse(partial(self._open_source, definition), source.kind)
            entry = (lazy.get_tile, lazy.close)
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
        definition = cache.definition
        spread = (
            SeedProcesses(self._seed_processes, upstream_fetch)
            if self._seed_processes > 1
            and definition.source.kind is SourceKind.XYZ
            and self._client is None
            else None
        )
        return seed(
            cache,
            self.index,
            self._fetch(definition),
            aoi,
            zooms,
            refresh_before=_seconds(refresh_before),
            progress=progress,
            cancelled=cancelled,
            processes=spread,
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
        found = StoreStats(blobs, size, len(referenced), orphans, orphan_bytes)
        self.last_store_stats = (datetime.now(UTC), found)
        return found

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

    # --- presigned URLs --------------------------------------------------------------------

    def _presigning(self) -> PresigningBlobStore:
        if not isinstance(self.blobs, PresigningBlobStore):
            raise CacheError(f"the tile caches' store {self.blobs!r} hands out no presigned URLs")
        return self.blobs

    def tile_urls(
        self,
        name: str,
        aoi: AreaOfInterest,
        zooms: ZoomRange,
        *,
        expires: timedelta = DEFAULT_URL_EXPIRY,
        after: Tile | None = None,
        limit: int = 1000,
    ) -> tuple[tuple[TileURL, ...], Tile | None]:
        """Presigned GET URLs of the stored tiles of an area, by level, row and column: at most
        ``limit`` after the tile ``after``; and the last tile when more may follow (the next
        page's ``after``), else None. Tiles the cache lacks are left out (seed them first).

        Raises:
            CacheNotFoundError, InvalidZoomError, InvalidAOIError: as for a seed.
            CacheError: the store hands out no presigned URLs, or ``limit`` is out of range.
        """
        if not 1 <= limit <= MAX_URLS_PAGE:
            raise CacheError(f"a page has 1 to {MAX_URLS_PAGE:,} URLs, not {limit}")
        store = self._presigning()
        definition = self.index.definition(name)
        cover = tile_cover(aoi, get_tms(definition.tms), zooms)
        found: builtins.list[TileURL] = []
        for row in self.index.find_spans(name, _spans_after(cover, zooms, after)):
            if len(found) == limit:
                return tuple(found), found[-1].tile
            found.append(
                TileURL(row.tile, row.sha256, row.size, store.presign_get(row.sha256, expires))
            )
        return tuple(found), None

    def tile_urls_for(
        self, name: str, tiles: Sequence[Tile], *, expires: timedelta = DEFAULT_URL_EXPIRY
    ) -> tuple[TileURL, ...]:
        """Presigned GET URLs of the given tiles that the cache holds (the others are left
        out), at most :data:`MAX_URLS_PAGE`.

        Raises:
            CacheNotFoundError: no such cache.
            CacheError: too many tiles, or a store that hands out no presigned URLs.
        """
        if len(tiles) > MAX_URLS_PAGE:
            raise CacheError(f"ask for at most {MAX_URLS_PAGE:,} tiles at once")
        store = self._presigning()
        self.index.definition(name)
        found: builtins.list[TileURL] = []
        for tile in tiles:
            row = self.index.find(name, tile)
            if row is not None:
                url = store.presign_get(row.sha256, expires)
                found.append(TileURL(tile, row.sha256, row.size, url))
        return tuple(found)

    def grant_uploads(
        self,
        name: str,
        tiles: Sequence[tuple[Tile, str, int]],
        *,
        owner: str,
        expires: timedelta = DEFAULT_URL_EXPIRY,
    ) -> UploadGrant:
        """Presigned PUT URLs for tiles a client holds, each bound to the SHA-256 it declares,
        and a grant to commit them with once they are uploaded.

        Until the grant is committed nothing is visible in the cache; the uploaded blobs are
        kept from garbage collection meanwhile.

        Raises:
            CacheNotFoundError: no such cache.
            InvalidTileError, TileNotFoundError: a key outside the matrix or the cache's levels.
            InvalidBlobKeyError: a declared SHA-256 that is not 64 lowercase hex characters.
            CacheError: no tiles, too many, one twice, a size out of range, or a store that
                hands out no presigned URLs.
        """
        store = self._presigning()
        definition = self.index.definition(name)
        cache = self.cache(name)
        if not 1 <= len(tiles) <= MAX_GRANT_TILES:
            raise CacheError(f"an upload grant names 1 to {MAX_GRANT_TILES:,} tiles")
        if len({tile for tile, _, _ in tiles}) != len(tiles):
            raise CacheError("an upload grant names each tile once")
        limit = definition.upstream.max_tile_bytes
        for tile, sha256, size in tiles:
            check_key(cache.tms, cache.info, tile)
            check_blob_key(sha256)
            if not 0 < size <= limit:
                raise CacheError(
                    f"tile {tile.z}/{tile.x}/{tile.y}: a size of 1 to {limit:,} bytes, not {size}"
                )
        grant_id = secrets.token_hex(16)
        expires_at = datetime.now(UTC) + expires
        self.index.create_grant(
            Grant(grant_id, name, owner, expires_at.timestamp(), None, tuple(tiles))
        )
        uploads = tuple(
            TileURL(tile, sha256, size, store.presign_put(sha256, expires))
            for tile, sha256, size in tiles
        )
        return UploadGrant(grant_id, name, expires_at, uploads)

    def commit_uploads(self, name: str, grant_id: str, *, owner: str) -> int:
        """Check every tile of a grant in the store (present, hashing to its key, of its size)
        and make them visible in the cache, all or none; tiles that got new bytes.

        Raises:
            GrantNotFoundError: no such grant of ``owner`` for this cache.
            GrantExpiredError: its time is up (the cache is unchanged).
            GrantCommittedError: it was committed already.
            UploadMismatchError: some tiles are missing or damaged (the cache is unchanged; the
                grant may be committed again once they are uploaded, until it expires).
        """
        grant = self.index.grant(grant_id)
        if grant is None or grant.cache != name or grant.owner != owner:
            raise GrantNotFoundError(f"no upload grant {grant_id[:64]!r} of yours for {name!r}")
        if grant.committed is not None:
            raise GrantCommittedError(f"upload grant {grant_id!r} was committed already")
        if time.time() > grant.expires:
            raise GrantExpiredError(f"upload grant {grant_id!r} has expired: ask for a new one")
        failures: list[str] = []
        for tile, sha256, size in grant.tiles:
            where = f"{tile.z}/{tile.x}/{tile.y}"
            try:
                self.blobs.verify(sha256)
                stored = self.blobs.size(sha256)
            except BlobNotFoundError:
                failures.append(f"{where}: not uploaded")
                continue
            except BlobIntegrityError:
                failures.append(f"{where}: its bytes do not hash to {sha256}")
                continue
            if stored != size:
                failures.append(f"{where}: {stored:,} bytes uploaded, {size:,} declared")
        if failures:
            raise UploadMismatchError(
                f"{len(failures)} of {len(grant.tiles)} tiles of upload grant {grant_id!r} "
                f"were refused; nothing was committed: {'; '.join(failures[:5])}",
                failures=failures,
            )
        return self.index.commit_grant(grant_id, time.time())

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
        return self.index.truncate(name, cover_spans(cover), None)

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

    def gc(self, progress: Callable[[int], None] = lambda examined: None) -> GarbageCollection:
        """Delete the blobs no cache's tile names, safely while seeding and serving go on;
        ``progress`` hears how many blobs were examined, every 500."""

        def delete(key: str) -> None:
            with contextlib.suppress(BlobNotFoundError):  # deleted by another collector
                self.blobs.delete(key)

        def keys() -> Iterator[str]:
            for examined, key in enumerate(self.blobs.iter_keys(), 1):
                if examined % 500 == 0:
                    progress(examined)
                yield key

        deleted, examined = self.index.collect(keys(), delete)
        progress(examined)
        return GarbageCollection(examined, deleted)

    def close(self) -> None:
        """Write counters, close sources, the index, the blob store's connections and every
        upstream client made here."""
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
        close_blobs = getattr(self.blobs, "close", None)  # a store with connections of its own
        if callable(close_blobs):
            close_blobs()


def _upstream(definition: CacheDefinition, client: httpx.Client | None) -> UpstreamFetcher:
    settings = definition.upstream
    return UpstreamFetcher(
        definition.source.location,
        definition.format,
        also=definition.tile_formats,
        client=client,
        timeout_s=settings.timeout_s,
        max_bytes=settings.max_tile_bytes,
    )


def _limited(name: str, fetcher: UpstreamFetcher, limiter: RateLimiter) -> Fetch:
    def fetch(tile: Tile) -> bytes:
        limiter.acquire()
        return fetcher.fetch(tile, f"cache {name!r}, tile {tile.z}/{tile.x}/{tile.y}")

    return fetch


def upstream_fetch(definition: CacheDefinition, rate: float) -> tuple[Fetch, Callable[[], None]]:
    """A fetch from a cache's upstream at ``rate`` requests per second, with its own client,
    and what closes it: a seed's worker process makes its own with this."""
    fetcher = _upstream(definition, None)
    return _limited(definition.name, fetcher, RateLimiter(rate)), fetcher.close


def _spans_after(cover: TileCover, zooms: ZoomRange, after: Tile | None) -> Iterator[Span]:
    """The row spans of a cover, by level, row and column, from just after ``after``."""
    for span in cover_spans(cover, zooms):
        if after is None or (span.z, span.y) > (after.z, after.y):
            yield span
        elif (span.z, span.y) == (after.z, after.y) and after.x < span.stop:
            yield Span(span.z, span.y, max(span.start, after.x + 1), span.stop)


def _seconds(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _refuse_mixed_archive(definition: CacheDefinition, found: ArchiveTileSource) -> None:
    """Refuse a mixed archive (an Esri cache whose ``conf.xml`` says ``MIXED``: PNG and JPEG
    tiles) as the source of a cache of one format, which would store its JPEG tiles as PNG's.

    Raises:
        CacheError: naming the source and the format to give.
    """
    with open_reader(found.location) as reader:
        mixed = reader.metadata.mixed
    if mixed:
        raise CacheError(
            f"cache {definition.name!r} is {definition.format_name}, but its source "
            f"{definition.source.location!r} is mixed (PNG and JPEG tiles): give format "
            '"mixed"'
        )


class _OpenedOnUse:
    """A cache's archive or layer source, opened when a tile is first fetched from it, so that
    a cache whose source went away still serves, lists and exports what it holds (each fetch
    of a tile it lacks then fails with why). Only an archive opened here is closed here: a
    layer is the server's."""

    def __init__(self, open_source: Callable[[], TileSource], kind: SourceKind) -> None:
        self._open = open_source
        self._kind = kind
        self._lock = threading.Lock()
        self._source: TileSource | None = None
        self._closed = False

    def get_tile(self, tile: Tile) -> bytes:
        """The source's tile (``CacheError`` when the source cannot be opened)."""
        with self._lock:
            if self._closed:
                raise CacheError("the cache's source is closed")
            if self._source is None:
                self._source = self._open()
            source = self._source
        return source.get_tile(tile)

    def close(self) -> None:
        """Close an archive opened here."""
        with self._lock:
            self._closed = True
            source, self._source = self._source, None
        if self._kind is SourceKind.ARCHIVE and isinstance(source, ArchiveTileSource):
            source.close()
