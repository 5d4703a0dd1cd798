"""Offline parameters, capabilities, overrides and the plan, from web map documents."""

from __future__ import annotations

from typing import Any

import pytest

from offmaps.errors import InvalidAOIError, InvalidOfflineParametersError, InvalidScaleRangeError
from offmaps.offline.parameters import (
    Area,
    CapabilityReason,
    GenerateOfflineMapParameterOverrides,
    GenerateOfflineMapParameters,
    OfflineItemInfo,
    SyncModel,
    area_from_bbox,
    encode_thumbnail,
    thumbnail_bytes,
)
from offmaps.offline.plan import (
    TileLayerInfo,
    create_default_overrides,
    create_default_parameters,
    get_capabilities,
    intersect_scales,
    plan_offline_map,
)
from offmaps.schemas import AttachmentOption, UpdateMode, WebMap
from offmaps.types import ZoomRange

HELSINKI = area_from_bbox(24.935, 60.164, 24.953, 60.179)
TILES = {
    "basemap": TileLayerInfo("basemap", "WebMercatorQuad", 12, 15),
    "buildings": TileLayerInfo("buildings", "WebMercatorQuad", 13, 16),
    "helsinki-vt": TileLayerInfo("helsinki-vt", "WebMercatorQuad", 10, 18),
}
EDIT = {"create": True, "update": True, "delete": True}


def webmap(**changes: Any) -> WebMap:
    document: dict[str, Any] = {
        "format_version": "1.0",
        "item": {"title": "Inspections"},
        "basemap": {
            "title": "OSM",
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
                "min_scale": 1_000_000,
                "max_scale": 10_000,
            },
            {
                "type": "vector_tile",
                "id": "live",
                "title": "Live tiles",
                "service": "helsinki-vt",
            },
            {
                "type": "feature",
                "id": "sites",
                "title": "Sites",
                "service": "helsinki",
                "layer": "sites",
                "editing": EDIT,
                "sync_enabled": True,
                "attachments_enabled": True,
                "definition_expression": "kind = 'fire_hydrant'",
            },
            {
                "type": "feature",
                "id": "streets",
                "title": "Streets",
                "service": "helsinki",
                "layer": "streets",
                "attachments_enabled": True,
            },
            {
                "type": "online_only",
                "id": "osm-live",
                "title": "OSM live",
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
                "editing": EDIT,
                "sync_enabled": True,
            }
        ],
        "offline": {"attachment_option": "include_editable", "update_mode": "no_updates"},
    }
    document.update(changes)
    return WebMap.model_validate(document)


def test_defaults_come_from_the_authors_offline_settings() -> None:
    parameters = create_default_parameters(webmap(), HELSINKI, 900_000, 5_000)
    assert parameters.return_layer_attachment_option is AttachmentOption.INCLUDE_EDITABLE
    assert parameters.update_mode is UpdateMode.NO_UPDATES
    assert (parameters.min_scale, parameters.max_scale) == (900_000, 5_000)
    with pytest.raises(InvalidOfflineParametersError, match="min_scale"):
        create_default_parameters(webmap(), HELSINKI, 5_000, 900_000)


def test_capabilities_say_why_a_layer_cannot_go_offline() -> None:
    layers = {c.layer_id: c for c in get_capabilities(webmap()).layers}
    assert layers["basemap"].supports_offline
    assert layers["sites"].supports_offline
    assert layers["live"].reason is CapabilityReason.EXPORT_DISABLED
    assert layers["osm-live"].reason is CapabilityReason.ONLINE_ONLY
    assert get_capabilities(webmap()).has_errors

    unsynced = webmap(
        tables=[
            {"id": "inspections", "title": "I", "service": "helsinki", "layer": "inspections",
             "editing": EDIT},
            {"id": "again", "title": "I", "service": "helsinki", "layer": "inspections"},
        ]
    )  # fmt: skip
    tables = {c.layer_id: c for c in get_capabilities(unsynced).tables}
    assert tables["inspections"].reason is CapabilityReason.SHARED_SERVICE_ENDPOINT
    assert tables["again"].reason is CapabilityReason.SHARED_SERVICE_ENDPOINT
    alone = webmap(
        tables=[
            {"id": "inspections", "title": "I", "service": "helsinki", "layer": "inspections",
             "editing": EDIT}
        ]
    )  # fmt: skip
    (table,) = get_capabilities(alone).tables
    assert table.reason is CapabilityReason.SYNC_DISABLED
    parameters = create_default_parameters(alone, HELSINKI)  # no_updates: no sync needed
    assert not get_capabilities(alone, parameters).has_errors or not any(
        c.reason is CapabilityReason.SYNC_DISABLED
        for c in get_capabilities(alone, parameters).tables
    )


