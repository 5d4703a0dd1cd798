"""The web map document: the sample validates and round-trips, every rule refuses bad input."""

from __future__ import annotations

import copy
import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from offmaps.errors import InvalidWebMapError
from offmaps.schemas import (
    MAX_WEBMAP_BYTES,
    WEBMAP_FORMAT_VERSION,
    AttachmentOption,
    FeatureLayerRef,
    OfflineSettings,
    OnlineOnlyLayerRef,
    TableRef,
    TileLayerRef,
    WebMap,
    parse_webmap,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webmap.md"

EDITING = {"create": True, "update": True, "delete": True}

# the document of offmaps.sample.webmap, with every kind of layer
SAMPLE: dict[str, Any] = {
    "format_version": "1.0",
    "item": {
        "title": "Helsinki field inspections",
        "snippet": "Inspect sites in central Helsinki, online or offline.",
        "description": "Sample web map built from OpenStreetMap data.\n© OpenStreetMap",
        "tags": ["sample", "helsinki", "inspections"],
    },
    "initial_extent": [24.93, 60.16, 24.96, 60.18],
    "basemap": {
        "title": "OpenStreetMap (rendered locally)",
        "layers": [
            {
                "type": "raster_tile",
                "id": "basemap",
                "title": "Basemap",
                "service": "basemap",
                "export_tiles_allowed": True,
            }
        ],
    },
    "operational_layers": [
        {
            "type": "vector_tile",
            "id": "buildings",
            "title": "Buildings",
            "service": "buildings",
            "export_tiles_allowed": True,
        },
        {
            "type": "feature",
            "id": "streets",
            "title": "Streets",
            "service": "helsinki",
            "layer": "streets",
            "geometry_type": "LineString",
            "editing": {"create": False, "update": False, "delete": False},
        },
        {
            "type": "feature",
            "id": "sites",
            "title": "Inspection sites",
            "service": "helsinki",
            "layer": "sites",
            "geometry_type": "Point",
            "editing": EDITING,
            "attachments_enabled": True,
            "sync_enabled": True,
        },
        {
            "type": "online_only",
            "id": "osm-live",
            "title": "OpenStreetMap (live, online only)",
            "url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
            "kind": "xyz",
        },
    ],
    "tables": [
        {
            "id": "inspections",
            "title": "Inspections",
            "service": "helsinki",
            "layer": "inspections",
            "editing": EDITING,
            "sync_enabled": True,
        }
    ],
    "relationships": [
        {
            "id": "site_inspections",
            "name": "Inspections of a site",
            "origin": "sites",
            "destination": "inspections",
            "origin_key": "osm_id",
            "destination_key": "site_osm_id",
            "cardinality": "1:N",
        }
    ],
    "offline": {
        "attachment_sync_direction": "bidirectional",
        "attachment_option": "include_all",
        "sync_direction": "bidirectional",
        "update_mode": "sync_with_feature_services",
        "online_only_option": "exclude",
    },
    "sharing": {"owner": "editor", "groups": ["field-crew"], "public": True},
}

MINIMAL: dict[str, Any] = {
    "format_version": "1.0",
    "item": {"title": "New"},
    "basemap": {"title": "none", "layers": []},
}


def sample(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(SAMPLE)
    doc.update(changes)
    return doc


def with_layer(index: int, **changes: Any) -> dict[str, Any]:
    doc = sample()
    doc["operational_layers"][index].update(changes)
    return doc


def reject(doc: object, match: str) -> InvalidWebMapError:
    with pytest.raises(InvalidWebMapError, match=match) as raised:
        parse_webmap(doc)  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)
    return raised.value


# --- valid documents ------------------------------------------------------------------------


def test_the_sample_document_validates() -> None:
    webmap = parse_webmap(SAMPLE)
    assert webmap.item.title == "Helsinki field inspections"
    assert [type(layer) for layer in webmap.operational_layers] == [
        TileLayerRef,
        FeatureLayerRef,
        FeatureLayerRef,
        OnlineOnlyLayerRef,
    ]
    assert isinstance(webmap.basemap.layers[0], TileLayerRef)
    assert isinstance(webmap.tables[0], TableRef)
    assert webmap.offline.attachment_option is AttachmentOption.INCLUDE_ALL


def test_the_sample_maps_own_document_validates() -> None:
    sample_map = pytest.importorskip("offmaps.sample.webmap")
    document = sample_map._webmap_document((24.93, 60.16, 24.96, 60.18))
    assert WebMap.model_validate(document).relationships[0].origin == "sites"


def test_the_example_in_the_docs_validates() -> None:
    example = re.search(r"```json\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert example is not None
    webmap = parse_webmap(example.group(1))
    assert webmap.relationships[0].destination == "inspections"


@pytest.mark.parametrize("exclude_none", [False, True])
def test_the_sample_round_trips_through_json(exclude_none: bool) -> None:
    webmap = parse_webmap(json.dumps(SAMPLE).encode())
    assert parse_webmap(webmap.model_dump(mode="json", exclude_none=exclude_none)) == webmap
    assert parse_webmap(webmap.model_dump_json(exclude_none=exclude_none)) == webmap


def test_a_minimal_document_gets_defaults() -> None:
    webmap = parse_webmap(MINIMAL)
    assert webmap.format_version == WEBMAP_FORMAT_VERSION
    assert webmap.id is None
    assert webmap.spatial_reference == 4326
    assert webmap.operational_layers == ()
    assert webmap.tables == ()
    assert webmap.relationships == ()
    assert webmap.offline == OfflineSettings()
    assert webmap.sharing.public is False
    assert webmap.sharing.groups == ()


def test_a_stored_map_round_trips_without_warnings() -> None:
    # what offmaps.state.webmaps does when it stores a map
    webmap = parse_webmap(SAMPLE)
    now = datetime.now(UTC)
    item = webmap.item.model_copy(update={"created": now, "modified": now, "owner": "editor"})
    stored = webmap.model_copy(update={"id": uuid.uuid4().hex, "item": item})
    assert parse_webmap(stored.model_dump_json(indent=2, exclude_none=True)) == stored


def test_documents_are_immutable() -> None:
    webmap = parse_webmap(SAMPLE)
    with pytest.raises(ValidationError):
        webmap.item.title = "changed"
    assert hash(webmap) == hash(parse_webmap(SAMPLE))


def test_layers_are_found_by_id() -> None:
    webmap = parse_webmap(SAMPLE)
    assert [layer.id for layer in webmap.iter_layers()] == [
        "basemap",
        "buildings",
        "streets",
        "sites",
        "osm-live",
        "inspections",
    ]
    found = webmap.find_layer("inspections")
    assert isinstance(found, TableRef)
    assert webmap.find_layer("nowhere") is None


def test_the_json_schema_describes_the_document() -> None:
    schema = WebMap.model_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"format_version", "item", "basemap"}
    layers = schema["properties"]["operational_layers"]["items"]
    assert set(layers["discriminator"]["mapping"]) == {
        "feature",
        "vector_tile",
        "raster_tile",
        "online_only",
    }
    assert "ArcGIS" in schema["$defs"]["FeatureLayerRef"]["properties"]["layer"]["description"]
    json.dumps(WebMap.model_json_schema(mode="serialization"))


# --- the item -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ({}, r"item\.title: Field required"),
        ({"title": ""}, r"item\.title: String should have at least 1 character"),
        ({"title": "x" * 201}, r"item\.title: String should have at most 200"),
        ({"title": "   "}, r"item\.title: must not be blank"),
        ({"title": "two\nlines"}, r"item\.title: must be one line"),
        ({"title": "t", "snippet": "x" * 251}, r"item\.snippet"),
        ({"title": "t", "description": "x" * 65_537}, r"item\.description"),
        ({"title": "t", "description": "nul\x00"}, r"item\.description: must not contain a NUL"),
        ({"title": "t", "tags": ["x"] * 51}, r"item\.tags: Tuple should have at most 50"),
        ({"title": "t", "tags": ["x" * 65]}, r"item\.tags\[0\]"),
        ({"title": "t", "tags": [""]}, r"item\.tags\[0\]"),
        ({"title": "t", "owner": "../root"}, r"item\.owner: String should match pattern"),
        ({"title": "t", "created": "2024-05-01T12:00:00"}, r"item\.created: .*timezone"),
    ],
)
def test_bad_items_are_refused(item: dict[str, Any], match: str) -> None:
    reject(sample(item=item), match)


