"""What every feature store backend checks the same way: names, schemas, values and geometries.

Backends call these before writing, so a bad layer schema or a bad row gets the same error with
the same message whatever the database behind the service.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING
from uuid import UUID

from offmaps.errors import InvalidFeatureError, InvalidLayerSchemaError, VersionConflictError
from offmaps.features.filters import FieldType
from offmaps.features.model import (
    RESERVED_COLUMNS,
    Field,
    GeometryType,
    Insert,
    LayerSchema,
    Relationship,
)

# shapely (and numpy under it) is imported where geometries are handled, not with the module: it
# takes ~0.1-0.2 s, which reading a package's outbox does not need (docs/cli.md, "Start-up")
if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

__all__ = [
    "MAX_FIELDS",
    "MAX_TEXT_LENGTH",
    "check_added_field",
    "check_attachment",
    "check_insert_version",
    "check_layer_schema",
    "check_name",
    "check_properties",
    "check_relationship",
    "check_version",
    "normalise_geometry",
    "parse_datetime",
]

MAX_FIELDS = 500
"""The most fields a layer may have."""
MAX_TEXT_LENGTH = 1_000_000
"""The longest text value accepted in any text field, in characters, when the field sets none."""

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
_RESERVED_PREFIXES = ("gpkg_", "rtree_", "offmaps_", "sqlite_", "pg_")
_INT64 = (-(2**63), 2**63 - 1)
_MULTI = {
    GeometryType.MULTIPOINT: GeometryType.POINT,
    GeometryType.MULTILINESTRING: GeometryType.LINESTRING,
    GeometryType.MULTIPOLYGON: GeometryType.POLYGON,
}
"""The single-part type each multi-part layer type takes too (promoted to one part)."""


def check_name(name: object, what: str) -> str:
    """``name`` when it is a usable layer or field name, else ``InvalidLayerSchemaError``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = repr(name)[:80]
        raise InvalidLayerSchemaError(
            f"{what} name {shown} must be 1-63 letters, digits or _, starting with a letter"
        )
    lowered = name.lower()
    if lowered in RESERVED_COLUMNS or lowered.startswith(_RESERVED_PREFIXES):
        raise InvalidLayerSchemaError(f"{what} name {name!r} is reserved")
    return name


def check_layer_schema(schema: LayerSchema) -> None:
    """Raise ``InvalidLayerSchemaError`` unless ``schema`` can be created."""
    check_name(schema.name, "layer")
    if len(schema.fields) > MAX_FIELDS:
        raise InvalidLayerSchemaError(f"layer {schema.name!r} has more than {MAX_FIELDS} fields")
    seen: set[str] = set()
    for field in schema.fields:
        check_name(field.name, "field")
        if field.name.lower() in seen:
            raise InvalidLayerSchemaError(f"field {field.name!r} appears twice")
        seen.add(field.name.lower())
        if not isinstance(field.type, FieldType):
            raise InvalidLayerSchemaError(f"field {field.name!r} has an unknown type")
        if field.max_length is not None and (
            field.type is not FieldType.TEXT or not 0 < field.max_length <= MAX_TEXT_LENGTH
        ):
            raise InvalidLayerSchemaError(
                f"field {field.name!r}: max_length is for text fields, 1..{MAX_TEXT_LENGTH}"
            )
    if schema.geometry_type is not None and not isinstance(schema.geometry_type, GeometryType):
        raise InvalidLayerSchemaError(f"layer {schema.name!r} has an unknown geometry type")
    if schema.srid <= 0:
        raise InvalidLayerSchemaError(f"layer {schema.name!r}: srid must be an EPSG code")


def check_added_field(schema: LayerSchema, field: Field) -> LayerSchema:
    """``schema`` with ``field`` added last, checked as a store's ``add_field`` needs.

    Raises:
        InvalidLayerSchemaError: the field is not nullable, or the schema with it is invalid
            (a malformed, reserved or taken name, too many fields, a bad ``max_length``).
    """
    if not isinstance(field, Field):
        raise InvalidLayerSchemaError("a field is a Field")
    changed = replace(schema, fields=(*schema.fields, field))
    check_layer_schema(changed)
    if not field.nullable:
        raise InvalidLayerSchemaError(
            f"field {field.name!r}: a field added to a layer must be nullable (its rows have no "
            "value for it)"
        )
    return changed


