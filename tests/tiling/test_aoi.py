from __future__ import annotations

import json
import math
import warnings

import pytest
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from offmaps.errors import InvalidAOIError, UnknownCRSError
from offmaps.tiling import (
    MAX_AOI_VERTICES,
    AOIRepairedWarning,
    AreaOfInterest,
    parse_crs,
    tile_cover,
)
from offmaps.tiling.tms import get_tms
from offmaps.types import ZoomRange

BOWTIE = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])


def test_self_intersecting_aoi_is_repaired_with_a_warning() -> None:
    with pytest.warns(AOIRepairedWarning, match="Self-intersection"):
        aoi = AreaOfInterest.from_geometry(BOWTIE)
    assert aoi.geometry.is_valid
    assert math.isclose(aoi.geometry.area, 50.0)


def test_self_intersecting_aoi_is_rejected_when_repair_is_off() -> None:
    with pytest.raises(InvalidAOIError, match="not a valid polygon: Self-intersection"):
        AreaOfInterest.from_geometry(BOWTIE, repair=False)


@pytest.mark.parametrize(
    ("geometry", "message"),
    [
        (Polygon(), "empty"),
        (Point(1, 2), "must be a Polygon or MultiPolygon, not Point"),
        (LineString([(0, 0), (1, 1)]), "not LineString"),
        (Polygon([(0, 0), (1, 1), (2, 2)]), "no area"),
        (box(0, 80, 10, 95), "latitudes"),
    ],
)
def test_bad_geometries_are_refused_with_a_reason(geometry: object, message: str) -> None:
    with warnings.catch_warnings(), pytest.raises(InvalidAOIError, match=message):
        warnings.simplefilter("ignore", AOIRepairedWarning)
        AreaOfInterest.from_geometry(geometry, repair=True)  # type: ignore[arg-type]


def test_non_finite_coordinates_are_refused() -> None:
    document = '{"type": "Polygon", "coordinates": [[[0, 0], [0, NaN], [1, 0], [0, 0]]]}'
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # shapely's, building the NaN ring
        with pytest.raises(InvalidAOIError, match="NaN or infinite"):
            AreaOfInterest.from_geojson(document)


def test_too_many_vertices_are_refused() -> None:
    ring = [(math.cos(i / 1000), math.sin(i / 1000)) for i in range(MAX_AOI_VERTICES + 10)]
    with pytest.raises(InvalidAOIError, match="vertices; the limit"):
        AreaOfInterest.from_geometry(Polygon(ring))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "not JSON"),
        ("[]", "must be an object"),
        ('{"features": []}', "without a 'type'"),
        ('{"type": "FeatureCollection"}', "without a 'features' list"),
        ('{"type": "FeatureCollection", "features": []}', "holds no geometry"),
        ('{"type": "Polygon", "coordinates": "x"}', "malformed GeoJSON"),
        ('{"type": "Polygon", "coordinates": [[[0, 0], [1]]]}', "malformed GeoJSON"),
        ('{"type": "Banana", "coordinates": []}', "malformed GeoJSON"),
        (b"\xff\xfe", "not JSON"),
        ('{"type": "Polygon", "coordinates": [[[[[0, 0]]]]]}', "nest deeper"),
        ('{"type": "MultiPolygon", "coordinates": [[[[[0, 0]]]]]}', "nest deeper"),
        (
            '{"type": "Polygon", "coordinates": [[[0, 0], [1.7e308, 1], [-1.7e308, 2], [0, 0]]]}',
            "longitudes",
        ),
    ],
)
def test_malformed_geojson_gets_a_clear_error(document: str | bytes, message: str) -> None:
    with pytest.raises(InvalidAOIError, match=message):
        AreaOfInterest.from_geojson(document)


def test_positions_with_and_without_heights_mix_in_one_geometry() -> None:
    # RFC 7946 lets positions have 2 or 3 numbers; an area of interest is flat
    mixed = {
        "type": "Polygon",
        "coordinates": [
            [[24.9, 60.1], [25.0, 60.1, 12.5], [25.0, 60.2], [24.9, 60.2, 3], [24.9, 60.1]]
        ],
    }
    flat = {
        "type": "Polygon",
        "coordinates": [[[24.9, 60.1], [25.0, 60.1], [25.0, 60.2], [24.9, 60.2], [24.9, 60.1]]],
    }
    got = AreaOfInterest.from_geojson(json.dumps(mixed))
    assert got.geometry.equals(AreaOfInterest.from_geojson(json.dumps(flat)).geometry)
    assert not got.geometry.has_z


def test_feature_collection_areas_are_unioned() -> None:
    features = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {}, "geometry": box(0, 0, 2, 2).__geo_interface__},
            {"type": "Feature", "properties": {}, "geometry": box(1, 1, 3, 3).__geo_interface__},
            {"type": "Feature", "properties": {}, "geometry": None},
        ],
    }
    aoi = AreaOfInterest.from_geojson(json.dumps(features))
    assert math.isclose(aoi.geometry.area, 7.0)


