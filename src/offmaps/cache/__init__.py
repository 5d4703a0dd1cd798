"""The tile cache service: named caches of tiles, stored once per distinct content.

Layer 6 of DESIGN.md, beside :mod:`offmaps.offline`. A cache is a named (source, tile matrix
set, format) (:class:`CacheDefinition`); its tiles' bytes live in a
:class:`~offmaps.storage.BlobStore` under their SHA-256, shared by every cache, and the
:class:`TileIndex` maps each cache's ``(z, x, y)`` to a blob (:class:`SQLiteTileIndex` in the
data folder by default). :class:`TileCache` serves one cache as a tile source, fetching a
missing tile from the source once however many ask (read-through); :func:`seed` fills an area
ahead; :class:`TileCacheService` ties them together with statistics, verification, cleanup and
garbage collection (docs/cache.md).
"""

from offmaps.cache.index import (
    PENDING_EXPIRY_S,
    Grant,
    IndexedTile,
    Span,
    SQLiteTileIndex,
    TileIndex,
    Usage,
)
from offmaps.cache.model import (
    CACHE_NAME,
    CacheDefinition,
    CacheSource,
    CacheStats,
    SourceKind,
    UpstreamSettings,
    ZoomStats,
)
from offmaps.cache.seed import (
    CHUNK_TILES,
    RateLimiter,
    SeedPlan,
    SeedProgress,
    plan_seed,
    seed,
)
from offmaps.cache.service import (
    DEFAULT_URL_EXPIRY,
    MAX_GRANT_TILES,
    MAX_URLS_PAGE,
    GarbageCollection,
    StoreStats,
    TileCacheService,
    TileURL,
    UploadGrant,
    VerifyReport,
)
from offmaps.cache.tiles import USAGE_FLUSH_S, Fetch, TileCache, store_tiles

__all__ = [
    "CACHE_NAME",
    "CHUNK_TILES",
    "DEFAULT_URL_EXPIRY",
    "MAX_GRANT_TILES",
    "MAX_URLS_PAGE",
    "PENDING_EXPIRY_S",
    "USAGE_FLUSH_S",
    "CacheDefinition",
    "CacheSource",
    "CacheStats",
    "Fetch",
    "GarbageCollection",
    "Grant",
    "IndexedTile",
    "RateLimiter",
    "SQLiteTileIndex",
    "SeedPlan",
    "SeedProgress",
    "SourceKind",
    "Span",
    "StoreStats",
    "TileCache",
    "TileCacheService",
    "TileIndex",
    "TileURL",
    "UploadGrant",
    "UpstreamSettings",
    "Usage",
    "VerifyReport",
    "ZoomStats",
    "plan_seed",
    "seed",
    "store_tiles",
]
