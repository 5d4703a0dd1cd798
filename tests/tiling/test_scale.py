from __future__ import annotations

import math

import pytest

from offmaps.errors import InvalidScaleRangeError
from offmaps.tiling import (
    AreaOfInterest,
    estimate_tiles,
    get_tms,
    scale_for_zoom,
    tile_cover,
    zoom_for_scale,
    zooms_for_scale_range,
)
from offmaps.tiling.estimate import DEFAULT_TILE_BYTES
from offmaps.types import TileFormat, ZoomRange

WEB_MERCATOR = get_tms()


def test_scales_match_arcgis_web_mercator_lods() -> None:
    # ArcGIS Online's tiling scheme: LOD 0 and LOD 19
    assert math.isclose(scale_for_zoom(WEB_MERCATOR, 0), 591657527.591555, rel_tol=1e-9)
    assert math.isclose(scale_for_zoom(WEB_MERCATOR, 19), 1128.497176, rel_tol=1e-6)
    assert zoom_for_scale(WEB_MERCATOR, 9028) == 16


def test_scale_range_to_zooms() -> None:
    assert zooms_for_scale_range(WEB_MERCATOR, 0, 0) == ZoomRange(0, 24)
    assert zooms_for_scale_range(WEB_MERCATOR, 1_000_000, 10_000) == ZoomRange(10, 15)
    assert zooms_for_scale_range(WEB_MERCATOR, 900_000, 5_000) == ZoomRange(10, 16)
    # exact LOD scales are included
    assert zooms_for_scale_range(WEB_MERCATOR, 591657527.591555, 295828763.795777) == ZoomRange(
        0, 1
    )


@pytest.mark.parametrize(
    ("low", "high", "message"),
    [
        (-1, 0, "min_scale must be 0"),
        (0, math.nan, "max_scale must be 0"),
        (5_000, 1_000_000, "more zoomed in"),
        (1_000_000, 900_000, "no level"),
    ],
)
def test_bad_scale_ranges(low: float, high: float, message: str) -> None:
    with pytest.raises(InvalidScaleRangeError, match=message):
        zooms_for_scale_range(WEB_MERCATOR, low, high)


def test_estimates_use_statistics_when_known() -> None:
    cover = tile_cover(
        AreaOfInterest.from_bbox(24.935, 60.164, 24.953, 60.179), WEB_MERCATOR, ZoomRange(14, 16)
    )
    default = estimate_tiles(cover, TileFormat.PNG)
    assert default.tiles == 4 + 9 + 24
    assert default.bytes == default.tiles * DEFAULT_TILE_BYTES[TileFormat.PNG]
    assert not any(level.measured for level in default.levels)
    measured = estimate_tiles(cover, TileFormat.PNG, {14: 1000, 15: 2000})
    assert [level.bytes for level in measured.levels] == [4000, 18000, 48000]
    assert all(level.measured for level in measured.levels)
