"""Wire geometries decoded at once take the same values as one by one, or are left to it."""

from __future__ import annotations

import math

import pytest
import shapely
from shapely.geometry import LineString, MultiPoint, Point
from shapely.geometry.base import BaseGeometry

from offmaps.errors import InvalidFeatureError
from offmaps.features.model import GeometryType, LayerSchema
from offmaps.features.wire import prepare_wire_geometries, wire_to_edit_values
from offmaps.schemas.changeset import GEOMETRY_FIELD


def hex_of(shape: BaseGeometry, byte_order: int = 1, output_dimension: int = 2) -> str:
    wkb = shapely.to_wkb(
        shape,
        hex=True,
        byte_order=byte_order,
        output_dimension=3 if output_dimension == 3 else 2,
    )
    return str(wkb).lower()


@pytest.mark.parametrize("kind", [GeometryType.POINT, GeometryType.MULTIPOINT])
def test_prepared_geometries_are_those_of_the_one_by_one_path(kind: GeometryType) -> None:
    schema = LayerSchema("sites", (), kind)
    values: list[object] = [
        hex_of(Point(1, 2)),
        hex_of(Point(1, 2), byte_order=0),  # big-endian
        hex_of(Point(1, 2, 3), output_dimension=3),  # Z: dropped one by one
        hex_of(MultiPoint([(0, 0), (1, 1)])),
        hex_of(LineString([(0, 0), (1, 1)])),  # another type: refused one by one
        hex_of(Point()),  # empty
        hex_of(Point(math.nan, 1)),
        hex_of(Point(math.inf, 1)),
        "not hex",
        "01",  # cut short
        None,
        7,
    ]
    prepared = prepare_wire_geometries(schema, values)
    for value in values:
        try:
            _, expected, _ = wire_to_edit_values(schema, {GEOMETRY_FIELD: value}, complete=False)
        except InvalidFeatureError:
            assert value not in prepared
            continue
        _, got, _ = wire_to_edit_values(
            schema, {GEOMETRY_FIELD: value}, complete=False, prepared=prepared
        )
        assert shapely.equals_exact(got, expected, tolerance=0) or got is expected is None
        assert got is None or not shapely.has_z(got)
    # decoded at once: the 2D geometries of the layer's own type; the rest went one by one
    own = values[:2] if kind is GeometryType.POINT else values[3:4]
    assert sorted(prepared) == sorted(str(v) for v in own)
    assert prepare_wire_geometries(LayerSchema("t", ()), values) == {}