def test_times_with_a_zone_are_kept() -> None:
    webmap = parse_webmap(sample(item={"title": "t", "created": "2024-05-01T12:00:00+03:00"}))
    assert webmap.item.created is not None
    assert webmap.item.created.utcoffset() is not None


@pytest.mark.parametrize(
    "map_id",
    [
        "02e734a5-f957-4235-b3ef-9f4bb8c010ef",
        "X" * 32,
        "0" * 31,
        "../../users",
        "8084352A30684044ACF0345A194E2D96",
    ],
)
def test_map_ids_are_32_lowercase_hex_characters(map_id: str) -> None:
    reject(sample(id=map_id), r"^id: String should match pattern")
    assert parse_webmap(sample(id=uuid.uuid4().hex)).id is not None


def test_the_format_version_is_required_and_checked() -> None:
    doc = sample()
    del doc["format_version"]
    reject(doc, r"^format_version: Field required")
    reject(sample(format_version="2.0"), r"^format_version: Input should be '1.0'")


def test_spatial_references_are_web_mercator_or_wgs84() -> None:
    assert parse_webmap(sample(spatial_reference=3857)).spatial_reference == 3857
    reject(sample(spatial_reference=27700), r"^spatial_reference")


# --- the initial extent ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extent", "match"),
    [
        ([-181, 0, 10, 10], "longitudes"),
        ([0, 0, 180.5, 10], "longitudes"),
        ([0, -91, 10, 10], "latitudes"),
        ([10, 0, 0, 10], "west <= east"),
        ([0, 10, 10, 0], "south <= north"),
        ([0, 0, 10], "Field required"),
        ([0, 0, 10, 10, 20], "Tuple should have at most 4"),
        ([0, 0, "east", 10], "valid number"),
        ([0, 0, float("inf"), 10], "finite number"),
        ([0, 0, float("nan"), 10], "finite number"),
    ],
)
def test_bad_initial_extents_are_refused(extent: list[Any], match: str) -> None:
    reject(sample(initial_extent=extent), rf"^initial_extent.*{match}")