def check_relationship(rel: Relationship, layers: Mapping[str, LayerSchema]) -> None:
    """Raise ``InvalidLayerSchemaError`` unless both ends and keys of ``rel`` exist."""
    check_name(rel.name, "relationship")
    for layer, key in ((rel.origin, rel.origin_key), (rel.destination, rel.destination_key)):
        schema = layers.get(layer)
        if schema is None:
            raise InvalidLayerSchemaError(f"relationship {rel.name!r}: no layer {layer!r}")
        if key not in schema.field_types():
            raise InvalidLayerSchemaError(
                f"relationship {rel.name!r}: layer {layer!r} has no field {key!r}"
            )


def check_properties(
    schema: LayerSchema, properties: Mapping[str, object], *, complete: bool
) -> dict[str, object]:
    """The properties as canonical Python values, checked against ``schema``.

    Text is ``str``, integers ``int`` (64-bit), reals ``float``, booleans ``bool``, dates
    ``date``, date-times aware ``datetime`` in UTC. Dates and date-times may also be given as ISO
    8601 text (as in GeoJSON); naive date-times are taken as UTC.

    Args:
        schema: the layer.
        properties: the values by field name.
        complete: whether the result must hold every field (missing ones become ``None``, and
            a missing non-nullable field is an error), as for inserts and replacements.

    Raises:
        InvalidFeatureError: an unknown field, a value of the wrong type or out of range, or a
            missing value of a non-nullable field.
    """
    fields = {f.name: f for f in schema.fields}
    unknown = [name for name in properties if name not in fields]
    if unknown:
        name = str(unknown[0])[:80]
        raise InvalidFeatureError(f"layer {schema.name!r} has no field {name!r}", field=name)
    names = fields if complete else properties
    return {name: _check_value(fields[name], properties.get(name)) for name in names}


def _check_value(field: Field, value: object) -> object:
    if value is None:
        if not field.nullable:
            raise InvalidFeatureError(f"field {field.name!r} may not be null", field=field.name)
        return None
    checked = _coerce(field, value)
    if checked is None:
        shown = type(value).__name__
        raise InvalidFeatureError(
            f"field {field.name!r} takes {field.type.value} values, not {shown}", field=field.name
        )
    return checked


def _coerce(field: Field, value: object) -> object:
    """``value`` as the canonical value of ``field``'s type, ``None`` when it is of another
    type; raises ``InvalidFeatureError`` when it is of the type but out of range."""
    return _COERCE[field.type](field, value)


def _text(field: Field, value: object) -> object:
    if not isinstance(value, str):
        return None
    limit = field.max_length or MAX_TEXT_LENGTH
    if len(value) > limit:
        raise InvalidFeatureError(
            f"field {field.name!r} holds at most {limit} characters", field=field.name
        )
    return value


def _boolean(field: Field, value: object) -> object:
    return value if isinstance(value, bool) else None


def _integer(field: Field, value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    if not _INT64[0] <= value <= _INT64[1]:
        raise InvalidFeatureError(f"field {field.name!r}: integer out of range", field=field.name)
    return value


def _real(field: Field, value: object) -> object:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if not math.isfinite(value):
        raise InvalidFeatureError(f"field {field.name!r}: not a finite number", field=field.name)
    return float(value)


def _datetime(field: Field, value: object) -> object:
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, str):
        return parse_datetime(value, field.name)
    return None


def _date(field: Field, value: object) -> date | None:
    if isinstance(value, datetime):
        return None
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise InvalidFeatureError(
                f"field {field.name!r}: {value[:40]!r} is not a date (YYYY-MM-DD)", field=field.name
            ) from None
    return None