def test_scale_ranges_intersect_as_arcgis_describes() -> None:
    assert intersect_scales(900_000, 5_000, 1_000_000, 10_000) == (900_000, 10_000)
    assert intersect_scales(0, 0, 1_000_000, 10_000) == (1_000_000, 10_000)
    assert intersect_scales(50_000, 0, 0, 0) == (50_000, 0)
    with pytest.raises(InvalidScaleRangeError):
        intersect_scales(5_000, 1_000, 1_000_000, 10_000)


def test_overrides_are_prefilled_per_service_and_tile_layer() -> None:
    parameters = create_default_parameters(webmap(), HELSINKI)
    overrides = create_default_overrides(webmap(), parameters)
    (gdb,) = overrides.generate_geodatabase.values()
    options = {o.layer_id: o for o in gdb.layer_options}
    assert set(options) == {"sites", "streets", "inspections"}
    assert options["sites"].return_attachments  # editable, include_editable
    assert not options["streets"].return_attachments  # read only
    assert set(overrides.export_tiles) == {"basemap", "buildings"}


def test_the_plan_applies_filters_levels_and_says_what_it_left_out() -> None:
    parameters = create_default_parameters(webmap(), HELSINKI, 900_000, 5_000)
    overrides = create_default_overrides(webmap(), parameters)
    gdb = overrides.generate_geodatabase["helsinki"]
    trimmed = gdb.model_copy(
        update={"layer_options": tuple(o for o in gdb.layer_options if o.layer_id != "streets")}
    )
    overrides = overrides.model_copy(update={"generate_geodatabase": {"helsinki": trimmed}})
    plan = plan_offline_map(webmap(), parameters, overrides, TILES)
    (service,) = plan.services
    layers = {layer.layer_id: layer for layer in service.layers}
    assert layers["sites"].where == "(kind = 'fire_hydrant')"
    assert layers["inspections"].is_table
    assert not service.register_replica  # the author's no_updates
    tiles = {t.layer_id: t for t in plan.tiles}
    # 1:900,000 - 1:10,000 (the layer's max: level 15 is 1:17,000, 16 is 1:8,500) on the
    # archive's levels 13-16
    assert tiles["buildings"].zooms == ZoomRange(13, 15)
    assert tiles["basemap"].zooms == ZoomRange(12, 15)
    assert plan.omitted["streets"] == "removed from the overrides"
    assert "export" in plan.omitted["live"]
    assert "online only" in plan.omitted["osm-live"]

    no_basemap = parameters.model_copy(update={"include_basemap": False})
    assert "basemap" in plan_offline_map(webmap(), no_basemap, None, TILES).omitted


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"online_only_layers": ["nope"]}, "no layer 'nope'"),
        ({"export_tiles": {"sites": {"layer_id": "sites", "min_zoom": 0, "max_zoom": 3}}},
         "no tile layer 'sites'"),
        ({"generate_geodatabase": {"helsinki": {"service": "helsinki",
          "layer_options": [{"layer_id": "nope"}]}}}, "no feature layer or table 'nope'"),
        ({"generate_geodatabase": {"other": {"service": "other",
          "layer_options": [{"layer_id": "sites"}]}}}, "in service 'helsinki'"),
    ],
)  # fmt: skip
def test_overrides_naming_unknown_layers_are_refused(
    overrides: dict[str, Any], message: str
) -> None:
    parameters = create_default_parameters(webmap(), HELSINKI)
    with pytest.raises(InvalidOfflineParametersError, match=message):
        plan_offline_map(
            webmap(),
            parameters,
            GenerateOfflineMapParameterOverrides.model_validate(overrides),
            TILES,
        )


