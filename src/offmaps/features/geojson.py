"""GeoJSON (RFC 7946): stored features out, bodies in, for every API (REST, GraphQL, sync).

GeoJSON is always CRS84 (longitude, latitude). Layers stored in another CRS are transformed
here, once, in both directions. (It sat at the HTTP edge until GraphQL and the GeoJSON form of
change sets needed it too.) Request bodies are checked strictly: a body that is not a
GeoJSON Feature, a geometry that is not valid GeoJSON, coordinates that are not finite, or
nesting and sizes beyond sane limits get an :class:`~offmaps.errors.InvalidFeatureError`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any
from uuid import UUID

import shapely
from pyproj import Transformer
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from offmaps.errors import InvalidFeatureError
from offmaps.features.filters import FieldType
from offmaps.features.model import Feature, LayerSchema

__all__ = [
    "CRS84_NAMES",
    "MAX_COORDINATES",
    "FeatureBody",
    "check_crs84",
    "feature_to_geojson",
    "geometry_to_geojson",
    "parse_feature_body",
    "parse_geometry",
    "to_layer_crs",
]

MAX_COORDINATES = 1_000_000
"""The most coordinates one geometry in a request may have."""

_GEOMETRY_TYPES = frozenset(
    {
        "Point",
        "LineString",
        "Polygon",
        "MultiPoint",
        "MultiLineString",
        "MultiPolygon",
    }
)


@functools.lru_cache(maxsize=32)
def _transformer(source: int, target: int) -> Transformer:
    return Transformer.from_crs(source, target, always_xy=True)


def _transform(geometry: BaseGeometry, source: int, target: int) -> BaseGeometry:
    if source == target:
        return geometry
    transformer = _transformer(source, target)
    return shapely.transform(geometry, lambda xy: _apply(transformer, xy))


def _apply(transformer: Transformer, xy: Any) -> Any:
    x, y = transformer.transform(xy[:, 0], xy[:, 1])
    out = xy.copy()
    out[:, 0] = x
    out[:, 1] = y
    return out


def to_layer_crs(geometry: BaseGeometry, schema: LayerSchema) -> BaseGeometry:
    """A CRS84 geometry in the layer's CRS."""
    return _transform(geometry, 4326, schema.srid)


def geometry_to_geojson(geometry: BaseGeometry, schema: LayerSchema) -> dict[str, Any]:
    """A geometry in the layer's CRS as a GeoJSON geometry object (CRS84)."""
    return dict(shapely.geometry.mapping(_transform(geometry, schema.srid, 4326)))


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


def feature_to_geojson(feature: Feature, schema: LayerSchema) -> dict[str, Any]:
    """A stored feature as a GeoJSON Feature; ``id`` is the global id."""
    geometry: dict[str, Any] | None = None
    if feature.geometry is not None:
        geometry = geometry_to_geojson(feature.geometry, schema)
    return {
        "type": "Feature",
        "id": str(feature.global_id),
        "geometry": geometry,
        "properties": {k: _json_value(v) for k, v in feature.properties.items()},
    }


class FeatureBody:
    """A parsed request body: properties typed for the layer and a geometry in its CRS.

    Attributes:
        properties: field values, converted to the field types (dates, timestamps).
        geometry: the geometry in the layer's CRS, or ``None``.
        has_geometry: whether the body had a ``geometry`` member at all.
    """

    __slots__ = ("geometry", "has_geometry", "properties")

    def __init__(
        self, properties: dict[str, object], geometry: BaseGeometry | None, has_geometry: bool
    ) -> None:
        self.properties = properties
        self.geometry = geometry
        self.has_geometry = has_geometry


CRS84_NAMES = frozenset(
    {
        "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
        "https://www.opengis.net/def/crs/OGC/1.3/CRS84",
        "urn:ogc:def:crs:OGC:1.3:CRS84",
        "urn:ogc:def:crs:OGC::CRS84",
        "OGC:CRS84",
    }
)
"""Names of CRS84 (longitude, latitude on WGS 84), the one CRS of GeoJSON in and out."""


def check_crs84(name: object, where: str) -> None:
    """Refuse any CRS but CRS84 named by a client (``bbox-crs``, ``Content-Crs``, a ``crs``).

    Raises:
        InvalidFeatureError: ``name`` is not one of :data:`CRS84_NAMES`.
    """
    text = str(name).strip().removeprefix("<").removesuffix(">")
    if text not in CRS84_NAMES:
        raise InvalidFeatureError(
            f"{where} is {text[:80]!r}: this server reads and writes GeoJSON in CRS84 "
            "(http://www.opengis.net/def/crs/OGC/1.3/CRS84) only"
        )


