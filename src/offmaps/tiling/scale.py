"""Map scales to zoom levels and back, ArcGIS style.

ArcGIS expresses a layer's visible range as ``min_scale`` (the most zoomed-out scale denominator,
e.g. 1:1,000,000) and ``max_scale`` (the most zoomed-in, e.g. 1:5,000), with 0 meaning unbounded.
ArcGIS scales assume 96 DPI screens and 39.37 inches per metre, OGC scale denominators 0.28 mm
pixels (about 90.7 DPI), so an ArcGIS scale is the OGC scale denominator times 0.00028 * 96 * 39.37.
WebMercatorQuad level 0 is then 1:591,657,527.59 as in ArcGIS's own tiling scheme, and
1:559,082,264.03 in OGC terms.
"""

from __future__ import annotations

import math

from morecantile import TileMatrixSet

from offmaps.errors import InvalidScaleRangeError
from offmaps.types import ZoomRange

__all__ = ["ARCGIS_PER_OGC", "scale_for_zoom", "zoom_for_scale", "zooms_for_scale_range"]

ARCGIS_PER_OGC = 0.00028 * 96 * 39.37
"""Ratio of an ArcGIS (96 DPI) scale to the OGC (0.28 mm pixel) scale denominator."""

_REL_TOL = 1e-6


def scale_for_zoom(tms: TileMatrixSet, z: int) -> float:
    """The ArcGIS-style scale denominator of level ``z``."""
    return float(tms.matrix(z).scaleDenominator) * ARCGIS_PER_OGC


def zoom_for_scale(tms: TileMatrixSet, scale: float) -> int:
    """The level whose scale is nearest to ``scale`` (in log terms)."""
    if not (math.isfinite(scale) and scale > 0):
        raise InvalidScaleRangeError(f"scale {scale} must be a positive number")
    levels = range(tms.minzoom, tms.maxzoom + 1)
    return min(levels, key=lambda z: abs(math.log(scale_for_zoom(tms, z) / scale)))


def zooms_for_scale_range(
    tms: TileMatrixSet, min_scale: float = 0, max_scale: float = 0
) -> ZoomRange:
    """The levels of ``tms`` whose scale lies within ``[max_scale, min_scale]``.

    Args:
        tms: the tile matrix set.
        min_scale: the most zoomed-out scale denominator to include; 0 means no limit.
        max_scale: the most zoomed-in scale denominator to include; 0 means no limit.

    Raises:
        InvalidScaleRangeError: for negative or non-finite scales, an inverted range, or a range
            that holds no level.
    """
    for name, value in (("min_scale", min_scale), ("max_scale", max_scale)):
        if not math.isfinite(value) or value < 0:
            raise InvalidScaleRangeError(
                f"{name} must be 0 (no limit) or a positive number, not {value}"
            )
    if min_scale and max_scale and min_scale < max_scale:
        raise InvalidScaleRangeError(
            f"min_scale 1:{min_scale:,.0f} is more zoomed in than max_scale 1:{max_scale:,.0f}; "
            "min_scale is the larger denominator"
        )
    levels = [
        z
        for z in range(tms.minzoom, tms.maxzoom + 1)
        if (not min_scale or scale_for_zoom(tms, z) <= min_scale * (1 + _REL_TOL))
        and (not max_scale or scale_for_zoom(tms, z) >= max_scale * (1 - _REL_TOL))
    ]
    if not levels:
        raise InvalidScaleRangeError(
            f"no level of {tms.id} lies between 1:{min_scale:,.0f} and 1:{max_scale:,.0f}"
        )
    return ZoomRange(levels[0], levels[-1])