_COERCE = {
    FieldType.TEXT: _text,
    FieldType.BOOLEAN: _boolean,
    FieldType.INTEGER: _integer,
    FieldType.REAL: _real,
    FieldType.DATE: _date,
    FieldType.DATETIME: _datetime,
}


def parse_datetime(text: str, field: str = "value") -> datetime:
    """ISO 8601 date-time text as an aware UTC datetime (naive text is taken as UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidFeatureError(
            f"field {field!r}: {text[:40]!r} is not an ISO 8601 date-time", field=field
        ) from None
    return _utc(moment)


def _utc(moment: datetime) -> datetime:
    # milliseconds, the precision of GeoPackage's DATETIME text, in every backend
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def normalise_geometry(schema: LayerSchema, geometry: BaseGeometry | None) -> BaseGeometry | None:
    """``geometry`` as stored in ``schema``'s layer: 2D, of the layer's type (single parts are
    promoted to multi-part layers), finite; ``None`` stays ``None``.

    Raises:
        InvalidFeatureError: a geometry on a table, a geometry of another type, an empty or
            non-finite geometry. Invalid (e.g. self-intersecting) polygons are kept as given.
    """
    if geometry is None:
        return None
    if schema.geometry_type is None:
        raise InvalidFeatureError(f"{schema.name!r} is a table: its rows have no geometry")
    import shapely  # noqa: PLC0415 - once per row: a plain import is ~0.1 µs, a from-import ~2 µs

    if not isinstance(geometry, shapely.geometry.base.BaseGeometry):
        raise InvalidFeatureError("the geometry is not a geometry")
    if geometry.is_empty:
        raise InvalidFeatureError("the geometry is empty")
    if shapely.has_z(geometry):
        geometry = shapely.force_2d(geometry)
    coords = shapely.get_coordinates(geometry)
    if not all(math.isfinite(v) for v in coords.flat):
        raise InvalidFeatureError("the geometry has non-finite coordinates")
    wanted = schema.geometry_type
    actual = geometry.geom_type
    if actual == wanted.value:
        return geometry
    single = _MULTI.get(wanted)
    if single is not None and actual == single.value:
        multi = {
            GeometryType.MULTIPOINT: shapely.MultiPoint,
            GeometryType.MULTILINESTRING: shapely.MultiLineString,
            GeometryType.MULTIPOLYGON: shapely.MultiPolygon,
        }[wanted]
        promoted: BaseGeometry = multi([geometry])  # type: ignore[arg-type]
        return promoted
    raise InvalidFeatureError(
        f"layer {schema.name!r} takes {wanted.value} geometries, not {actual}"
    )


def check_version(global_id: UUID, expected: int | None, actual: int) -> None:
    """Raise :class:`VersionConflictError` when an edit based on ``expected`` meets ``actual``."""
    if expected is not None and expected != actual:
        raise VersionConflictError(
            f"row {global_id} is at version {actual}, the edit was based on version {expected}",
            global_id=str(global_id),
            expected=expected,
            actual=actual,
        )


def check_insert_version(edit: Insert) -> int:
    """The version an insert gives its row (:attr:`Insert.version`); raises
    :class:`InvalidFeatureError` when it is not a whole number of at least 1."""
    version = edit.version
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidFeatureError(f"an inserted row's version must be 1 or more, not {version!r}")
    return version


def check_attachment(name: str, content_type: str, size: int, sha256: str) -> None:
    """Refuse an attachment whose name, media type, size or SHA-256 is malformed."""
    if not name or len(name) > 255 or any(c in name for c in "/\\\x00"):
        raise InvalidFeatureError("an attachment name is 1-255 characters with no / or \\")
    if not content_type or len(content_type) > 255 or "/" not in content_type:
        raise InvalidFeatureError("an attachment needs a media type such as image/jpeg")
    if size < 0:
        raise InvalidFeatureError("an attachment size cannot be negative")
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise InvalidFeatureError("an attachment's sha256 is 64 lowercase hex digits")
