"""From a web map and parameters to what an offline map is made of: defaults, capabilities,
overrides, and the plan the server's generate job carries out.

Everything here is pure: it reads the web map document and what the server says of its tile
layers (:class:`TileLayerInfo`), so the SDK can prepare parameters without a round trip and the
server can check them before any work starts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError
from shapely.geometry import box

from offmaps.errors import InvalidOfflineParametersError, InvalidScaleRangeError
from offmaps.offline.parameters import (
    Area,
    CapabilityReason,
    DestinationTableRowFilter,
    ExportTileCacheParameters,
    GenerateGeodatabaseParameters,
    GenerateLayerOption,
    GenerateOfflineMapParameterOverrides,
    GenerateOfflineMapParameters,
    LayerKind,
    OfflineCapability,
    OfflineMapCapabilities,
    SyncModel,
)
from offmaps.schemas import (
    AttachmentOption,
    AttachmentSyncDirection,
    FeatureLayerRef,
    OnlineOnlyLayerRef,
    OnlineOnlyOption,
    TableRef,
    TileLayerRef,
    UpdateMode,
    WebMap,
)
from offmaps.tiling import get_tms, zooms_for_scale_range
from offmaps.types import BBox, ZoomRange

__all__ = [
    "FeatureLayerPlan",
    "OfflinePlan",
    "ServicePlan",
    "TileLayerInfo",
    "TileLayerPlan",
    "create_default_overrides",
    "create_default_parameters",
    "get_capabilities",
    "intersect_scales",
    "plan_offline_map",
]


@dataclass(frozen=True, slots=True)
class TileLayerInfo:
    """What the server says of a tile service: its tiling scheme, levels and bounds."""

    name: str
    tms_id: str
    min_zoom: int
    max_zoom: int
    bounds: BBox | None = None
    exportable: bool = True
    """Whether the server lets its tiles be copied (off for upstream servers by default: most
    public tile servers forbid bulk downloads)."""


@dataclass(frozen=True, slots=True)
class FeatureLayerPlan:
    """One layer or table of a service's replica."""

    layer_id: str
    layer: str
    is_table: bool
    where: str | None
    area: Area | None
    attachments: bool
    include_null_geometry: bool
    schema_only: bool


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """The replica of one feature service."""

    service: str
    layers: tuple[FeatureLayerPlan, ...]
    row_filter: DestinationTableRowFilter
    register_replica: bool
    sync_model: SyncModel = SyncModel.PER_LAYER
    attachment_sync_direction: AttachmentSyncDirection = AttachmentSyncDirection.BIDIRECTIONAL


@dataclass(frozen=True, slots=True)
class TileLayerPlan:
    """The tile archive of one tile layer."""

    layer_id: str
    service: str
    kind: str
    zooms: ZoomRange
    area: Area
    max_tiles: int
    is_basemap: bool


@dataclass(frozen=True, slots=True)
class OfflinePlan:
    """What a generate job makes, and what it leaves out (with why)."""

    services: tuple[ServicePlan, ...]
    tiles: tuple[TileLayerPlan, ...]
    online_only: tuple[str, ...]
    """Layer ids kept in the offline map as online-only layers."""
    omitted: dict[str, str] = field(default_factory=dict)
    """Layer id → why it is not in the offline map."""


def create_default_parameters(
    webmap: WebMap, area: Area, min_scale: float = 0, max_scale: float = 0
) -> GenerateOfflineMapParameters:
    """Parameters for ``area`` with the web map author's offline settings.

    Raises:
        InvalidOfflineParametersError: the scales are negative or inverted.
    """
    settings = webmap.offline
    try:
        return GenerateOfflineMapParameters(
            area_of_interest=area,
            min_scale=min_scale,
            max_scale=max_scale,
            include_basemap=settings.include_basemap,
            reference_basemap_directory=settings.reference_basemap_directory,
            reference_basemap_filename=settings.reference_basemap_filename,
            return_layer_attachment_option=settings.attachment_option,
            attachment_sync_direction=settings.attachment_sync_direction,
            return_schema_only_for_editable_layers=settings.return_schema_only_for_editable_layers,
            update_mode=settings.update_mode,
            online_only_services_option=OnlineOnlyOption.USE_AUTHORED_SETTINGS,
        )
    except ValueError as exc:
        raise InvalidOfflineParametersError(_first_error(exc)) from None