def test_nan_in_json_is_refused() -> None:
    text = json.dumps(sample()).replace("24.96", "NaN")
    reject(text, "initial_extent")


def test_a_point_extent_is_accepted() -> None:
    webmap = parse_webmap(sample(initial_extent=[24.9, 60.1, 24.9, 60.1]))
    assert webmap.initial_extent == (24.9, 60.1, 24.9, 60.1)


# --- layers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layer_id", ["", "a b", "../etc", "x" * 65, "née", "a.b"])
def test_layer_ids_are_slugs(layer_id: str) -> None:
    reject(with_layer(1, id=layer_id), r"operational_layers\[1\]\.id: String should match")


@pytest.mark.parametrize(
    "where",
    [("basemap", "buildings"), ("tables", "buildings"), ("operational_layers", "sites")],
)
def test_layer_ids_are_unique_across_the_map(where: tuple[str, str]) -> None:
    doc = sample()
    section, duplicate = where
    target = doc["basemap"]["layers"][0] if section == "basemap" else doc[section][0]
    target["id"] = duplicate
    reject(doc, rf"layer id '{duplicate}' is used more than once")


@pytest.mark.parametrize("opacity", [-0.1, 1.01])
def test_opacity_is_between_0_and_1(opacity: float) -> None:
    reject(with_layer(2, opacity=opacity), r"operational_layers\[2\]\.opacity")


