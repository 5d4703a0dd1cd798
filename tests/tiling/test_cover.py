from __future__ import annotations

import math
import warnings
from typing import cast

import morecantile
import numpy as np
import pyogrio
import pytest
import shapely
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry
from supermercado import burntiles

from offmaps.errors import InvalidAOIError, InvalidZoomError
from offmaps.tiling import AOIRepairedWarning, AreaOfInterest, get_tms, tile_cover, tms_crs
from offmaps.types import Tile, ZoomRange
from tests.data import data_path

WEB_MERCATOR = get_tms("WebMercatorQuad")
# hundredths of a degree plus 0.001: never exactly on a tile line of levels 0-6 (multiples of
# 360/2**z end in 5 or 0 at the third decimal), where float rounding decides the answer
COORD = st.integers(-3000, 3000).map(lambda v: v / 100 + 0.001)


def brute_force(aoi: AreaOfInterest, tms: morecantile.TileMatrixSet, z: int) -> set[Tile]:
    """Every tile whose box has a positive-area intersection with the projected AOI."""
    clip = tms.bbox
    geometry = aoi.project(tms_crs(tms), clip_to=(clip.left, clip.bottom, clip.right, clip.top))
    ul = tms.tile(*_lonlat(tms, geometry.bounds[0], geometry.bounds[3]), z)
    lr = tms.tile(*_lonlat(tms, geometry.bounds[2], geometry.bounds[1]), z)
    found = set()
    for x in range(max(ul.x - 1, 0), lr.x + 2):
        for y in range(max(ul.y - 1, 0), lr.y + 2):
            matrix = tms.matrix(z)
            if x >= matrix.matrixWidth or y >= matrix.matrixHeight:
                continue
            b = tms.xy_bounds(morecantile.Tile(x, y, z))
            if geometry.intersection(box(b.left, b.bottom, b.right, b.top)).area > 0:
                found.add(Tile(x, y, z))
    return found


def _lonlat(tms: morecantile.TileMatrixSet, x: float, y: float) -> tuple[float, float]:
    lon, lat = tms.lnglat(x, y, truncate=True)
    return lon, lat


def test_small_bbox_matches_known_counts() -> None:
    aoi = AreaOfInterest.from_bbox(24.935, 60.164, 24.953, 60.179)
    counts = tile_cover(aoi, WEB_MERCATOR, ZoomRange(12, 16)).counts()
    assert counts == {12: 1, 13: 2, 14: 4, 15: 9, 16: 24}


@settings(max_examples=60, deadline=None)
@given(
    points=st.lists(st.tuples(COORD, COORD), min_size=3, max_size=12),
    z=st.integers(2, 6),
)
def test_cover_equals_brute_force_intersection(points: list[tuple[float, float]], z: int) -> None:
    # sorted by angle around their mean, the points make a simple (star-shaped) polygon
    cx = sum(x for x, _ in points) / len(points)
    cy = sum(y for _, y in points) / len(points)
    polygon = Polygon(sorted(points, key=lambda p: math.atan2(p[1] - cy, p[0] - cx)))
    assume(polygon.is_valid and polygon.area > 1.0)
    aoi = AreaOfInterest.from_geometry(polygon)
    cover = tile_cover(aoi, WEB_MERCATOR, [z])
    assert set(cover) == brute_force(aoi, WEB_MERCATOR, z)
    assert cover.level(z).count == len(set(cover))


def test_polygon_with_hole_leaves_the_hole_out() -> None:
    outer = box(-60, -60, 60, 60)
    ring = Polygon(outer.exterior.coords, [box(-30, -30, 30, 30).exterior.coords])
    aoi = AreaOfInterest.from_geometry(ring)
    cover = tile_cover(aoi, WEB_MERCATOR, [4])
    assert set(cover) == brute_force(aoi, WEB_MERCATOR, 4)
    assert Tile(7, 7, 4) not in cover
    assert Tile(8, 8, 4) not in cover


def test_membership_and_iteration_agree() -> None:
    aoi = AreaOfInterest.from_bbox(-10.3, 35.1, 30.7, 60.2)
    level = tile_cover(aoi, WEB_MERCATOR, [7]).level(7)
    tiles = set(level)
    assert len(tiles) == level.count
    for tile in tiles:
        assert tile in level
    assert Tile(0, 0, 7) not in level
    assert Tile(70, 40, 8) not in level


def test_array_holds_the_tiles_of_iteration_in_order() -> None:
    outer = box(-60, -60, 60, 60)
    ring = Polygon(outer.exterior.coords, [box(-30, -30, 30, 30).exterior.coords])
    level = tile_cover(AreaOfInterest.from_geometry(ring), WEB_MERCATOR, [5]).level(5)
    array = level.to_array()
    assert array.shape == (level.count, 3)
    assert array.dtype == np.int64
    assert [Tile(*t) for t in array.tolist()] == list(level)


def test_antimeridian_bbox_is_split_not_a_world_band() -> None:
    crossing = AreaOfInterest.from_bbox(170.0, -20.0, -170.0, -10.0)
    west = AreaOfInterest.from_bbox(170.0, -20.0, 180.0, -10.0)
    east = AreaOfInterest.from_bbox(-180.0, -20.0, -170.0, -10.0)
    for z in range(9):
        got = set(tile_cover(crossing, WEB_MERCATOR, [z]))
        assert got == set(tile_cover(west, WEB_MERCATOR, [z])) | set(
            tile_cover(east, WEB_MERCATOR, [z])
        )
    assert len(set(tile_cover(crossing, WEB_MERCATOR, [8]))) == 128