def _first_error(exc: ValueError) -> str:
    if not isinstance(exc, ValidationError):
        return str(exc)
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def get_capabilities(
    webmap: WebMap,
    parameters: GenerateOfflineMapParameters | None = None,
    tile_layers: Mapping[str, TileLayerInfo] | None = None,
) -> OfflineMapCapabilities:
    """Per layer and table, whether it can be taken offline and why not.

    With the server's ``tile_layers``, tile layers whose tiles cannot be copied (built on
    request, upstream) are reported too.
    """
    endpoints = Counter(
        (ref.service, ref.layer)
        for ref in (*webmap.operational_layers, *webmap.tables)
        if isinstance(ref, FeatureLayerRef | TableRef)
    )
    sync = parameters is None or parameters.update_mode is UpdateMode.SYNC_WITH_FEATURE_SERVICES
    layers = [_capability(ref, endpoints, sync, basemap=True) for ref in webmap.basemap.layers] + [
        _capability(ref, endpoints, sync, basemap=False) for ref in webmap.operational_layers
    ]
    tables = [_capability(ref, endpoints, sync, basemap=False) for ref in webmap.tables]
    if tile_layers is not None:
        layers = [_exportable(webmap, c, tile_layers) for c in layers]
    return OfflineMapCapabilities(layers=tuple(layers), tables=tuple(tables))


def _exportable(
    webmap: WebMap, capability: OfflineCapability, tile_layers: Mapping[str, TileLayerInfo]
) -> OfflineCapability:
    ref = webmap.find_layer(capability.layer_id)
    if not capability.supports_offline or not isinstance(ref, TileLayerRef):
        return capability
    info = tile_layers.get(ref.service)
    if info is not None and info.exportable:
        return capability
    return _cannot(
        ref.id, ref.title, ref.type, CapabilityReason.UNSUPPORTED_TYPE,
        f"the server does not allow exporting the tiles of {ref.service}",
    )  # fmt: skip


def _capability(
    ref: object, endpoints: Counter[tuple[str, str]], sync: bool, *, basemap: bool
) -> OfflineCapability:
    if isinstance(ref, FeatureLayerRef | TableRef):
        kind: LayerKind = "table" if isinstance(ref, TableRef) else "feature"
        if endpoints[(ref.service, ref.layer)] > 1:
            return _cannot(
                ref.id, ref.title, kind, CapabilityReason.SHARED_SERVICE_ENDPOINT,
                f"{ref.service}.{ref.layer} is used by more than one layer of the map",
            )  # fmt: skip
        if (
            sync
            and not ref.sync_enabled
            and (ref.editing.create or ref.editing.update or ref.editing.delete)
        ):
            return _cannot(
                ref.id, ref.title, kind, CapabilityReason.SYNC_DISABLED,
                "the layer is editable but sync is not enabled, so edits could not come back",
            )  # fmt: skip
        return OfflineCapability(layer_id=ref.id, title=ref.title, kind=kind, supports_offline=True)
    if isinstance(ref, TileLayerRef):
        if not ref.export_tiles_allowed:
            return _cannot(
                ref.id, ref.title, ref.type, CapabilityReason.EXPORT_DISABLED,
                f"the author does not allow exporting tiles of {ref.service}",
            )  # fmt: skip
        return OfflineCapability(
            layer_id=ref.id, title=ref.title, kind=ref.type, supports_offline=True
        )
    if isinstance(ref, OnlineOnlyLayerRef):
        return _cannot(
            ref.id, ref.title, "online_only", CapabilityReason.ONLINE_ONLY,
            f"{ref.kind.upper()} layers from other servers are online only",
        )  # fmt: skip
    name = type(ref).__name__  # pragma: no cover - the schema has no other layer type
    return _cannot(name, name, "online_only", CapabilityReason.UNSUPPORTED_TYPE, name)


