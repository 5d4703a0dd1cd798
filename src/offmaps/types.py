"""Shared value types and aliases used across offmaps layers."""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

__all__ = ["BBox", "Tile", "TileCompression", "TileFormat", "ZoomRange"]


class Tile(NamedTuple):
    """One tile of a tile matrix set: column ``x``, row ``y`` counted from the top, level ``z``.

    This is the only tile key in offmaps. Row flips (TMS, MBTiles) live inside the containers that
    need them.
    """

    x: int
    y: int
    z: int


class BBox(NamedTuple):
    """An axis-aligned box ``(west, south, east, north)``, in the units of its CRS."""

    west: float
    south: float
    east: float
    north: float


class ZoomRange(NamedTuple):
    """An inclusive range of zoom levels."""

    min: int
    max: int

    def __contains__(self, z: object) -> bool:
        return isinstance(z, int) and self.min <= z <= self.max

    def levels(self) -> range:
        """The levels of the range, lowest first."""
        return range(self.min, self.max + 1)


class TileFormat(StrEnum):
    """The encoding of tile contents, recorded with every tile set."""

    PNG = "png"
    JPEG = "jpg"
    WEBP = "webp"
    MVT = "pbf"

    @property
    def is_raster(self) -> bool:
        """Whether the tiles are images."""
        return self is not TileFormat.MVT

    @property
    def media_type(self) -> str:
        """The IANA media type of one tile."""
        return _MEDIA_TYPES[self]


_MEDIA_TYPES = {
    TileFormat.PNG: "image/png",
    TileFormat.JPEG: "image/jpeg",
    TileFormat.WEBP: "image/webp",
    TileFormat.MVT: "application/vnd.mapbox-vector-tile",
}


class TileCompression(StrEnum):
    """Transfer compression applied to each tile's bytes (vector tiles are often gzipped)."""

    NONE = "none"
    GZIP = "gzip"