def test_scales_follow_arcgis() -> None:
    layer = parse_webmap(with_layer(2, min_scale=100_000, max_scale=1_000)).operational_layers[2]
    assert (layer.min_scale, layer.max_scale) == (100_000, 1_000)
    assert parse_webmap(with_layer(2, min_scale=0, max_scale=5_000))
    assert parse_webmap(with_layer(2, min_scale=5_000, max_scale=0))
    reject(with_layer(2, min_scale=1_000, max_scale=100_000), r"min_scale .* must be at least")
    reject(with_layer(2, min_scale=-1), r"min_scale: Input should be greater than or equal")
    reject(with_layer(0, max_scale=float("inf")), r"max_scale")


def test_unknown_or_missing_layer_types_are_refused() -> None:
    reject(with_layer(1, type="wfs"), r"operational_layers\[1\]: Input tag 'wfs'")
    doc = sample()
    del doc["operational_layers"][1]["type"]
    reject(doc, r"operational_layers\[1\]: Unable to extract tag")


def test_members_of_another_layer_type_are_refused() -> None:
    reject(with_layer(1, export_tiles_allowed=True), r"export_tiles_allowed: Extra inputs")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"service": "1city"}, r"\.service: String should match"),
        ({"service": "../city"}, r"\.service"),
        ({"layer": "a-b"}, r"\.layer: String should match"),
        ({"layer": "x" * 64}, r"\.layer"),
        ({"geometry_type": "Circle"}, r"\.geometry_type"),
        ({"editing": {"create": True, "merge": True}}, r"\.editing\.merge: Extra inputs"),
        ({"editing": {"editable_fields": ["ok", "not ok"]}}, r"\.editing\.editable_fields\[1\]"),
        ({"attachments_enabled": "maybe"}, r"\.attachments_enabled"),
    ],
)
def test_bad_feature_layers_are_refused(changes: dict[str, Any], match: str) -> None:
    reject(with_layer(2, **changes), rf"^operational_layers\[2\]{match}")


@pytest.mark.parametrize(
    "expression",
    [
        "status = 'ok'",
        "osm_id > 3 AND (status IN ('ok', 'due') OR status IS NULL)",
        "name LIKE 'Man%' AND NOT checked_on < DATE('2024-01-01')",
        "INCLUDE",
        "name = 'a ((( b'",
    ],
)
def test_definition_expressions_in_cql2_are_accepted(expression: str) -> None:
    layer = parse_webmap(with_layer(2, definition_expression=expression)).operational_layers[2]
    assert isinstance(layer, FeatureLayerRef)
    assert layer.definition_expression == expression


@pytest.mark.parametrize(
    ("expression", "match"),
    [
        ("status = ", "not valid CQL2 text"),
        ("status == 'ok'", "not valid CQL2 text"),
        ("1 = 1; DROP TABLE sites", "not valid CQL2 text"),
        ("checked_on = DATE('2024-13-01')", "not valid CQL2 text"),
        ("", "is empty"),
        ("   ", "is empty"),
        ("status = 'ok'\x00", "NUL"),
        ("(" * 101 + "a1 = 1" + ")" * 101, "nested more than 100"),
        ("status = '" + "x" * 10_000 + "'", "at most 10000"),
    ],
)
def test_bad_definition_expressions_are_refused(expression: str, match: str) -> None:
    reject(with_layer(2, definition_expression=expression), rf"definition_expression.*{match}")


def test_definition_expressions_of_tables_are_checked_too() -> None:
    doc = sample()
    doc["tables"][0]["definition_expression"] = "result = "
    reject(doc, r"^tables\[0\]\.definition_expression")


def test_tables_have_no_map_display_members() -> None:
    doc = sample()
    doc["tables"][0]["opacity"] = 0.5
    reject(doc, r"^tables\[0\]\.opacity: Extra inputs")
    doc = sample()
    doc["tables"][0]["type"] = "feature"
    reject(doc, r"^tables\[0\]\.type")


