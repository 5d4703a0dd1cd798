"""The clipper's own rasteriser gives exactly the pixels GDAL's gives (rasterio's
``geometry_mask``, ``all_touched=False``, what clipping used before): on many real cut tiles and
on hostile polygons (holes, multipolygons, areas across the antimeridian, vertices and edges
exactly on pixel centres, self-intersecting and degenerate rings)."""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator

import morecantile
import numpy as np
import pyogrio.raw
import pyproj
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from rasterio.features import geometry_mask
from shapely.geometry import GeometryCollection, LineString, MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from offmaps.containers.base import web_mercator_quad
from offmaps.containers.clip import AreaClipper, TileRelation, _centre_masks, _polygons
from offmaps.tiling import AreaOfInterest, get_tms, tile_cover
from offmaps.types import Tile, ZoomRange
from tests.data import data_path

WMQ = web_mercator_quad()
TILE = Tile(9, 5, 4)
BOUNDS = WMQ.xy_bounds(morecantile.Tile(*TILE))
SIZE = 256
RES = (BOUNDS.right - BOUNDS.left) / SIZE


def gdal_mask(
    geometry: BaseGeometry, left: float, top: float, res: float, size: int
) -> NDArray[np.bool_]:
    """GDAL's pixels of ``geometry`` on a grid of ``size`` pixels from (left, top)."""
    transform = Affine(res, 0.0, left, 0.0, -res, top)
    inside: NDArray[np.bool_] = geometry_mask(
        [geometry], out_shape=(size, size), transform=transform, invert=True
    )
    return inside


def ours(
    geometry: BaseGeometry, left: float, top: float, res: float, size: int
) -> NDArray[np.bool_]:
    polygons = _polygons(geometry)
    assert polygons is not None
    inside: NDArray[np.bool_] = _centre_masks([(polygons, (left, res, top, res))], size, size)[0]
    return inside


def reference(clipper: AreaClipper, tile: Tile, size: int) -> NDArray[np.bool_]:
    """The clipper's mask as it was computed before, through GDAL."""
    b = clipper.tms.xy_bounds(morecantile.Tile(tile.x, tile.y, tile.z))
    dx, dy = (b.right - b.left) / size, (b.top - b.bottom) / size
    part = shapely.clip_by_rect(clipper.area, b.left - dx, b.bottom - dy, b.right + dx, b.top + dy)
    if part.is_empty:
        return np.zeros((size, size), dtype=np.bool_)
    transform = Affine(dx, 0.0, b.left, 0.0, -dy, b.top)
    inside: NDArray[np.bool_] = geometry_mask(
        [part], out_shape=(size, size), transform=transform, invert=True
    )
    return inside


def cut_tiles(clipper: AreaClipper, aoi: AreaOfInterest, zooms: ZoomRange) -> Iterator[Tile]:
    cover = tile_cover(aoi, clipper.tms, zooms)
    for level in zooms.levels():
        tiles = [Tile(int(x), int(y), int(z)) for x, y, z in cover.level(level).to_array()]
        yield from (
            t for t, r in zip(tiles, clipper.relations(tiles), strict=True) if r is TileRelation.CUT
        )


def countries() -> dict[str, BaseGeometry]:
    meta, _, geometries, fields = pyogrio.raw.read(
        data_path("world-atlas/countries-50m.json"), layer="countries"
    )
    names = fields[list(meta["fields"]).index("name")]
    return {str(n): shapely.from_wkb(g) for n, g in zip(names, geometries, strict=True)}


