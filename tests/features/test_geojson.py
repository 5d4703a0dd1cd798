"""GeoJSON at the edge: stored features out in CRS84, request bodies in, strictly checked."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
from shapely.geometry import Point

from offmaps.errors import InvalidFeatureError
from offmaps.features import FieldType
from offmaps.features.geojson import feature_to_geojson, parse_feature_body
from offmaps.features.model import Feature, Field, GeometryType, LayerSchema

SITES = LayerSchema(
    "sites",
    (
        Field("name", FieldType.TEXT),
        Field("count", FieldType.INTEGER),
        Field("height", FieldType.REAL),
        Field("seen_on", FieldType.DATE),
        Field("seen_at", FieldType.DATETIME),
    ),
    GeometryType.POINT,
)
SITES_3067 = LayerSchema("sites", SITES.fields, GeometryType.POINT, srid=3067)
TABLE = LayerSchema("notes", (Field("text", FieldType.TEXT),))


def body(geometry: object = None, **properties: object) -> dict[str, object]:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def test_features_go_out_with_their_global_id_and_iso_dates() -> None:
    gid = uuid.uuid4()
    feature = Feature(
        gid,
        1,
        {"name": "a", "seen_on": date(2026, 1, 2), "seen_at": datetime(2026, 1, 2, tzinfo=UTC)},
        Point(24.9, 60.1),
    )
    out = feature_to_geojson(feature, SITES)
    assert out["id"] == str(gid)
    assert out["geometry"] == {"type": "Point", "coordinates": (24.9, 60.1)}
    assert out["properties"] == {
        "name": "a",
        "seen_on": "2026-01-02",
        "seen_at": "2026-01-02T00:00:00Z",
    }


def test_layers_in_another_crs_are_transformed_both_ways() -> None:
    parsed = parse_feature_body(body({"type": "Point", "coordinates": [24.94, 60.17]}), SITES_3067)
    assert isinstance(parsed.geometry, Point)
    assert 380_000 < parsed.geometry.x < 390_000
    out = feature_to_geojson(Feature(uuid.uuid4(), 1, {}, parsed.geometry), SITES_3067)
    lon, lat = out["geometry"]["coordinates"]
    assert lon == pytest.approx(24.94)
    assert lat == pytest.approx(60.17)


def test_values_are_typed_for_their_fields() -> None:
    parsed = parse_feature_body(
        body(None, height=3, seen_on="2026-05-01", seen_at="2026-05-01T10:00:00+02:00"), SITES
    )
    assert parsed.properties["height"] == 3.0
    assert parsed.properties["seen_on"] == date(2026, 5, 1)
    assert isinstance(parsed.properties["seen_at"], datetime)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "GeoJSON Feature object"),
        ({"type": "FeatureCollection"}, '"type": "Feature"'),
        (body(None, nope=1), "no field 'nope'"),
        ({"type": "Feature", "properties": [1]}, "properties"),
        (body({"type": "Circle", "coordinates": [0, 0]}), "unsupported geometry type"),
        (body({"type": "Point"}), "no coordinates"),
        (body({"type": "Point", "coordinates": "x"}), "malformed"),
        (body({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}), "malformed"),
        (body({"type": "Point", "coordinates": [500, 0]}), "CRS84"),
        (body({"type": "Point", "coordinates": [float("nan"), 0]}), "finite"),
        (body(None, seen_on="yesterday"), "not a date"),
        (body(None, seen_at="2026-05-01T10:00:00"), "time zone"),
    ],
)
def test_malformed_bodies_are_refused_with_a_reason(payload: object, message: str) -> None:
    with pytest.raises(InvalidFeatureError, match=message):
        parse_feature_body(payload, SITES)


def test_tables_take_no_geometry() -> None:
    with pytest.raises(InvalidFeatureError, match="table"):
        parse_feature_body(body({"type": "Point", "coordinates": [0, 0]}), TABLE)


def test_a_patch_needs_no_type_and_may_leave_the_geometry_alone() -> None:
    parsed = parse_feature_body({"properties": {"name": "b"}}, SITES, partial=True)
    assert parsed.properties == {"name": "b"}
    assert not parsed.has_geometry