def test_antimeridian_polygon_with_longitudes_past_180_is_split() -> None:
    polygon = Polygon([(175, -15), (185, -15), (185, -20), (175, -20)])
    aoi = AreaOfInterest.from_geometry(polygon)
    parts = shapely.get_parts(aoi.geometry)
    assert len(parts) == 2
    assert all(p.bounds[0] >= -180 and p.bounds[2] <= 180 for p in parts)
    xs = {t.x for t in tile_cover(aoi, WEB_MERCATOR, [5])}
    assert xs == {0, 31}


def test_antimeridian_polygon_jumping_across_180_is_split() -> None:
    polygon = Polygon([(175, -15), (-175, -15), (-175, -20), (175, -20)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aoi = AreaOfInterest.from_geometry(polygon)
    assert math.isclose(aoi.geometry.area, 50.0)
    assert aoi.geometry.bounds == (-180.0, -20.0, 180.0, -15.0)


def _countries() -> list[tuple[str, BaseGeometry]]:
    meta, _, geometries, fields = pyogrio.raw.read(
        data_path("world-atlas/countries-50m.json"), layer="countries"
    )
    names = fields[list(meta["fields"]).index("name")]
    return [
        (str(n), cast(BaseGeometry, shapely.from_wkb(g)))
        for n, g in zip(names, geometries, strict=True)
    ]


def _supermercado(geometry: BaseGeometry, z: int) -> set[Tile]:
    features = [
        {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(part)}
        for part in shapely.get_parts(geometry)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # mercantile's, inside supermercado
        burnt = burntiles.burn(features, z)
    return {Tile(int(x), int(y), int(zz)) for x, y, zz in burnt}


@pytest.mark.parametrize("z", [3, 6, 8])
def test_natural_earth_countries_match_supermercado(z: int) -> None:
    """Tile for tile equal to ``supermercado burn``, except where supermercado is wrong.

    supermercado rasterises with GDAL's all-touched rule, which now and then adds a tile that does
    not touch the polygon or misses one that holds a small island: every such difference is
    checked here against the exact intersection. It has no antimeridian handling, so it is given
    our split parts of Russia and Fiji. Antarctica, a pole-circling ring, is left out.
    """
    checked = differences = 0
    for name, geometry in _countries():
        if name == "Antarctica":
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AOIRepairedWarning)
            aoi = AreaOfInterest.from_geometry(geometry)
        ours = set(tile_cover(aoi, WEB_MERCATOR, [z]))
        theirs = _supermercado(aoi.geometry, z)
        projected = aoi.project(tms_crs(WEB_MERCATOR))
        for tile in ours ^ theirs:
            b = WEB_MERCATOR.xy_bounds(morecantile.Tile(*tile))
            touches = projected.intersection(box(b.left, b.bottom, b.right, b.top)).area > 0
            assert touches == (tile in ours), (name, tile)
            differences += 1
        checked += len(ours)
    assert checked > 300
    assert differences < checked / 100


def test_fiji_and_russia_are_not_world_bands() -> None:
    countries = dict(_countries())
    for name in ("Fiji", "Russia"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AOIRepairedWarning)
            aoi = AreaOfInterest.from_geometry(countries[name])
        xs = {t.x for t in tile_cover(aoi, WEB_MERCATOR, [6])}
        assert 0 in xs
        assert 63 in xs
        assert 32 not in xs


def test_counting_deep_levels_of_a_country_does_not_materialise_tiles() -> None:
    countries = dict(_countries())
    aoi = AreaOfInterest.from_geometry(countries["Finland"])
    cover = tile_cover(aoi, WEB_MERCATOR, ZoomRange(0, 20))
    counts = cover.counts()
    assert counts[0] == 1
    assert counts[20] > 1_000_000_000
    spans = cover.level(20)
    assert len(spans.rows) < 10_000_000


def test_world_crs84_quad_cover_matches_brute_force() -> None:
    tms = get_tms("WorldCRS84Quad")
    aoi = AreaOfInterest.from_geometry(Polygon([(-100, 10), (-20, 50), (10, -30)]))
    for z in range(5):
        assert set(tile_cover(aoi, tms, [z])) == brute_force(aoi, tms, z)


def test_aoi_in_a_projected_crs() -> None:
    # central Helsinki in ETRS-TM35FIN
    aoi = AreaOfInterest.from_bbox(385000, 6671000, 386500, 6672500, crs="EPSG:3067")
    cover = tile_cover(aoi, WEB_MERCATOR, [15])
    assert set(cover) == brute_force(aoi, WEB_MERCATOR, 15)
    assert all(18650 < t.x < 18660 for t in cover)


def test_zooms_outside_the_tms_are_refused() -> None:
    aoi = AreaOfInterest.from_bbox(0, 0, 1, 1)
    with pytest.raises(InvalidZoomError, match="outside WebMercatorQuad"):
        tile_cover(aoi, WEB_MERCATOR, ZoomRange(0, 25))
    with pytest.raises(InvalidZoomError, match="inverted"):
        tile_cover(aoi, WEB_MERCATOR, ZoomRange(5, 3))
    with pytest.raises(InvalidZoomError, match="contiguous"):
        tile_cover(aoi, WEB_MERCATOR, [1, 3])


def test_aoi_outside_web_mercator_latitudes_is_refused() -> None:
    aoi = AreaOfInterest.from_bbox(0, 86, 10, 89)
    with pytest.raises(InvalidAOIError, match="outside the tile matrix set"):
        tile_cover(aoi, WEB_MERCATOR, [3])


def test_multipolygon_parts_are_all_covered() -> None:
    aoi = AreaOfInterest.from_geometry(MultiPolygon([box(-50, -10, -40, 0), box(40, 0, 50, 10)]))
    got = set(tile_cover(aoi, WEB_MERCATOR, [4]))
    assert got == brute_force(aoi, WEB_MERCATOR, 4)
    assert np.unique([t.x for t in got]).size >= 2
