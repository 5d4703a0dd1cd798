"""A layer's schema as documents clients read: JSON Schema and a GML application schema.

- :func:`feature_schema`: the logical schema of a layer's features in JSON Schema 2020-12, as
  OGC API - Features - Part 5 (Schemas) publishes it at ``/collections/{id}/schema``: every
  field with its type, format (``int64``, ``double``, ``date``, ``date-time``), range and
  ``maxLength``; the global id, the geometry and the primary temporal property (what the
  ``datetime`` parameter filters on) marked with ``x-ogc-role`` (``id``, ``primary-geometry``,
  ``primary-instant``).
- :func:`queryables_schema`: the fields a CQL2 filter may name, with their types (OGC API -
  Features - Part 3, ``/collections/{id}/queryables``). It lists exactly what
  :func:`~offmaps.features.compile_filter` accepts for the layer: every attribute field, and
  neither the id nor the geometry (spatial predicates are not supported yet).
- :func:`gml_application_schema`: the same fields in XML Schema. GDAL's OAPIF driver takes field
  types only from an XML Schema linked with ``rel="describedBy"``: from a JSON Schema it makes
  every integer a 32-bit field, and it reads a 64-bit id beyond 2^31 - 1 as 2147483647.

Pure functions of a :class:`~offmaps.features.model.LayerSchema`; the URLs are the caller's.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

from offmaps.features.filters import FieldType
from offmaps.features.model import Field, GeometryType, LayerSchema
from offmaps.features.validation import MAX_TEXT_LENGTH

__all__ = [
    "GEOMETRY_PROPERTY",
    "ID_PROPERTY",
    "JSON_SCHEMA_DIALECT",
    "feature_schema",
    "field_schema",
    "gml_application_schema",
    "queryables_schema",
]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
"""The JSON Schema version of the documents made here."""

ID_PROPERTY = "globalid"
"""The name of the feature id in :func:`feature_schema` (``x-ogc-role: id``).

In GeoJSON it is the Feature's ``id``. A field can never have this name (it is one of
:data:`~offmaps.features.model.RESERVED_COLUMNS`), so it never clashes with one.
"""

GEOMETRY_PROPERTY = "geom"
"""The name of the geometry in :func:`feature_schema` (``x-ogc-role: primary-geometry``);
reserved like :data:`ID_PROPERTY`. In GeoJSON it is the Feature's ``geometry``."""

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_GEOMETRY_FORMATS = {
    GeometryType.POINT: "geometry-point",
    GeometryType.LINESTRING: "geometry-linestring",
    GeometryType.POLYGON: "geometry-polygon",
    GeometryType.MULTIPOINT: "geometry-multipoint",
    GeometryType.MULTILINESTRING: "geometry-multilinestring",
    GeometryType.MULTIPOLYGON: "geometry-multipolygon",
}

_GML_GEOMETRY_TYPES = {
    GeometryType.POINT: "gml:PointPropertyType",
    GeometryType.LINESTRING: "gml:LineStringPropertyType",
    GeometryType.POLYGON: "gml:PolygonPropertyType",
    GeometryType.MULTIPOINT: "gml:MultiPointPropertyType",
    GeometryType.MULTILINESTRING: "gml:MultiLineStringPropertyType",
    GeometryType.MULTIPOLYGON: "gml:MultiPolygonPropertyType",
}

# xs:long, not xs:integer: GDAL maps xs:integer to a 32-bit field
_XSD_TYPES = {
    FieldType.TEXT: "xs:string",
    FieldType.INTEGER: "xs:long",
    FieldType.REAL: "xs:double",
    FieldType.BOOLEAN: "xs:boolean",
    FieldType.DATE: "xs:date",
    FieldType.DATETIME: "xs:dateTime",
}

_GML_NAMESPACE = "http://www.opengis.net/gml/3.2"
_GML_SCHEMA = "http://schemas.opengis.net/gml/3.2.1/gml.xsd"


def field_schema(field: Field) -> dict[str, Any]:
    """The JSON Schema of one field's values (without ``null``: see :func:`feature_schema`).

    Integers are 64-bit (``format: int64`` and the range), reals are IEEE doubles, dates and
    date-times are RFC 3339 text (date-times in UTC, to the millisecond), and text is limited
    to the field's ``max_length`` or else to the longest text any field accepts.
    """
    described: dict[str, Any] = {"title": field.alias or field.name}
    match field.type:
        case FieldType.TEXT:
            described |= {"type": "string", "maxLength": field.max_length or MAX_TEXT_LENGTH}
        case FieldType.INTEGER:
            described |= {
                "type": "integer",
                "format": "int64",
                "minimum": _INT64_MIN,
                "maximum": _INT64_MAX,
            }
        case FieldType.REAL:
            described |= {"type": "number", "format": "double"}
        case FieldType.BOOLEAN:
            described |= {"type": "boolean"}
        case FieldType.DATE:
            described |= {"type": "string", "format": "date"}
        case FieldType.DATETIME:
            described |= {"type": "string", "format": "date-time"}
    return described