def parse_feature_body(body: object, schema: LayerSchema, *, partial: bool = False) -> FeatureBody:
    """Check a GeoJSON Feature (or, with ``partial``, a merge patch of one) against a layer.

    Raises:
        InvalidFeatureError: the body is not a GeoJSON Feature, its geometry is malformed or of
            another type than the layer's, or a property is unknown or of the wrong type.
    """
    if not isinstance(body, Mapping):
        raise InvalidFeatureError("the body must be a GeoJSON Feature object")
    if not partial and body.get("type") != "Feature":
        raise InvalidFeatureError('the body must be a GeoJSON Feature ("type": "Feature")')
    if "crs" in body:  # the 2008 GeoJSON member: {"type": "name", "properties": {"name": ...}}
        crs = body["crs"]
        name = crs.get("properties", {}).get("name") if isinstance(crs, Mapping) else None
        check_crs84(name if isinstance(name, str) else crs, 'the body\'s "crs"')
    raw_properties = body.get("properties", {})
    if raw_properties is None:
        raw_properties = {}
    if not isinstance(raw_properties, Mapping):
        raise InvalidFeatureError('"properties" must be an object or null')
    properties = {
        str(name): _property(schema, str(name), value) for name, value in raw_properties.items()
    }
    has_geometry = "geometry" in body
    geometry: BaseGeometry | None = None
    if has_geometry and body["geometry"] is not None:
        if schema.is_table:
            raise InvalidFeatureError(f"{schema.name} is a table: its rows have no geometry")
        geometry = to_layer_crs(parse_geometry(body["geometry"]), schema)
    return FeatureBody(properties, geometry, has_geometry)


def parse_geometry(value: object) -> BaseGeometry:
    """A GeoJSON geometry object (CRS84) as a shapely geometry, strictly checked.

    Raises:
        InvalidFeatureError: not a geometry object of a supported type, malformed coordinates,
            coordinates that are not finite or outside CRS84's range, or too many of them.
    """
    if not isinstance(value, Mapping):
        raise InvalidFeatureError('"geometry" must be a GeoJSON geometry object or null')
    kind = value.get("type")
    if kind not in _GEOMETRY_TYPES:
        raise InvalidFeatureError(f"unsupported geometry type {str(kind)[:40]!r}")
    if "coordinates" not in value:
        raise InvalidFeatureError(f"{kind} geometry has no coordinates")
    try:
        geometry = shape(dict(value))
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        msg = f"malformed {kind} coordinates: {str(exc)[:120]}"
        raise InvalidFeatureError(msg) from None
    except shapely.errors.ShapelyError as exc:
        msg = f"malformed {kind} coordinates: {str(exc)[:120]}"
        raise InvalidFeatureError(msg) from None
    if shapely.get_num_coordinates(geometry) > MAX_COORDINATES:
        msg = f"geometry has more than {MAX_COORDINATES:,} coordinates"
        raise InvalidFeatureError(msg)
    coordinates = shapely.get_coordinates(geometry)
    if not all(math.isfinite(c) for c in coordinates.ravel()):
        raise InvalidFeatureError("geometry has coordinates that are not finite numbers")
    if coordinates.size and (
        (abs(coordinates[:, 0]) > 180).any() or (abs(coordinates[:, 1]) > 90).any()
    ):
        raise InvalidFeatureError(
            "coordinates are outside longitude -180..180, latitude -90..90 (GeoJSON is CRS84)"
        )
    return geometry


def _property(schema: LayerSchema, name: str, value: object) -> object:
    types = schema.field_types()
    if name not in types:
        raise InvalidFeatureError(f"{schema.name} has no field {name[:64]!r}", field=name[:64])
    if value is None:
        return None
    kind = types[name]
    if kind is FieldType.DATE and isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            msg = f"{name}: {value[:40]!r} is not a date (YYYY-MM-DD)"
            raise InvalidFeatureError(msg, field=name) from None
    if kind is FieldType.DATETIME and isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            msg = f"{name}: {value[:40]!r} is not an RFC 3339 timestamp"
            raise InvalidFeatureError(msg, field=name) from None
        if parsed.tzinfo is None:
            msg = f"{name}: timestamp {value[:40]!r} needs a time zone (e.g. Z)"
            raise InvalidFeatureError(msg, field=name)
        return parsed
    if kind is FieldType.REAL and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
