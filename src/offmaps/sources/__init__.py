"""Tile sources: where tiles come from, read the same way by the server, caches and jobs.

Layer 3 of DESIGN.md. A :class:`TileSource` answers ``get_tile(Tile)`` and describes itself with
a :class:`TileSourceInfo`. Kinds: tile archives (:class:`ArchiveTileSource`), an upstream XYZ
server read through a SQLite cache (:class:`UpstreamTileSource`), a function
(:class:`FunctionTileSource`), and vector tiles built from a feature service's layers
(:class:`FeatureVectorTiles`). No HTTP server code lives here.
"""

from offmaps.sources.archive import ArchiveTileSource
from offmaps.sources.base import TileSource, TileSourceInfo, check_key, describe_tile, source_tms
from offmaps.sources.cache import MemoryTileCache, SQLiteTileCache
from offmaps.sources.function import FunctionTileSource
from offmaps.sources.upstream import (
    MAX_UPSTREAM_TILE_BYTES,
    USER_AGENT,
    UpstreamFetcher,
    UpstreamTileSource,
)
from offmaps.sources.vector import EXTENT, MAX_FEATURES_PER_TILE, FeatureVectorTiles

__all__ = [
    "EXTENT",
    "MAX_FEATURES_PER_TILE",
    "MAX_UPSTREAM_TILE_BYTES",
    "USER_AGENT",
    "ArchiveTileSource",
    "FeatureVectorTiles",
    "FunctionTileSource",
    "MemoryTileCache",
    "SQLiteTileCache",
    "TileSource",
    "TileSourceInfo",
    "UpstreamFetcher",
    "UpstreamTileSource",
    "check_key",
    "describe_tile",
    "source_tms",
]
