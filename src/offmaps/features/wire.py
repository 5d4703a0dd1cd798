"""Rows as change sets carry them: JSON values by field name, the geometry one more field.

The wire form is the one of :mod:`offmaps.schemas.changeset`: text, numbers, booleans, ISO 8601
dates (``2026-11-29``) and UTC date-times with milliseconds (``2026-11-29T17:10:00.123Z``),
``null``, and the geometry under :data:`~offmaps.schemas.changeset.GEOMETRY_FIELD` as
hex-encoded ISO WKB in the layer's CRS. Merges compare *canonical* values (what the store would
hold), so that two spellings of one value never look like a conflict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from offmaps.errors import InvalidFeatureError
from offmaps.features.model import Feature, LayerSchema
from offmaps.features.validation import check_properties, normalise_geometry
from offmaps.schemas.changeset import GEOMETRY_FIELD

# shapely (and numpy under it) is imported where geometries are handled, not with the module: it
# takes ~0.1-0.2 s, which reading a package's outbox does not need (docs/cli.md, "Start-up")
if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

__all__ = [
    "canonical_values",
    "decode_wire_geometry",
    "encode_wire_geometry",
    "feature_to_wire",
    "prepare_wire_geometries",
    "value_to_wire",
    "wire_to_edit_values",
]

_MAX_WKB_HEX = 64 * 1024 * 1024
_TYPE_IDS = {
    "Point": 0,
    "LineString": 1,
    "Polygon": 3,
    "MultiPoint": 4,
    "MultiLineString": 5,
    "MultiPolygon": 6,
}
"""shapely.get_type_id of each geometry type a layer can have."""


def value_to_wire(value: object) -> object:
    """A store value as JSON: dates and date-times as ISO text, the rest as is."""
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    return value


def encode_wire_geometry(geometry: BaseGeometry | None) -> str | None:
    """A geometry as lowercase hex ISO WKB (``None`` stays ``None``)."""
    if geometry is None:
        return None
    import shapely  # noqa: PLC0415

    return str(shapely.to_wkb(geometry, hex=True, flavor="iso", byte_order=1)).lower()


def decode_wire_geometry(value: object) -> BaseGeometry | None:
    """A wire geometry as a shapely geometry; raises ``InvalidFeatureError`` when malformed."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _MAX_WKB_HEX:
        raise InvalidFeatureError("the geometry must be hex-encoded WKB", field=GEOMETRY_FIELD)
    import shapely  # noqa: PLC0415 - once per row: a plain import is ~0.1 µs, a from-import ~2 µs

    try:
        geometry = shapely.from_wkb(bytes.fromhex(value))
    except (ValueError, shapely.errors.ShapelyError):
        raise InvalidFeatureError(
            "the geometry is not valid hex-encoded WKB", field=GEOMETRY_FIELD
        ) from None
    if not isinstance(geometry, shapely.geometry.base.BaseGeometry):
        raise InvalidFeatureError("the geometry is not valid WKB", field=GEOMETRY_FIELD)
    return geometry


def feature_to_wire(schema: LayerSchema, feature: Feature) -> dict[str, object]:
    """Every field of a row, and its geometry for feature layers, in wire form."""
    values = {f.name: value_to_wire(feature.properties.get(f.name)) for f in schema.fields}
    if not schema.is_table:
        values[GEOMETRY_FIELD] = encode_wire_geometry(feature.geometry)
    return values


def prepare_wire_geometries(
    schema: LayerSchema, values: Iterable[object]
) -> dict[str, BaseGeometry]:
    """Decode many wire geometries of a layer at once, with shapely's vectorised reader: those
    that are already as the layer stores them (2D, non-empty, finite, of its type), by their
    hex. Others are left out; :func:`wire_to_edit_values` decodes, promotes or refuses them
    one by one."""
    wanted = _TYPE_IDS.get(schema.geometry_type.value) if schema.geometry_type else None
    if wanted is None:
        return {}
    texts: list[str] = []
    blobs: list[bytes] = []
    for value in set(values):
        if isinstance(value, str) and len(value) <= _MAX_WKB_HEX:
            try:
                blobs.append(bytes.fromhex(value))
            except ValueError:
                continue
            texts.append(value)
    if not texts:
        return {}
    import numpy as np  # noqa: PLC0415
    import shapely  # noqa: PLC0415

    array = np.empty(len(blobs), dtype=object)
    array[:] = blobs
    shapes = shapely.from_wkb(array, on_invalid="ignore")
    good = (shapely.get_type_id(shapes) == wanted) & ~shapely.is_empty(shapes)
    good &= ~shapely.has_z(shapes)
    coordinates, index = shapely.get_coordinates(shapes, return_index=True)
    good[index[~np.isfinite(coordinates).all(axis=1)]] = False
    return {text: shape for text, shape, ok in zip(texts, shapes, good, strict=True) if ok}


def wire_to_edit_values(
    schema: LayerSchema,
    values: Mapping[str, object],
    *,
    complete: bool,
    prepared: Mapping[str, BaseGeometry] | None = None,
) -> tuple[dict[str, object], BaseGeometry | None, bool]:
    """Wire values as an edit takes them: checked properties, geometry, whether it was given.
    ``prepared`` holds geometries decoded already (:func:`prepare_wire_geometries`).

    Raises:
        InvalidFeatureError: an unknown field, a value of the wrong type, a malformed geometry,
            or a geometry on a table.
    """
    properties = {k: v for k, v in values.items() if k != GEOMETRY_FIELD}
    checked = check_properties(schema, properties, complete=complete)
    has_geometry = GEOMETRY_FIELD in values
    if has_geometry and schema.is_table:
        raise InvalidFeatureError(f"table {schema.name!r} has no geometry", field=GEOMETRY_FIELD)
    raw = values.get(GEOMETRY_FIELD)
    geometry = prepared.get(raw) if prepared and isinstance(raw, str) else None
    if geometry is None:
        geometry = decode_wire_geometry(raw)
        if has_geometry:
            geometry = normalise_geometry(schema, geometry)
    return checked, geometry, has_geometry


def canonical_values(schema: LayerSchema, values: Mapping[str, object]) -> dict[str, object]:
    """Wire values as the store would hold them, for comparing: checked, date-times in UTC to
    the millisecond, the geometry re-encoded. Raises ``InvalidFeatureError`` like
    :func:`wire_to_edit_values`."""
    checked, geometry, has_geometry = wire_to_edit_values(schema, values, complete=False)
    result: dict[str, object] = {k: value_to_wire(v) for k, v in checked.items()}
    if has_geometry:
        result[GEOMETRY_FIELD] = encode_wire_geometry(geometry)
    return result
