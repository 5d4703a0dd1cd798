"""Tiles made by a function, with an optional memory cache."""

from __future__ import annotations

from collections.abc import Callable

from morecantile import TileMatrixSet

from offmaps.sources.base import TileSourceInfo, check_key
from offmaps.sources.cache import MemoryTileCache
from offmaps.tiling.tms import get_tms
from offmaps.types import Tile

__all__ = ["FunctionTileSource"]


class FunctionTileSource:
    """Tiles made by a function, e.g. vector tiles encoded on the fly from a feature layer.

    Args:
        info: what the service is; ``info.tms_id`` must be a registered tile matrix set.
        fn: makes the bytes of one tile; raises TileNotFoundError when there is none. Called
            from several threads at once.
        cache_bytes: budget of an in-memory LRU cache of made tiles; 0 (the default) for none.

    Raises:
        UnknownTileMatrixSetError: when ``info.tms_id`` is not registered.
    """

    def __init__(
        self, info: TileSourceInfo, fn: Callable[[Tile], bytes], *, cache_bytes: int = 0
    ) -> None:
        self._info = info
        self._fn = fn
        self.tms: TileMatrixSet = get_tms(info.tms_id)
        self._cache = MemoryTileCache(cache_bytes) if cache_bytes > 0 else None

    @property
    def info(self) -> TileSourceInfo:
        """What the service is."""
        return self._info

    def get_tile(self, tile: Tile) -> bytes:
        """The bytes of ``tile``, from the memory cache or the function.

        Raises:
            InvalidTileError: when the key is outside the tile matrix set.
            TileNotFoundError: outside the zoom range, or when the function has no tile.
        """
        check_key(self.tms, self._info, tile)
        if self._cache is None:
            return self._fn(tile)
        data = self._cache.find(tile)
        if data is None:
            data = self._fn(tile)
            self._cache.put(tile, data)
        return data