def test_tile_layers() -> None:
    layer = parse_webmap(
        with_layer(0, service="helsinki-vt", style_url="https://example.com/style.json")
    ).operational_layers[0]
    assert isinstance(layer, TileLayerRef)
    assert layer.max_export_tile_count == 100_000
    assert layer.style_url == "https://example.com/style.json"


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"max_export_tile_count": 0}, "max_export_tile_count"),
        ({"max_export_tile_count": 10_000_001}, "max_export_tile_count"),
        ({"style_url": "file:///etc/passwd"}, "style_url: must be an absolute http"),
        ({"type": "raster_tile", "style_url": "https://e.com/s.json"}, "vector_tile layers only"),
        ({"service": "tiles/../../x"}, "service"),
    ],
)
def test_bad_tile_layers_are_refused(changes: dict[str, Any], match: str) -> None:
    reject(with_layer(0, **changes), rf"^operational_layers\[0\].*{match}")


def test_online_only_layers() -> None:
    wms = with_layer(3, url="https://example.com/wms?service=WMS", kind="wms", layer_name="roads")
    layer = parse_webmap(wms).operational_layers[3]
    assert isinstance(layer, OnlineOnlyLayerRef)
    assert (layer.kind, layer.layer_name) == ("wms", "roads")
    tms = with_layer(3, url="https://example.com/{z}/{x}/{-y}.png")
    assert parse_webmap(tms)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"url": "ftp://example.com/{z}/{x}/{y}"}, "absolute http"),
        ({"url": "/tiles/{z}/{x}/{y}.png"}, "absolute http"),
        ({"url": "https:///{z}/{x}/{y}.png"}, "absolute http"),
        ({"url": "https://example.com/{z}/{x}/{y} .png"}, "spaces"),
        ({"url": "javascript:alert(1)"}, "absolute http"),
        ({"url": "https://example.com/{z}/{y}.png"}, r"no \{x\}"),
        ({"url": "https://example.com/tiles.png"}, r"no \{z\}, \{x\}, \{y\}"),
        ({"kind": "wfs"}, "kind"),
    ],
)
def test_bad_online_only_layers_are_refused(changes: dict[str, Any], match: str) -> None:
    reject(with_layer(3, **changes), rf"^operational_layers\[3\].*{match}")


def test_basemaps_hold_tile_and_online_only_layers_only() -> None:
    doc = sample()
    doc["basemap"]["layers"].append(copy.deepcopy(SAMPLE["operational_layers"][1]))
    reject(doc, r"^basemap\.layers\[1\]: Input tag 'feature'")


# --- relationships --------------------------------------------------------------------------


def with_relationship(**changes: Any) -> dict[str, Any]:
    doc = sample()
    doc["relationships"][0].update(changes)
    return doc


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"origin": "nowhere"}, "joins 'nowhere', which is not a feature layer or table"),
        ({"destination": "buildings"}, "joins 'buildings'"),
        ({"origin": "osm-live"}, "joins 'osm-live'"),
        ({"cardinality": "N:M"}, r"relationships\[0\]\.cardinality"),
        ({"origin_key": "osm id"}, r"relationships\[0\]\.origin_key"),
        ({"id": "../x"}, r"relationships\[0\]\.id"),
    ],
)
def test_bad_relationships_are_refused(changes: dict[str, Any], match: str) -> None:
    reject(with_relationship(**changes), match)


def test_relationship_ids_are_unique() -> None:
    doc = sample()
    doc["relationships"].append(copy.deepcopy(doc["relationships"][0]))
    reject(doc, "relationship id 'site_inspections' is used more than once")


# --- offline settings and sharing -----------------------------------------------------------