def city_blocks() -> BaseGeometry:
    """The bench's polygon: the city blocks of central Helsinki (OSM) merged across streets."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # GDAL's OSM driver on unclosed rings
        _, _, wkb, fields = pyogrio.raw.read(
            data_path("osm/Helsinki.osm.pbf"),
            layer="multipolygons",
            bbox=(24.93, 60.16, 24.96, 60.18),
            columns=["place"],
        )
    geometries = shapely.from_wkb(wkb, on_invalid="ignore")
    blocks = [
        g for g, p in zip(geometries, fields[0], strict=True) if g is not None and p == "city_block"
    ]
    merged = shapely.union_all(blocks).buffer(0.0008, quad_segs=4).buffer(-0.0006, quad_segs=4)
    return shapely.simplify(merged, 0.00002)


REAL = [
    # holes (Lesotho in South Africa; San Marino and the Vatican in Italy), many islands,
    # across the antimeridian (Russia, Fiji), long and thin, fjords
    ("South Africa", ZoomRange(3, 7)),
    ("Italy", ZoomRange(4, 8)),
    ("Indonesia", ZoomRange(3, 6)),
    ("Russia", ZoomRange(2, 5)),
    ("Fiji", ZoomRange(4, 9)),
    ("Chile", ZoomRange(3, 6)),
    ("Norway", ZoomRange(4, 7)),
]


@pytest.mark.parametrize(("name", "zooms"), REAL, ids=[n for n, _ in REAL])
def test_real_cut_tiles_get_gdals_pixels(name: str, zooms: ZoomRange) -> None:
    aoi = AreaOfInterest.from_geometry(countries()[name])
    clipper = AreaClipper(aoi, WMQ)
    tiles = list(cut_tiles(clipper, aoi, zooms))
    sample = random.Random(name).sample(tiles, min(len(tiles), 250))
    assert len(sample) > 40
    for tile in sample:
        for size in (256, 512):
            assert np.array_equal(clipper.mask(tile, size, size), reference(clipper, tile, size)), (
                tile,
                size,
            )


def test_the_benchs_city_blocks_get_gdals_pixels_on_every_cut_tile() -> None:
    aoi = AreaOfInterest.from_geometry(city_blocks())
    clipper = AreaClipper(aoi, WMQ)
    tiles = list(cut_tiles(clipper, aoi, ZoomRange(12, 19)))
    assert len(tiles) > 300
    masks = clipper._masks(tiles, [(256, 256)] * len(tiles))  # rasterised together
    for tile, mask in zip(tiles, masks, strict=True):
        assert np.array_equal(mask, reference(clipper, tile, 256)), tile


def test_an_area_across_the_antimeridian_gets_gdals_pixels_on_both_edges() -> None:
    ring = [(170.3, -10.2), (-175.1, -12.7), (-171.9, 3.3), (178.05, 7.9), (172.2, 1.1)]
    aoi = AreaOfInterest.from_geometry(Polygon(ring))
    clipper = AreaClipper(aoi, WMQ)
    tiles = list(cut_tiles(clipper, aoi, ZoomRange(3, 8)))
    assert {t.x < 2 ** (t.z - 1) for t in tiles} == {True, False}  # west and east of the world
    for tile in tiles:
        assert np.array_equal(clipper.mask(tile, 256, 256), reference(clipper, tile, 256)), tile


def centre(column: float, row: float) -> tuple[float, float]:
    """The CRS coordinates of a point of the tile's grid (pixel centres at half units)."""
    return BOUNDS.left + column * RES, BOUNDS.top - row * RES


def shape(*rings: list[tuple[float, float]]) -> Polygon:
    return Polygon([centre(*p) for p in rings[0]], [[centre(*p) for p in r] for r in rings[1:]])