def _cannot(
    layer_id: str, title: str, kind: LayerKind, reason: CapabilityReason, message: str
) -> OfflineCapability:
    return OfflineCapability(
        layer_id=layer_id,
        title=title,
        kind=kind,
        supports_offline=False,
        reason=reason,
        message=message,
    )


def create_default_overrides(
    webmap: WebMap, parameters: GenerateOfflineMapParameters
) -> GenerateOfflineMapParameterOverrides:
    """Per-layer parameters filled in from ``parameters``, to edit before generating.

    Only layers that can be taken offline get an entry; tile layers get the levels their
    scale range and the offline map's give (computed by :func:`plan_offline_map` on the server:
    here every level 0-30 is allowed and narrowed there).
    """
    capabilities = get_capabilities(webmap, parameters)
    capable = {
        c.layer_id for c in (*capabilities.layers, *capabilities.tables) if c.supports_offline
    }
    services: dict[str, list[GenerateLayerOption]] = {}
    for ref in (*webmap.operational_layers, *webmap.tables):
        if isinstance(ref, FeatureLayerRef | TableRef) and ref.id in capable:
            services.setdefault(ref.service, []).append(
                GenerateLayerOption(
                    layer_id=ref.id,
                    where_clause=None,
                    return_attachments=_attachments(ref, parameters.return_layer_attachment_option),
                    schema_only=parameters.return_schema_only_for_editable_layers
                    and _editable(ref),
                )
            )
    tiles = {
        ref.id: ExportTileCacheParameters(layer_id=ref.id, min_zoom=0, max_zoom=30)
        for ref in _tile_layers(webmap, parameters)
        if ref.id in capable
    }
    online = tuple(
        ref.id
        for ref in webmap.operational_layers
        if isinstance(ref, OnlineOnlyLayerRef) and _keep_online(webmap, parameters)
    )
    return GenerateOfflineMapParameterOverrides(
        generate_geodatabase={
            name: GenerateGeodatabaseParameters(
                service=name,
                layer_options=tuple(options),
                attachments_sync_direction=parameters.attachment_sync_direction,
            )
            for name, options in services.items()
        },
        export_tiles=tiles,
        online_only_layers=online,
    )


def _editable(ref: FeatureLayerRef | TableRef) -> bool:
    return ref.editing.create or ref.editing.update or ref.editing.delete


def _attachments(ref: FeatureLayerRef | TableRef, option: AttachmentOption) -> bool:
    if not ref.attachments_enabled:
        return False
    return {
        AttachmentOption.INCLUDE_ALL: True,
        AttachmentOption.EXCLUDE: False,
        AttachmentOption.INCLUDE_EDITABLE: _editable(ref),
        AttachmentOption.INCLUDE_READ_ONLY: not _editable(ref),
    }[option]


def _tile_layers(webmap: WebMap, parameters: GenerateOfflineMapParameters) -> list[TileLayerRef]:
    basemap = [
        ref
        for ref in webmap.basemap.layers
        if isinstance(ref, TileLayerRef) and parameters.include_basemap
    ]
    if parameters.reference_basemap_filename:
        basemap = []  # the device's own basemap is used instead
    return basemap + [ref for ref in webmap.operational_layers if isinstance(ref, TileLayerRef)]


def _keep_online(webmap: WebMap, parameters: GenerateOfflineMapParameters) -> bool:
    option = parameters.online_only_services_option
    if option is OnlineOnlyOption.USE_AUTHORED_SETTINGS:
        return webmap.offline.online_only_option is OnlineOnlyOption.INCLUDE
    return option is OnlineOnlyOption.INCLUDE


