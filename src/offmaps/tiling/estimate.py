"""Estimates before any download: tile counts per level and bytes.

Bytes come from per-level average tile sizes when a source's statistics are known; otherwise from a
documented default per tile format (see :data:`DEFAULT_TILE_BYTES`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from offmaps.tiling.cover import TileCover
from offmaps.types import TileFormat

__all__ = ["DEFAULT_TILE_BYTES", "LevelEstimate", "TileEstimate", "estimate_tiles"]

DEFAULT_TILE_BYTES: Mapping[TileFormat, int] = {
    TileFormat.PNG: 25_000,
    TileFormat.JPEG: 18_000,
    TileFormat.WEBP: 12_000,
    TileFormat.MVT: 30_000,
}
"""Average bytes per tile assumed when a source has no statistics: typical of 256 px OSM-style
basemap tiles (PNG, JPEG at quality 75-85, WebP) and of uncompressed OpenMapTiles-like MVT."""


@dataclass(frozen=True)
class LevelEstimate:
    """Tiles and bytes at one level; ``measured`` tells whether the size came from statistics."""

    z: int
    tiles: int
    bytes: int
    measured: bool


@dataclass(frozen=True)
class TileEstimate:
    """An estimate over several levels."""

    levels: tuple[LevelEstimate, ...]

    @property
    def tiles(self) -> int:
        """Total tile count."""
        return sum(level.tiles for level in self.levels)

    @property
    def bytes(self) -> int:
        """Total estimated bytes."""
        return sum(level.bytes for level in self.levels)


def estimate_tiles(
    cover: TileCover,
    tile_format: TileFormat,
    average_tile_bytes: Mapping[int, float] | None = None,
) -> TileEstimate:
    """Tile count and bytes per level of ``cover``.

    Args:
        cover: the tiles to estimate.
        tile_format: used for the default size when a level has no statistics.
        average_tile_bytes: measured mean tile size per level, e.g. from a cache's statistics.
            Levels missing from it use the nearest measured level, else the format default.
    """
    measured = dict(average_tile_bytes or {})
    levels = []
    for z, count in cover.counts().items():
        if z in measured:
            size, is_measured = measured[z], True
        elif measured:
            nearest = min(measured, key=lambda m: abs(m - z))
            size, is_measured = measured[nearest], True
        else:
            size, is_measured = DEFAULT_TILE_BYTES[tile_format], False
        levels.append(LevelEstimate(z, count, round(count * size), is_measured))
    return TileEstimate(tuple(levels))