@pytest.mark.parametrize(
    "geometry",
    [
        {"type": "Point", "coordinates": [24.9, 60.1]},
        {"type": "Polygon", "coordinates": []},
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]},
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [float("nan"), 1], [0, 0]]]},
        {"type": "Nope"},
    ],
)
def test_bad_areas_are_refused(geometry: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"area|geometry|polygon|GeoJSON|finite|coordinates"):
        Area(geometry=geometry)


def test_envelopes_may_cross_the_antimeridian_but_not_be_empty() -> None:
    fiji = area_from_bbox(177.0, -19.0, -179.0, -16.0)
    assert fiji.geometry["type"] == "MultiPolygon"
    with pytest.raises(InvalidAOIError):
        area_from_bbox(10, 10, 10, 20)
    with pytest.raises(InvalidAOIError):
        area_from_bbox(0, 20, 10, 10)


def test_parameters_round_trip_as_json() -> None:
    parameters = create_default_parameters(webmap(), HELSINKI, 100_000, 5_000)
    again = GenerateOfflineMapParameters.model_validate_json(parameters.model_dump_json())
    assert again == parameters


@pytest.mark.parametrize("option", ["exclude", "include", "use_authored_settings"])
def test_online_only_options_keep_their_wire_values(option: str) -> None:
    parameters = create_default_parameters(webmap(), HELSINKI, 100_000, 5_000)
    assert parameters.model_dump(mode="json")["online_only_services_option"] == (
        "use_authored_settings"
    )
    wire = parameters.model_dump(mode="json") | {"online_only_services_option": option}
    again = GenerateOfflineMapParameters.model_validate(wire)
    assert again.model_dump(mode="json")["online_only_services_option"] == option


def test_an_area_outside_the_maps_extent_is_refused() -> None:
    placed = webmap(initial_extent=[24.93, 60.16, 24.96, 60.18])
    parameters = create_default_parameters(placed, area_from_bbox(10, 10, 11, 11))
    with pytest.raises(InvalidOfflineParametersError, match="outside the map's extent"):
        plan_offline_map(placed, parameters, None, TILES)
    inside = create_default_parameters(placed, HELSINKI)
    assert plan_offline_map(placed, inside, None, TILES).tiles


def test_the_sync_model_and_attachment_direction_go_with_each_service() -> None:
    parameters = create_default_parameters(webmap(), HELSINKI).model_copy(
        update={"update_mode": UpdateMode.SYNC_WITH_FEATURE_SERVICES}
    )
    overrides = create_default_overrides(webmap(), parameters)
    gdb = overrides.generate_geodatabase["helsinki"].model_copy(
        update={"sync_model": SyncModel.PER_REPLICA}
    )
    overrides = overrides.model_copy(update={"generate_geodatabase": {"helsinki": gdb}})
    (service,) = plan_offline_map(webmap(), parameters, overrides, TILES).services
    assert service.sync_model is SyncModel.PER_REPLICA
    assert service.attachment_sync_direction is parameters.attachment_sync_direction
    assert service.register_replica


def test_tile_layers_the_server_does_not_export_are_not_offered() -> None:
    on_request = {
        **TILES,
        "buildings": TileLayerInfo("buildings", "WebMercatorQuad", 13, 16, exportable=False),
    }
    layers = {c.layer_id: c for c in get_capabilities(webmap(), None, on_request).layers}
    assert layers["buildings"].reason is CapabilityReason.UNSUPPORTED_TYPE
    assert layers["basemap"].supports_offline
    parameters = create_default_parameters(webmap(), HELSINKI)
    plan = plan_offline_map(webmap(), parameters, None, on_request)
    assert "does not allow exporting" in plan.omitted["buildings"]
    assert [t.layer_id for t in plan.tiles] == ["basemap"]


def test_item_info_takes_a_small_png_or_jpeg_thumbnail() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    item = OfflineItemInfo(title="Crew A", thumbnail=encode_thumbnail(png))
    assert thumbnail_bytes(item.thumbnail or "") == (png, ".png")
    for bad, message in [
        ("not base64!", "not base64"),
        (encode_thumbnail(png).replace("iV", "AA", 1), "PNG or JPEG"),
        ("A" * (2 * 1024 * 1024), "over"),
    ]:
        with pytest.raises(ValueError, match=message):
            OfflineItemInfo(title="Crew A", thumbnail=bad)