def intersect_scales(
    min_scale: float, max_scale: float, layer_min: float, layer_max: float
) -> tuple[float, float]:
    """The scale range both ranges allow; 0 is no limit at that end.

    A user's 1:900,000-1:5,000 on a layer drawn at 1:1,000,000-1:10,000 gives
    1:900,000-1:10,000.

    Raises:
        InvalidScaleRangeError: the ranges do not overlap.
    """
    mins = [s for s in (min_scale, layer_min) if s]
    maxes = [s for s in (max_scale, layer_max) if s]
    low = min(mins) if mins else 0.0
    high = max(maxes) if maxes else 0.0
    if low and high and low < high:
        msg = (
            f"1:{min_scale or 0:,.0f}-1:{max_scale or 0:,.0f} does not overlap the layer's "
            f"1:{layer_min or 0:,.0f}-1:{layer_max or 0:,.0f}"
        )
        raise InvalidScaleRangeError(msg)
    return low, high


def plan_offline_map(
    webmap: WebMap,
    parameters: GenerateOfflineMapParameters,
    overrides: GenerateOfflineMapParameterOverrides | None,
    tile_layers: Mapping[str, TileLayerInfo],
) -> OfflinePlan:
    """Resolve parameters and overrides into what to extract.

    Args:
        webmap: the web map taken offline.
        parameters: the offline map's parameters.
        overrides: per-layer parameters (:func:`create_default_overrides` when ``None``).
        tile_layers: the server's tile services by name.

    Raises:
        InvalidOfflineParametersError: an override names a layer the map does not have, or of
            another kind; an override's service does not match its layers'.
    """
    _check_area(webmap, parameters.area_of_interest)
    overrides = overrides or create_default_overrides(webmap, parameters)
    _check_override_ids(webmap, overrides)
    capabilities = get_capabilities(webmap, parameters, tile_layers)
    omitted = {
        c.layer_id: c.message or str(c.reason)
        for c in (*capabilities.layers, *capabilities.tables)
        if not c.supports_offline and c.reason is not CapabilityReason.ONLINE_ONLY
    }
    online_only = tuple(overrides.online_only_layers)
    for ref in webmap.iter_layers():
        if isinstance(ref, OnlineOnlyLayerRef) and ref.id not in online_only:
            omitted[ref.id] = "online only: left out of the offline map"

    services = _service_plans(webmap, parameters, overrides, omitted)
    tiles = _tile_plans(webmap, parameters, overrides, tile_layers, omitted)
    return OfflinePlan(tuple(services), tuple(tiles), online_only, omitted)


def _check_area(webmap: WebMap, area: Area) -> None:
    if webmap.initial_extent is None:
        return
    extent = box(*webmap.initial_extent)
    if not area.aoi().to_wgs84().intersects(extent):
        west, south, east, north = webmap.initial_extent
        raise InvalidOfflineParametersError(
            f"the area of interest lies outside the map's extent [{west}, {south}, {east}, {north}]"
        )


def _check_override_ids(webmap: WebMap, overrides: GenerateOfflineMapParameterOverrides) -> None:
    for service, gdb in overrides.generate_geodatabase.items():
        if gdb.service != service:
            msg = f"generate_geodatabase[{service!r}] names service {gdb.service!r}"
            raise InvalidOfflineParametersError(msg)
        for option in gdb.layer_options:
            ref = webmap.find_layer(option.layer_id)
            if not isinstance(ref, FeatureLayerRef | TableRef):
                raise InvalidOfflineParametersError(
                    f"overrides: the map has no feature layer or table {option.layer_id[:64]!r}"
                )
            if ref.service != service:
                raise InvalidOfflineParametersError(
                    f"overrides: {option.layer_id!r} is in service {ref.service!r}, not {service!r}"
                )
    for layer_id, export in overrides.export_tiles.items():
        ref = webmap.find_layer(layer_id)
        if not isinstance(ref, TileLayerRef) or export.layer_id != layer_id:
            raise InvalidOfflineParametersError(
                f"overrides: the map has no tile layer {layer_id[:64]!r}"
            )
    for layer_id in overrides.online_only_layers:
        if webmap.find_layer(layer_id) is None:
            raise InvalidOfflineParametersError(
                f"overrides: the map has no layer {layer_id[:64]!r}"
            )


