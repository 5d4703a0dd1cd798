"""Vector tiles made on the fly from the spatial layers of a feature service.

Each feature service with spatial layers is also a vector tile service, ``<service>-vt``: one
Mapbox vector tile layer per feature layer, in WebMercatorQuad. A tile is made by reading the
features whose envelope meets the tile (plus a buffer) from the store, projecting them to Web
Mercator, clipping them to the buffered tile and encoding them with ``mapbox-vector-tile``.

Made tiles are kept in a memory LRU cache tagged with the store's generation: the first request
after any edit starts a fresh cache, so a tile never shows data older than the last commit.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import date, datetime
from functools import cache

import mapbox_vector_tile
import morecantile
import numpy as np
import shapely
from morecantile import BoundingBox, TileMatrixSet
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry

from offmaps.errors import TileNotFoundError
from offmaps.features.model import FeatureQuery, LayerSchema
from offmaps.features.store import FeatureStore
from offmaps.sources.base import TileSourceInfo
from offmaps.sources.cache import MemoryTileCache
from offmaps.tiling import get_tms
from offmaps.types import BBox, Tile, TileFormat

__all__ = ["BUFFER", "EXTENT", "MAX_FEATURES_PER_TILE", "FeatureVectorTiles"]

EXTENT = 4096
"""Tile coordinate extent."""
BUFFER = 64
"""Tile coordinates drawn beyond each edge, so lines and fills join across tiles."""
MAX_FEATURES_PER_TILE = 20_000
"""Features encoded per layer and tile at most; a denser tile keeps the first ones."""
_CLIP = shapely.box(-BUFFER, -BUFFER, EXTENT + BUFFER, EXTENT + BUFFER)
_MIN_ZOOM = 10
_MAX_ZOOM = 18


@cache
def _to_mercator(srid: int) -> Transformer:
    return Transformer.from_crs(srid, 3857, always_xy=True)


@cache
def _from_mercator(srid: int) -> Transformer:
    return Transformer.from_crs(3857, srid, always_xy=True)


def _value(value: object) -> str | int | float | bool | None:
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    return None if value is None else str(value)


def _search_box(layer: LayerSchema, bounds: BoundingBox) -> tuple[float, float, float, float]:
    """The tile's Web Mercator ``bounds`` with the buffer, in the layer's CRS."""
    pad = BUFFER / (EXTENT / (bounds.right - bounds.left))  # as the tile's scale gives it
    search = (bounds.left - pad, bounds.bottom - pad, bounds.right + pad, bounds.top + pad)
    if layer.srid != 3857:
        search = _from_mercator(layer.srid).transform_bounds(*search)
    return search


class FeatureVectorTiles:
    """The ``<service>-vt`` vector tile service of a feature service (see the module docs).

    The layers are read from the store on every use, so layers added later are drawn too.

    Args:
        name: the tile service name.
        store: the feature service.
        cache_bytes: the memory cache budget.
    """

    def __init__(
        self, name: str, store: FeatureStore, *, cache_bytes: int = 32 * 1024 * 1024
    ) -> None:
        self.name = name
        self._store = store
        self.tms: TileMatrixSet = get_tms("WebMercatorQuad")
        self._cache_bytes = cache_bytes
        self._lock = threading.Lock()
        self._generation = -1
        self._cache = MemoryTileCache(cache_bytes)

    @property
    def store(self) -> FeatureStore:
        """The feature service the tiles are made of."""
        return self._store

    def spatial_layers(self) -> list[LayerSchema]:
        """The layers a tile is made of (one vector tile layer each), in the store's order."""
        return [layer for layer in self._store.list_layers() if not layer.is_table]

    def search_box(self, layer: LayerSchema, tile: Tile) -> tuple[float, float, float, float]:
        """The box, in the layer's CRS, a tile's features of ``layer`` are read with: a
        feature whose envelope does not meet it is in no way part of the tile."""
        return _search_box(layer, self.tms.xy_bounds(morecantile.Tile(tile.x, tile.y, tile.z)))

    @property
    def info(self) -> TileSourceInfo:
        """What the service is."""
        return TileSourceInfo(
            name=self.name,
            title=f"{self.name} (vector tiles of its feature layers)",
            tms_id="WebMercatorQuad",
            tile_format=TileFormat.MVT,
            min_zoom=_MIN_ZOOM,
            max_zoom=_MAX_ZOOM,
            vector_layers=[layer.name for layer in self.spatial_layers()],
            description="made on the fly from the feature service",
        )

    def _current_cache(self) -> tuple[MemoryTileCache, int]:
        generation = self._store.generation()
        with self._lock:
            if generation != self._generation:
                self._generation = generation
                self._cache = MemoryTileCache(self._cache_bytes)
            return self._cache, generation

    def get_tile(self, tile: Tile) -> bytes:
        """The MVT bytes of ``tile``; ``TileNotFoundError`` when no feature is in it."""
        if not _MIN_ZOOM <= tile.z <= _MAX_ZOOM:
            raise TileNotFoundError(f"vector tiles are made for zooms {_MIN_ZOOM}-{_MAX_ZOOM}")
        matrix = self.tms.matrix(tile.z)
        if not (0 <= tile.x < matrix.matrixWidth and 0 <= tile.y < matrix.matrixHeight):
            raise TileNotFoundError(f"tile {tile.z}/{tile.x}/{tile.y} is outside the matrix")
        cache, _ = self._current_cache()
        data = cache.find(tile)
        if data is None:
            data = self._make(tile)
            cache.put(tile, data)
        if not data:
            raise TileNotFoundError(f"no features in tile {tile.z}/{tile.x}/{tile.y}")
        return data

    def _make(self, tile: Tile) -> bytes:
        bounds = self.tms.xy_bounds(morecantile.Tile(tile.x, tile.y, tile.z))
        encoded_layers = []
        for layer in self.spatial_layers():
            features = self._layer_features(layer, bounds)
            if features:
                encoded_layers.append({"name": layer.name, "features": features})
        if not encoded_layers:
            return b""
        data: bytes = mapbox_vector_tile.encode(encoded_layers, default_options={"extents": EXTENT})
        return data

    def _layer_features(
        self, layer: LayerSchema, bounds: BoundingBox
    ) -> list[Mapping[str, object]]:
        """The layer's features in the tile, in tile coordinates (y up, 0..EXTENT)."""
        left, bottom = bounds.left, bounds.bottom
        scale = EXTENT / (bounds.right - left)
        search = _search_box(layer, bounds)
        project = _to_mercator(layer.srid)

        def to_tile(xy: np.ndarray) -> np.ndarray:
            x, y = (
                (xy[:, 0], xy[:, 1])
                if layer.srid == 3857
                else project.transform(xy[:, 0], xy[:, 1])
            )
            return np.column_stack(((x - left) * scale, (y - bottom) * scale))

        features: list[Mapping[str, object]] = []
        for feature in self._store.iter_features(layer.name, FeatureQuery(bbox=BBox(*search))):
            if feature.geometry is None:
                continue
            geometry = _clipped(shapely.transform(feature.geometry, to_tile))
            if geometry.is_empty:
                continue
            properties = {
                key: value
                for key, value in ((k, _value(v)) for k, v in feature.properties.items())
                if value is not None
            }
            properties["globalid"] = str(feature.global_id)
            features.append({"geometry": geometry, "properties": properties})
            if len(features) >= MAX_FEATURES_PER_TILE:
                break
        return features

    def close(self) -> None:
        """Nothing to release: the feature service is closed by its owner."""


def _clipped(geometry: BaseGeometry) -> BaseGeometry:
    """``geometry`` clipped to the buffered tile; an invalid one (a polygon crossing itself, as
    stores imported from OpenStreetMap hold) is made valid first, as GEOS cannot clip it."""
    try:
        return shapely.intersection(geometry, _CLIP)
    except shapely.errors.GEOSException:
        return shapely.intersection(shapely.make_valid(geometry), _CLIP)