HOSTILE = {
    # vertices on pixel centres, edges along centre rows and columns, both windings
    "square on centres": shape([(10.5, 10.5), (100.5, 10.5), (100.5, 80.5), (10.5, 80.5)]),
    "square on centres, other winding": shape(
        [(10.5, 10.5), (10.5, 80.5), (100.5, 80.5), (100.5, 10.5)]
    ),
    "diamond on centres": shape([(128.5, 0.5), (255.5, 128.5), (128.5, 255.5), (0.5, 128.5)]),
    "hole on centres": shape(
        [(0.5, 0.5), (200.5, 0.5), (200.5, 200.5), (0.5, 200.5)],
        [(50.5, 50.5), (150.5, 50.5), (150.5, 150.5), (50.5, 150.5)],
    ),
    "hole, both rings the same winding": shape(
        [(0.5, 0.5), (200.5, 0.5), (200.5, 200.5), (0.5, 200.5)],
        [(50.5, 50.5), (50.5, 150.5), (150.5, 150.5), (150.5, 50.5)],
    ),
    "on pixel corners": shape([(10, 10), (100, 10), (100, 80), (10, 80)]),
    "thin sliver": shape([(3.5, 7.5), (250.5, 7.6), (3.5, 7.7)]),
    "inside one pixel": shape([(20.2, 20.2), (20.8, 20.3), (20.4, 20.9)]),
    "past every edge": shape([(-30.5, -40.5), (300.5, -10.5), (280.5, 290.5), (-20.5, 270.5)]),
    "self-intersecting bow tie": shape(
        [(10.5, 10.5), (200.5, 200.5), (200.5, 10.5), (10.5, 200.5)]
    ),
    "spike back along itself": shape(
        [(10.5, 10.5), (120.5, 10.5), (120.5, 60.5), (200.5, 60.5), (120.5, 60.5), (10.5, 90.5)]
    ),
    "repeated lowest vertex": shape([(50.5, 200.5), (50.5, 200.5), (150.5, 200.5), (100.5, 20.5)]),
    "lowest vertex's neighbours within OGR's tolerance": shape(
        [(50.5, 200.5), (50.5 + 1e-9, 200.5 - 1e-9), (150.5, 200.5), (100.5, 20.5)]
    ),
    "zero area": shape([(10.5, 10.5), (100.5, 10.5), (200.5, 10.5)]),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_polygons_get_gdals_pixels(name: str) -> None:
    polygon = HOSTILE[name]
    want = gdal_mask(polygon, BOUNDS.left, BOUNDS.top, RES, SIZE)
    assert np.array_equal(ours(polygon, BOUNDS.left, BOUNDS.top, RES, SIZE), want)


def test_multipolygons_fill_each_member_on_its_own() -> None:
    a = shape([(10.5, 10.5), (100.5, 10.5), (100.5, 80.5), (10.5, 80.5)])
    touching = shape([(100.5, 10.5), (180.5, 10.5), (180.5, 80.5), (100.5, 80.5)])
    overlapping = shape([(50.5, 40.5), (150.5, 40.5), (150.5, 120.5), (50.5, 120.5)])
    for other in (touching, overlapping):
        both = MultiPolygon([a, other])
        want = gdal_mask(both, BOUNDS.left, BOUNDS.top, RES, SIZE)
        assert np.array_equal(ours(both, BOUNDS.left, BOUNDS.top, RES, SIZE), want)
        collection = GeometryCollection([a, MultiPolygon([other])])
        assert np.array_equal(ours(collection, BOUNDS.left, BOUNDS.top, RES, SIZE), want)


def test_a_part_that_is_not_polygonal_is_left_to_gdal() -> None:
    line = LineString([centre(1, 1), centre(200, 9)])
    assert _polygons(GeometryCollection([HOSTILE["on pixel corners"], line])) is None
    assert _polygons(line) is None


# points of the tile's grid at quarter pixels (centres, corners, edges' middles) and beyond it
LATTICE = st.tuples(st.integers(-8, 1032), st.integers(-8, 1032)).map(
    lambda p: (p[0] / 4, p[1] / 4)
)


# grids whose pixel coordinates carry rounding (a tile of Web Mercator) or none (whole units:
# a vertex on a pixel centre is exactly on it)
GRIDS = [(BOUNDS.left, BOUNDS.top, RES), (-64.0, 320.0, 1.0)]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(LATTICE, min_size=3, max_size=12),
    st.sampled_from([256, 512]),
    st.sampled_from(GRIDS),
)
def test_random_polygons_on_the_pixel_grid_get_gdals_pixels(
    points: list[tuple[float, float]], size: int, grid: tuple[float, float, float]
) -> None:
    left, top, res = grid
    res *= 256 / size
    polygon = Polygon([(left + c * res, top - r * res) for c, r in points])
    want = gdal_mask(polygon, left, top, res, size)
    assert np.array_equal(ours(polygon, left, top, res, size), want)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(LATTICE, min_size=3, max_size=8),
    st.lists(st.tuples(st.integers(1, 30), st.integers(1, 30)), min_size=1, max_size=3),
)
def test_random_squares_with_holes_get_gdals_pixels(
    points: list[tuple[float, float]], holes: list[tuple[int, int]]
) -> None:
    outer = shape([(-0.5, -0.5), (256.5, -0.5), (256.5, 256.5), (-0.5, 256.5)])
    cuts = [
        shape([(c * 8 + 0.5, r * 8 + 0.5), (c * 8 + 4.5, r * 8 + 0.5), (c * 8 + 2.5, r * 8 + 6.5)])
        for c, r in holes
    ]
    polygon = Polygon(outer.exterior, [hole.exterior for hole in cuts])
    for geometry in (
        polygon,
        MultiPolygon([polygon, shape(points)]) if shape(points).is_valid else polygon,
    ):
        want = gdal_mask(geometry, BOUNDS.left, BOUNDS.top, RES, SIZE)
        assert np.array_equal(ours(geometry, BOUNDS.left, BOUNDS.top, RES, SIZE), want)


def test_tile_bounds_are_morecantiles_to_the_bit() -> None:
    rng = random.Random(17)
    bottom_left = morecantile.TileMatrixSet.custom(
        [-7.5e5, 2.1e6, 9.25e5, 3.3e6], pyproj.CRS.from_epsg(3857), corner_of_origin="bottomLeft"
    )
    variable = get_tms("GNOSISGlobalGrid")  # variable matrix widths: morecantile's own, per tile
    for tms in (
        WMQ,
        get_tms("WorldCRS84Quad"),
        get_tms("CanadianNAD83_LCC"),
        bottom_left,
        variable,
    ):
        b = tms.bbox
        lon, lat = (b.left + b.right) / 2, (b.bottom + b.top) / 2
        clipper = AreaClipper(
            AreaOfInterest.from_bbox(lon - 0.1, lat - 0.1, lon + 0.1, lat + 0.1), tms
        )
        tiles = []
        for z in range(tms.minzoom, min(tms.maxzoom, 24) + 1):
            matrix = tms.matrix(z)
            tiles += [
                Tile(rng.randrange(matrix.matrixWidth), rng.randrange(matrix.matrixHeight), z)
                for _ in range(20)
            ]
        got = clipper._bounds(tiles).tolist()
        want = [list(tms.xy_bounds(morecantile.Tile(t.x, t.y, t.z))) for t in tiles]
        assert got == want, tms.id


def test_relations_of_many_tiles_are_those_of_each() -> None:
    aoi = AreaOfInterest.from_geometry(box(24.9, 60.1, 25.0, 60.2).buffer(0.01))
    clipper = AreaClipper(aoi, WMQ)
    cover = tile_cover(aoi, WMQ, ZoomRange(8, 14))
    tiles = [
        Tile(int(x), int(y), int(z))
        for level in range(8, 15)
        for x, y, z in cover.level(level).to_array()
    ]
    assert clipper.relations(tiles) == [clipper.relation(t) for t in tiles]
