"""A vector tile layer of the extract's OSM buildings, as a PMTiles archive.

Each building (a closed way or multipolygon relation tagged ``building=*``) is projected to Web
Mercator once; for every tile it meets, it is moved to tile coordinates, clipped to the tile plus
a buffer of :data:`BUFFER` units, snapped to the integer grid of :data:`EXTENT` (which keeps it
valid) and encoded with ``mapbox-vector-tile`` in one layer, ``buildings``. Tiles are gzipped, as
MVT in PMTiles usually are.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import morecantile
import numpy as np
import numpy.typing as npt
import pyproj
import shapely

from offmaps.containers import TilesetMetadata, open_writer
from offmaps.sample._osm import OsmLayer
from offmaps.tiling import AreaOfInterest, get_tms, tile_cover
from offmaps.types import BBox, TileCompression, TileFormat, ZoomRange

__all__ = ["BUFFER", "BUILDINGS_LAYER", "EXTENT", "write_building_tiles"]

BUILDINGS_LAYER = "buildings"
EXTENT = 4096
"""Tile coordinate extent."""
BUFFER = 64
"""Tile coordinates kept beyond each edge, so fills and outlines join across tiles."""

_CLIP = shapely.box(-BUFFER, -BUFFER, EXTENT + BUFFER, EXTENT + BUFFER)
_POLYGONAL = ("Polygon", "MultiPolygon")


@dataclass(frozen=True, slots=True)
class _Building:
    osm_id: int
    properties: dict[str, str | int]


def _buildings(areas: OsmLayer) -> tuple[list[_Building], list[Any]]:
    to_mercator = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)

    def project(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x, y = to_mercator.transform(xy[:, 0], xy[:, 1])
        return np.column_stack((x, y))

    buildings: list[_Building] = []
    shapes: list[Any] = []
    for row, wkb in enumerate(areas.geometries):
        building = areas.value("building", row)
        # a closed way has osm_way_id, a multipolygon relation osm_id
        osm_id = areas.value("osm_id", row) or areas.value("osm_way_id", row)
        if wkb is None or not building or osm_id is None:
            continue
        # the extract is not referentially complete: drop what does not make a valid shape
        geometry = shapely.from_wkb(wkb, on_invalid="ignore")
        if geometry is None or geometry.is_empty:
            continue
        if not geometry.is_valid:
            geometry = shapely.make_valid(geometry)
        properties: dict[str, str | int] = {"osm_id": int(osm_id), "building": building}
        name = areas.value("name", row)
        if name:
            properties["name"] = name
        buildings.append(_Building(int(osm_id), properties))
        shapes.append(shapely.transform(geometry, project))
    return buildings, shapes


def _polygonal(geometry: Any) -> Any:
    """The polygons of ``geometry`` (a clip can leave lines and points), or ``None``."""
    if geometry.is_empty:
        return None
    if geometry.geom_type in _POLYGONAL:
        return geometry
    parts = [g for g in shapely.get_parts(geometry) if g.geom_type in _POLYGONAL]
    if not parts:
        return None
    return shapely.union_all(parts)


def _to_tile(geometry: Any, left: float, bottom: float, scale: float) -> Any:
    """``geometry`` in the coordinates of a tile whose lower left corner is (left, bottom)."""

    def move(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return (xy - (left, bottom)) * scale

    return shapely.transform(geometry, move)


def write_building_tiles(path: Path, areas: OsmLayer, zooms: ZoomRange, *, attribution: str) -> int:
    """Write the buildings of the ``multipolygons`` layer as gzipped MVT tiles at ``zooms``.

    Returns:
        The number of tiles written (tiles without buildings are left out).
    """
    import mapbox_vector_tile  # noqa: PLC0415 - optional: the server extra

    buildings, shapes = _buildings(areas)
    if not buildings:
        return 0
    tree = shapely.STRtree(shapes)
    tms = get_tms("WebMercatorQuad")
    west, south, east, north = pyproj.Transformer.from_crs(
        3857, 4326, always_xy=True
    ).transform_bounds(*shapely.total_bounds(shapes))
    bounds = BBox(west, south, east, north)
    meta = TilesetMetadata(
        tile_format=TileFormat.MVT,
        name="OpenStreetMap buildings",
        tile_compression=TileCompression.GZIP,
        bounds=bounds,
        minzoom=zooms.min,
        maxzoom=zooms.max,
        description="Buildings of an OpenStreetMap extract",
        attribution=attribution,
        vector_layers=[
            {
                "id": BUILDINGS_LAYER,
                "description": "OSM buildings",
                "minzoom": zooms.min,
                "maxzoom": zooms.max,
                "fields": {"osm_id": "Number", "building": "String", "name": "String"},
            }
        ],
    )
    written = 0
    with open_writer(path, meta) as writer:
        for tile in tile_cover(AreaOfInterest.from_bbox(*bounds), tms, zooms):
            b = tms.xy_bounds(morecantile.Tile(tile.x, tile.y, tile.z))
            scale = EXTENT / (b.right - b.left)
            pad = BUFFER / scale
            search = shapely.box(b.left - pad, b.bottom - pad, b.right + pad, b.top + pad)

            features = []
            for index in sorted(int(i) for i in tree.query(search, predicate="intersects")):
                local = _to_tile(shapes[index], b.left, b.bottom, scale)
                clipped = shapely.set_precision(shapely.intersection(local, _CLIP), 1.0)
                geometry = _polygonal(clipped)
                if geometry is not None:
                    features.append(
                        {"geometry": geometry, "properties": buildings[index].properties}
                    )
            if not features:
                continue
            data: bytes = mapbox_vector_tile.encode(
                [{"name": BUILDINGS_LAYER, "features": features}],
                default_options={"extents": EXTENT},
            )
            writer.write_tile(tile, gzip.compress(data, mtime=0))
            written += 1
    return written
