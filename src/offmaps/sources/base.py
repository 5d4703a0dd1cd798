"""The tile source protocol: what a tile service says about itself, and its tiles.

A :class:`TileSource` answers ``get_tile(Tile)`` and describes itself with a
:class:`TileSourceInfo`. The server, the tile cache service and jobs all read tiles through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from morecantile import TileMatrixSet

from offmaps.containers.base import check_tile_in_matrix
from offmaps.errors import (
    InvalidZoomError,
    TileNotFoundError,
)
from offmaps.tiling.tms import get_tms
from offmaps.types import BBox, Tile, TileCompression, TileFormat

__all__ = [
    "TileSource",
    "TileSourceInfo",
    "WithTileMatrixSet",
    "check_key",
    "describe_tile",
    "source_tms",
]


@dataclass(frozen=True)
class TileSourceInfo:
    """What a tile service says about itself (TileJSON, OGC tilesets, offline capabilities).

    Attributes:
        name: the name in URLs (``/tiles/{name}/...``).
        title: a human title.
        tms_id: id of the tile matrix set the tile keys refer to.
        tile_format: encoding of every tile.
        min_zoom: lowest level served.
        max_zoom: highest level served.
        bounds: WGS84 ``(west, south, east, north)`` of the data, or None for the whole matrix.
        attribution: attribution text or HTML, shown with the tiles.
        export_tiles_allowed: whether offline packages may copy these tiles.
        max_export_tile_count: the most tiles one export may take.
        vector_layers: layer names inside each vector tile (MVT only; may be empty).
        tile_compression: transfer compression of the stored bytes (``gzip`` for many MVT
            archives); served as ``Content-Encoding``.
        description: free text.

    Raises:
        InvalidZoomError: when the zoom range is negative or inverted.
    """

    name: str
    title: str
    tms_id: str
    tile_format: TileFormat
    min_zoom: int
    max_zoom: int
    bounds: BBox | None = None
    attribution: str = ""
    export_tiles_allowed: bool = True
    max_export_tile_count: int = 100_000
    vector_layers: Sequence[str] = ()
    tile_compression: TileCompression = TileCompression.NONE
    description: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.min_zoom <= self.max_zoom:
            raise InvalidZoomError(
                f"tile layer {self.name!r}: zoom range {self.min_zoom}-{self.max_zoom} is "
                "negative or inverted",
                zoom=self.min_zoom,
            )
        object.__setattr__(self, "vector_layers", tuple(self.vector_layers))


@runtime_checkable
class TileSource(Protocol):
    """A tile service: its description and its tiles. Implementations are thread-safe."""

    @property
    def info(self) -> TileSourceInfo:
        """What the service says about itself."""
        ...

    def get_tile(self, tile: Tile) -> bytes:
        """The bytes of ``tile``.

        Raises:
            InvalidTileError: when the key is outside the tile matrix set.
            TileNotFoundError: when the tile is absent or outside the service's zoom range.
        """
        ...


@runtime_checkable
class WithTileMatrixSet(Protocol):
    """A source that carries its own tile matrix set object (custom ones are not registered)."""

    @property
    def tms(self) -> TileMatrixSet:
        """The tile matrix set the source's keys refer to."""
        ...


def source_tms(source: TileSource) -> TileMatrixSet:
    """The tile matrix set of a source: its own object when it has one (custom ones), else by id."""
    if isinstance(source, WithTileMatrixSet):
        return source.tms
    return get_tms(source.info.tms_id)


def check_key(tms: TileMatrixSet, info: TileSourceInfo, tile: Tile) -> None:
    """Refuse a key outside the matrix set (``InvalidTileError``) or the source's levels
    (``TileNotFoundError``)."""
    check_tile_in_matrix(tms, tile)
    if not info.min_zoom <= tile.z <= info.max_zoom:
        raise TileNotFoundError(
            f"tile layer {info.name!r} has no level {tile.z} "
            f"(it serves {info.min_zoom}-{info.max_zoom})"
        )


def describe_tile(info: TileSourceInfo, tile: Tile) -> str:
    """How errors name a tile of a source: ``tile layer 'name', tile z/x/y``."""
    return f"tile layer {info.name!r}, tile {tile.z}/{tile.x}/{tile.y}"
