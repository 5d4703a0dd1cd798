"""A layer's schema as JSON Schema (Part 5 schema, Part 3 queryables) and as XML Schema (GDAL)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime
from typing import Any

import pytest
from jsonschema import Draft202012Validator, ValidationError

from offmaps.features import FieldType
from offmaps.features.describe import (
    GEOMETRY_PROPERTY,
    ID_PROPERTY,
    feature_schema,
    gml_application_schema,
    queryables_schema,
)
from offmaps.features.model import RESERVED_COLUMNS, Field, GeometryType, LayerSchema
from offmaps.features.validation import MAX_TEXT_LENGTH

XS = "{http://www.w3.org/2001/XMLSchema}"

EVERY_TYPE = LayerSchema(
    "every",
    (
        Field("code", FieldType.TEXT, nullable=False, max_length=12, alias="Code"),
        Field("notes", FieldType.TEXT),
        Field("osm_id", FieldType.INTEGER, nullable=False),
        Field("ratio", FieldType.REAL),
        Field("flag", FieldType.BOOLEAN),
        Field("day", FieldType.DATE),
        Field("moment", FieldType.DATETIME),
    ),
    GeometryType.MULTIPOLYGON,
    title="Every type",
)

EXPECTED: dict[FieldType, dict[str, Any]] = {
    FieldType.TEXT: {"type": "string", "maxLength": MAX_TEXT_LENGTH},
    FieldType.INTEGER: {
        "type": "integer",
        "format": "int64",
        "minimum": -(2**63),
        "maximum": 2**63 - 1,
    },
    FieldType.REAL: {"type": "number", "format": "double"},
    FieldType.BOOLEAN: {"type": "boolean"},
    FieldType.DATE: {"type": "string", "format": "date"},
    FieldType.DATETIME: {"type": "string", "format": "date-time"},
}
XSD_TYPES = {
    FieldType.TEXT: "xs:string",
    FieldType.INTEGER: "xs:long",
    FieldType.REAL: "xs:double",
    FieldType.BOOLEAN: "xs:boolean",
    FieldType.DATE: "xs:date",
    FieldType.DATETIME: "xs:dateTime",
}


def test_every_field_type_is_described() -> None:
    assert set(EXPECTED) == set(FieldType) == set(XSD_TYPES)
    fields = tuple(Field(f"f_{kind.value}", kind) for kind in FieldType)
    document = feature_schema(LayerSchema("t", fields), schema_id="https://x/schema")
    for kind in FieldType:
        described = document["properties"][f"f_{kind.value}"]
        assert described == {"title": f"f_{kind.value}", **EXPECTED[kind]}


def test_the_feature_schema_is_json_schema_with_the_id_and_geometry_roles() -> None:
    document = feature_schema(EVERY_TYPE, schema_id="https://example.org/collections/a.b/schema")
    Draft202012Validator.check_schema(document)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["$id"] == "https://example.org/collections/a.b/schema"
    assert document["title"] == "Every type"
    properties = document["properties"]
    assert list(properties) == [
        ID_PROPERTY,
        GEOMETRY_PROPERTY,
        *(f.name for f in EVERY_TYPE.fields),
    ]
    assert properties[ID_PROPERTY]["x-ogc-role"] == "id"
    assert properties[ID_PROPERTY]["format"] == "uuid"
    assert properties[GEOMETRY_PROPERTY] == {
        "title": "Geometry",
        "format": "geometry-multipolygon",
        "x-ogc-role": "primary-geometry",
    }
    assert properties["code"] == {"title": "Code", "type": "string", "maxLength": 12}
    assert document["required"] == ["code", "osm_id"]
    assert {ID_PROPERTY, GEOMETRY_PROPERTY} <= RESERVED_COLUMNS  # no field can take them


def test_tables_have_no_geometry_and_no_required_list_when_all_fields_are_nullable() -> None:
    table = LayerSchema("t", (Field("name", FieldType.TEXT),))
    document = feature_schema(table, schema_id="https://x/schema")
    assert list(document["properties"]) == [ID_PROPERTY, "name"]
    assert "required" not in document


def test_values_of_the_right_type_and_range_validate_and_others_do_not() -> None:
    validator = Draft202012Validator(
        feature_schema(EVERY_TYPE, schema_id="https://x/schema"),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    good = {
        ID_PROPERTY: "6926c8b4-4035-4409-b6b9-2fcace4c1263",
        "code": "Åbo 北京",
        "osm_id": 2**63 - 1,
        "ratio": 0.1,
        "flag": True,
        "day": date(2024, 2, 29).isoformat(),
        "moment": datetime(2024, 1, 1, tzinfo=UTC).isoformat(),
    }
    validator.validate(good)
    for field, value in [
        ("osm_id", 2**63),
        ("osm_id", 1.5),
        ("code", "x" * 13),
        ("day", "2023-02-29"),
        (ID_PROPERTY, "not a uuid"),
        ("flag", 1),
    ]:
        with pytest.raises(ValidationError):
            validator.validate({**good, field: value})


def test_queryables_are_the_fields_a_filter_takes_and_nothing_else() -> None:
    document = queryables_schema(EVERY_TYPE, schema_id="https://x/queryables")
    Draft202012Validator.check_schema(document)
    assert list(document["properties"]) == list(EVERY_TYPE.field_types())
    assert document["additionalProperties"] is False
    assert document["properties"]["osm_id"]["format"] == "int64"


def test_the_xml_schema_has_one_feature_type_with_64_bit_integers() -> None:
    text = gml_application_schema(EVERY_TYPE, target_namespace="https://x/collections/a.b")
    root = ET.fromstring(text)
    assert root.get("targetNamespace") == "https://x/collections/a.b"
    (feature,) = root.findall(f"{XS}element")
    assert feature.get("name") == "every"
    assert feature.get("substitutionGroup") == "gml:AbstractFeature"
    elements = {e.get("name"): e for e in root.iter(f"{XS}element") if e.get("name") != "every"}
    assert list(elements) == [GEOMETRY_PROPERTY, *(f.name for f in EVERY_TYPE.fields)]
    assert elements[GEOMETRY_PROPERTY].get("type") == "gml:MultiPolygonPropertyType"
    for field in EVERY_TYPE.fields:
        element = elements[field.name]
        assert (element.get("minOccurs") == "0") is field.nullable
        if field.max_length is None:
            assert element.get("type") == XSD_TYPES[field.type], field.name
    restriction = elements["code"].find(f"{XS}simpleType/{XS}restriction")
    assert restriction is not None
    assert restriction.get("base") == "xs:string"
    assert restriction.find(f"{XS}maxLength").get("value") == "12"  # type: ignore[union-attr]