def _service_plans(
    webmap: WebMap,
    parameters: GenerateOfflineMapParameters,
    overrides: GenerateOfflineMapParameterOverrides,
    omitted: dict[str, str],
) -> list[ServicePlan]:
    chosen = {
        option.layer_id: option
        for gdb in overrides.generate_geodatabase.values()
        for option in gdb.layer_options
    }
    plans: dict[str, list[FeatureLayerPlan]] = {}
    for ref in (*webmap.operational_layers, *webmap.tables):
        if not isinstance(ref, FeatureLayerRef | TableRef) or ref.id in omitted:
            continue
        if ref.id in overrides.online_only_layers:
            continue
        option = chosen.get(ref.id)
        if option is None:
            omitted[ref.id] = "removed from the overrides"
            continue
        wheres = [option.where_clause] if option.where_clause else []
        if parameters.is_definition_expression_filter_enabled and ref.definition_expression:
            wheres.insert(0, ref.definition_expression)
        plans.setdefault(ref.service, []).append(
            FeatureLayerPlan(
                layer_id=ref.id,
                layer=ref.layer,
                is_table=isinstance(ref, TableRef),
                where=" AND ".join(f"({w})" for w in wheres) or None,
                area=option.area,
                attachments=option.return_attachments,
                include_null_geometry=option.include_null_geometry,
                schema_only=option.schema_only,
            )
        )
    register = parameters.update_mode is UpdateMode.SYNC_WITH_FEATURE_SERVICES
    return [
        ServicePlan(
            service,
            tuple(layers),
            parameters.destination_table_row_filter,
            register,
            overrides.generate_geodatabase[service].sync_model,
            overrides.generate_geodatabase[service].attachments_sync_direction,
        )
        for service, layers in plans.items()
    ]


def _tile_plans(
    webmap: WebMap,
    parameters: GenerateOfflineMapParameters,
    overrides: GenerateOfflineMapParameterOverrides,
    tile_layers: Mapping[str, TileLayerInfo],
    omitted: dict[str, str],
) -> list[TileLayerPlan]:
    basemap_ids = {ref.id for ref in webmap.basemap.layers}
    plans = []
    for ref in webmap.iter_layers():
        if not isinstance(ref, TileLayerRef) or ref.id in omitted:
            continue
        if ref.id in basemap_ids and not parameters.include_basemap:
            omitted[ref.id] = "the basemap is not included"
            continue
        if ref.id in basemap_ids and parameters.reference_basemap_filename:
            omitted[ref.id] = "a basemap on the device is used instead"
            continue
        export = overrides.export_tiles.get(ref.id)
        if export is None:
            omitted[ref.id] = "removed from the overrides"
            continue
        info = tile_layers.get(ref.service)
        if info is None:
            omitted[ref.id] = f"the server has no tile service {ref.service!r}"
            continue
        try:
            zooms = _zooms(parameters, ref, info, export)
        except InvalidScaleRangeError as exc:
            omitted[ref.id] = str(exc)
            continue
        plans.append(
            TileLayerPlan(
                layer_id=ref.id,
                service=ref.service,
                kind=ref.type,
                zooms=zooms,
                area=export.area or parameters.area_of_interest,
                max_tiles=ref.max_export_tile_count,
                is_basemap=ref.id in basemap_ids,
            )
        )
    return plans


def _zooms(
    parameters: GenerateOfflineMapParameters,
    ref: TileLayerRef,
    info: TileLayerInfo,
    export: ExportTileCacheParameters,
) -> ZoomRange:
    low_scale, high_scale = intersect_scales(
        parameters.min_scale, parameters.max_scale, ref.min_scale, ref.max_scale
    )
    by_scale = zooms_for_scale_range(get_tms(info.tms_id), low_scale, high_scale)
    low = max(by_scale.min, info.min_zoom, export.min_zoom)
    high = min(by_scale.max, info.max_zoom, export.max_zoom)
    if low > high:
        msg = (
            f"the requested levels {by_scale.min}-{by_scale.max} miss the levels "
            f"{info.min_zoom}-{info.max_zoom} of {info.name}"
        )
        raise InvalidScaleRangeError(msg)
    return ZoomRange(low, high)