def feature_schema(schema: LayerSchema, *, schema_id: str) -> dict[str, Any]:
    """The logical schema of the layer's features (OGC API - Features - Part 5).

    Args:
        schema: the layer.
        schema_id: the URL the document is published at (its ``$id``).

    Returns:
        A JSON Schema object: the id (:data:`ID_PROPERTY`, a UUID, read only), the geometry
        (:data:`GEOMETRY_PROPERTY`, for layers) and the fields in order, as
        :func:`field_schema` describes them, the layer's
        :attr:`~offmaps.features.model.LayerSchema.temporal_field` with ``x-ogc-role:
        primary-instant``. Non-nullable fields are ``required``; the others
        may be ``null`` in GeoJSON.
    """
    properties: dict[str, Any] = {
        ID_PROPERTY: {
            "title": "Global id",
            "type": "string",
            "format": "uuid",
            "readOnly": True,
            "x-ogc-role": "id",
        }
    }
    if schema.geometry_type is not None:
        properties[GEOMETRY_PROPERTY] = {
            "title": "Geometry",
            "format": _GEOMETRY_FORMATS[schema.geometry_type],
            "x-ogc-role": "primary-geometry",
        }
    temporal = schema.temporal_field
    for field in schema.fields:
        properties[field.name] = field_schema(field)
        if field == temporal:
            properties[field.name]["x-ogc-role"] = "primary-instant"
    document: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_id,
        "title": schema.title or schema.name,
        "type": "object",
        "properties": properties,
    }
    required = [field.name for field in schema.fields if not field.nullable]
    if required:
        document["required"] = required
    return document


def queryables_schema(schema: LayerSchema, *, schema_id: str) -> dict[str, Any]:
    """The properties a CQL2 ``filter`` on the layer may name (OGC API - Features - Part 3).

    Args:
        schema: the layer.
        schema_id: the URL the document is published at (its ``$id``).

    Returns:
        A JSON Schema object whose properties are the fields
        :func:`~offmaps.features.compile_filter` takes for this layer
        (:meth:`~offmaps.features.model.LayerSchema.field_types`), typed as in
        :func:`feature_schema`; ``additionalProperties`` is false, as a filter naming anything
        else is refused.
    """
    fields = {field.name: field for field in schema.fields}
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_id,
        "title": schema.title or schema.name,
        "type": "object",
        "properties": {name: field_schema(fields[name]) for name in schema.field_types()},
        "additionalProperties": False,
    }


def gml_application_schema(schema: LayerSchema, *, target_namespace: str) -> str:
    """The layer's fields as a GML 3.2 application schema (XML Schema), for GDAL's OAPIF driver.

    One feature type, named after the layer, with the geometry (for layers) and the fields in
    order: integers ``xs:long`` (64-bit), reals ``xs:double``, booleans, ``xs:date``,
    ``xs:dateTime``, and text ``xs:string`` restricted to the field's ``max_length``.
    Nullable fields may be missing or nil.

    Args:
        schema: the layer.
        target_namespace: the namespace of the feature type (any URI of the collection).
    """
    name = schema.name
    elements: list[str] = []
    if schema.geometry_type is not None:
        geometry_type = _GML_GEOMETRY_TYPES[schema.geometry_type]
        elements.append(
            f'<xs:element name="{GEOMETRY_PROPERTY}" type="{geometry_type}" '
            'minOccurs="0" nillable="true"/>'
        )
    for field in schema.fields:
        elements.append(_xsd_element(field))
    body = "\n        ".join(elements)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:gml="{_GML_NAMESPACE}"
    xmlns:o={quoteattr(target_namespace)} targetNamespace={quoteattr(target_namespace)}
    elementFormDefault="qualified" version="1.0">
  <xs:annotation><xs:documentation>{escape(schema.title or name)}</xs:documentation></xs:annotation>
  <xs:import namespace="{_GML_NAMESPACE}" schemaLocation="{_GML_SCHEMA}"/>
  <xs:element name="{name}" type="o:{name}Type" substitutionGroup="gml:AbstractFeature"/>
  <xs:complexType name="{name}Type">
    <xs:complexContent>
      <xs:extension base="gml:AbstractFeatureType">
        <xs:sequence>
        {body}
        </xs:sequence>
      </xs:extension>
    </xs:complexContent>
  </xs:complexType>
</xs:schema>
"""


def _xsd_element(field: Field) -> str:
    occurs = ' minOccurs="0" nillable="true"' if field.nullable else ""
    if field.type is FieldType.TEXT and field.max_length is not None:
        return (
            f'<xs:element name="{field.name}"{occurs}><xs:simpleType>'
            f'<xs:restriction base="xs:string"><xs:maxLength value="{field.max_length}"/>'
            "</xs:restriction></xs:simpleType></xs:element>"
        )
    return f'<xs:element name="{field.name}" type="{_XSD_TYPES[field.type]}"{occurs}/>'
