"""Tiling maths: tile matrix sets, areas of interest, exact tile cover, scales, estimates.

Pure: no file or network I/O.
"""

from offmaps.tiling.aoi import MAX_AOI_VERTICES, AOIRepairedWarning, AreaOfInterest, parse_crs
from offmaps.tiling.area import MAX_AREA_BYTES, Area, area_from_bbox
from offmaps.tiling.cover import TileCover, ZoomCover, check_zooms, tile_cover
from offmaps.tiling.estimate import DEFAULT_TILE_BYTES, LevelEstimate, TileEstimate, estimate_tiles
from offmaps.tiling.scale import scale_for_zoom, zoom_for_scale, zooms_for_scale_range
from offmaps.tiling.tms import (
    DEFAULT_TMS_ID,
    check_compatible,
    find_incompatibility,
    get_tms,
    list_tms,
    tms_crs,
    tms_from_json,
)

__all__ = [
    "DEFAULT_TILE_BYTES",
    "DEFAULT_TMS_ID",
    "MAX_AOI_VERTICES",
    "MAX_AREA_BYTES",
    "AOIRepairedWarning",
    "Area",
    "AreaOfInterest",
    "LevelEstimate",
    "TileCover",
    "TileEstimate",
    "ZoomCover",
    "area_from_bbox",
    "check_compatible",
    "check_zooms",
    "estimate_tiles",
    "find_incompatibility",
    "get_tms",
    "list_tms",
    "parse_crs",
    "scale_for_zoom",
    "tile_cover",
    "tms_crs",
    "tms_from_json",
    "zoom_for_scale",
    "zooms_for_scale_range",
]