@pytest.mark.parametrize(
    ("offline", "match"),
    [
        ({"attachment_option": "AllLayers"}, r"offline\.attachment_option"),
        ({"sync_direction": "sideways"}, r"offline\.sync_direction"),
        ({"update_mode": "sometimes"}, r"offline\.update_mode"),
        ({"online_only_option": "use_authored"}, r"offline\.online_only_option"),
        (
            {"online_only_option": "use_authored_settings"},
            r"offline\.online_only_option: Input should be 'exclude' or 'include'",
        ),
        ({"reference_basemap_filename": "../basemap.tpkx"}, "without folders"),
        ({"reference_basemap_filename": ".."}, "without folders"),
        ({"reference_basemap_directory": "a\nb"}, "one line"),
        ({"download_everything": True}, "Extra inputs"),
    ],
)
def test_bad_offline_settings_are_refused(offline: dict[str, Any], match: str) -> None:
    reject(sample(offline=offline), match)


def test_offline_settings_with_a_reference_basemap() -> None:
    offline = {
        "reference_basemap_directory": "/sdcard/maps",
        "reference_basemap_filename": "b.vtpk",
    }
    settings = parse_webmap(sample(offline=offline)).offline
    assert settings.reference_basemap_filename == "b.vtpk"
    assert settings.include_basemap is True


@pytest.mark.parametrize(
    ("sharing", "match"),
    [
        ({"owner": "a b"}, r"sharing\.owner"),
        ({"groups": ["crew", "../admins"]}, r"sharing\.groups\[1\]"),
        ({"groups": ["g"] * 101}, r"sharing\.groups"),
        ({"public": "yes please"}, r"sharing\.public"),
        ({"access": "public"}, r"sharing\.access: Extra inputs"),
    ],
)
def test_bad_sharing_is_refused(sharing: dict[str, Any], match: str) -> None:
    reject(sample(sharing=sharing), match)


# --- parse_webmap ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"{", "^document: Invalid JSON"),
        (b"", "^document: Invalid JSON"),
        (b"\xff\xfe{}", "^document: Invalid JSON"),
        (b"[]", "^document: Input should be an object"),
        (b"null", "^document: Input should be an object"),
        ('{"format_version": "9"}', r"^format_version: Input should be '1.0' \(and 2 more"),
        (b"[" * 10_000 + b"]" * 10_000, "recursion limit"),
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "recursion limit"),
    ],
)
def test_malformed_json_is_refused(data: bytes | str, match: str) -> None:
    reject(data, match)


def test_documents_over_1_mib_are_refused_before_parsing() -> None:
    padding = " " * MAX_WEBMAP_BYTES
    text = json.dumps(SAMPLE)[:-1] + padding + "}"
    reject(text, "at most 1,048,576 bytes")
    reject(text.encode(), "at most 1,048,576 bytes")
    reject(bytearray(text.encode()), "at most 1,048,576 bytes")
    # multi-byte characters count as bytes
    reject(
        json.dumps(sample(item={"title": "t", "description": "é" * 600_000}), ensure_ascii=False),
        "at most",
    )


def test_other_inputs_are_refused() -> None:
    reject(42, "JSON text or a mapping, not int")
    reject([SAMPLE], "JSON text or a mapping, not list")


def test_unknown_members_are_refused_everywhere() -> None:
    reject(sample(extra=1), r"^extra: Extra inputs are not permitted$")
    doc = sample()
    doc["operational_layers"][2]["editing"]["approve"] = True
    reject(doc, r"^operational_layers\[2\]\.editing\.approve: Extra inputs")


def test_hostile_member_names_are_shortened_in_messages() -> None:
    error = reject(sample(**{"x" * 5000: 1}), "Extra inputs")
    assert len(str(error)) < 200


def test_input_values_are_not_echoed() -> None:
    error = reject(with_layer(2, layer="<script>alert(1)</script>"), r"\.layer")
    assert "<script>" not in str(error)


def test_the_first_problem_is_named_with_a_count_of_the_rest() -> None:
    doc = with_layer(2, opacity=2, min_scale=-1)
    error = reject(doc, r"^operational_layers\[2\]\.opacity: .* \(and 1 more problem\)$")
    assert "problems" not in str(error)


def test_the_public_names_exist() -> None:
    import offmaps.schemas  # noqa: PLC0415

    for name in offmaps.schemas.__all__:
        assert hasattr(offmaps.schemas, name), name