def test_bbox_checks() -> None:
    with pytest.raises(InvalidAOIError, match="south must be less than north"):
        AreaOfInterest.from_bbox(0, 10, 1, 5)
    with pytest.raises(InvalidAOIError, match="no area"):
        AreaOfInterest.from_bbox(3, 0, 3, 1)
    with pytest.raises(InvalidAOIError, match="non-finite"):
        AreaOfInterest.from_bbox(0, 0, math.inf, 1)
    with pytest.raises(InvalidAOIError, match="projected CRS"):
        AreaOfInterest.from_bbox(500000, 0, 400000, 10, crs="EPSG:3067")
    crossing = AreaOfInterest.from_bbox(170, -10, -170, 10)
    assert isinstance(crossing.geometry, MultiPolygon)
    assert math.isclose(crossing.geometry.area, 400.0)


@pytest.mark.parametrize(
    ("bbox", "area"),
    [
        ((-100, -60, 100, 60), 200 * 120),  # wider than half the world: not its complement
        ((-180, -60, 180, 60), 360 * 120),
        ((10, -60, 0, 60), 350 * 120),  # across the antimeridian, nearly all the way round
    ],
)
def test_a_bbox_of_any_width_is_the_area_it_says(bbox: tuple[int, ...], area: int) -> None:
    aoi = AreaOfInterest.from_bbox(*bbox)
    assert math.isclose(aoi.to_wgs84().area, area)


@pytest.mark.parametrize("crs", ["EPSG:999999", "banana", 0])
def test_unknown_crs_is_refused(crs: str | int) -> None:
    with pytest.raises(UnknownCRSError, match="unknown CRS"):
        AreaOfInterest.from_bbox(0, 0, 1, 1, crs=crs)


def test_crs_accepts_codes_and_uris() -> None:
    assert parse_crs(3857).to_epsg() == 3857
    assert parse_crs("http://www.opengis.net/def/crs/EPSG/0/3067").to_epsg() == 3067


def test_ring_around_a_pole_is_closed_through_the_pole() -> None:
    ring = [(lon, -70.0 + 5 * math.sin(math.radians(lon))) for lon in range(150, -181, -30)]
    aoi = AreaOfInterest.from_geometry(Polygon(ring))
    west, south, east, north = aoi.geometry.bounds
    assert (west, south, east) == (-180.0, -90.0, 180.0)
    assert -66 < north <= -65


def test_a_box_over_every_longitude_is_the_whole_world_band() -> None:
    for aoi in (
        AreaOfInterest.from_bbox(-180, -85, 180, 85),
        AreaOfInterest.from_geojson(json.dumps(box(-180, -85, 180, 85).__geo_interface__)),
    ):
        assert aoi.geometry.equals(box(-180, -85, 180, 85))
    # a ring that only crosses 180° is still split, not read as the whole band
    fiji = AreaOfInterest.from_geometry(Polygon([(179, -17), (-179, -17), (-179, -16), (179, -16)]))
    assert fiji.geometry.area < 10


def test_a_degenerate_ring_is_an_invalid_aoi_not_a_geos_error() -> None:
    # found by schemathesis on POST /api/caches/{name}/seed: GEOS's make_valid raised
    # "Overlay input is mixed-dimension" (and warned of a division by zero) on these rings
    rings = [
        [[-19.5, 0.0], [0.0, 26.0], [1.192092896e-07, 0.0], [0.0, 0.0], [2.0, 0.0],
         [1.0, -3.268233897343074e-146], [640.25, 0.0], [-555.0, 1.0], [1.0, 0.0], [-3.0, 0.0]],
        [[0.0, -1e-74], [158.0, 0.0], [-23.0, -1.0], [0.0, 0.0], [181.0, 0.0], [713.0, 0.0],
         [0.0, 1.0], [0.0, 3.0], [194.0, 0.0], [701.0, 0.0], [0.0, 0.0], [0.0, 1.0]],
        [[0.9, -89.0], [0.0, 0.0], [-153.0, 25.0], [0.015625, -3.0], [0.0, 1.0], [1.0, 1.0],
         [0.0, -7e-149]],
    ]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(InvalidAOIError, match="not a usable polygon"):
            AreaOfInterest.from_geojson({"type": "Polygon", "coordinates": rings})


def test_a_projected_box_across_most_of_the_world_is_not_taken_for_an_antimeridian_crossing() -> (
    None
):
    # 40,000 km wide in Web Mercator: its edges run through Greenwich, not across 180°
    aoi = AreaOfInterest.from_bbox(-2e7, 0, 2e7, 2e6, "EPSG:3857")
    lonlat = aoi.to_wgs84()
    assert lonlat.geom_type == "Polygon"
    assert lonlat.contains(Point(0, 5))
    assert lonlat.bounds == pytest.approx((-179.663, 0.0, 179.663, 17.679), abs=1e-3)
    cover = tile_cover(aoi, get_tms("WebMercatorQuad"), ZoomRange(2, 2)).level(2)
    assert (cover.rows.tolist(), cover.starts.tolist(), cover.stops.tolist()) == ([1], [0], [3])
