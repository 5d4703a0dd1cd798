"""What an offline map is asked for: parameters, per-layer overrides, capabilities, estimates.

These are the wire models of the offline API (JSON over HTTP) and the objects of the SDK, with
the snake_case names of ArcGIS's ``GenerateOfflineMapParameters``,
``GenerateOfflineMapParameterOverrides`` and ``OfflineMapCapabilities``. The area of interest
travels as a GeoJSON geometry in CRS84; an envelope whose west is greater than its east crosses
the antimeridian.
"""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from offmaps.schemas import (
    AttachmentOption,
    AttachmentSyncDirection,
    OnlineOnlyOption,
    UpdateMode,
)
from offmaps.tiling.area import MAX_AREA_BYTES, Area, area_from_bbox

__all__ = [
    "MAX_AREA_BYTES",
    "MAX_THUMBNAIL_BYTES",
    "Area",
    "CapabilityReason",
    "DestinationTableRowFilter",
    "ExportTileCacheParameters",
    "GenerateGeodatabaseParameters",
    "GenerateLayerOption",
    "GenerateOfflineMapParameterOverrides",
    "GenerateOfflineMapParameters",
    "LayerEstimate",
    "LayerKind",
    "OfflineCapability",
    "OfflineItemInfo",
    "OfflineMapCapabilities",
    "OfflineMapEstimate",
    "OnlineOnlyServicesOption",
    "SyncModel",
    "TileArchiveFormat",
    "area_from_bbox",
    "encode_thumbnail",
    "thumbnail_bytes",
]

LayerKind = Literal["feature", "table", "vector_tile", "raster_tile", "online_only"]
"""The kinds of layers and tables of a web map."""

Scale = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A scale denominator; 0 means no limit."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DestinationTableRowFilter(StrEnum):
    """Which rows of related tables an offline map gets (ArcGIS ``DestinationTableRowFilter``)."""

    RELATED_ONLY = "related_only"
    """Only rows related to the features taken offline."""
    ALL = "all"
    """Every row."""


OnlineOnlyServicesOption = OnlineOnlyOption
"""What becomes of online-only layers (ArcGIS ``OnlineOnlyServicesOption``): the web map's
:class:`~offmaps.schemas.webmap.OnlineOnlyOption`, under the name the offline map parameters
of the ArcGIS SDKs give it."""


class TileArchiveFormat(StrEnum):
    """The container of exported tiles."""

    MBTILES = "mbtiles"
    PMTILES = "pmtiles"


class SyncModel(StrEnum):
    """How a feature service's layers sync (ArcGIS ``SyncModel``)."""

    PER_LAYER = "per_layer"
    PER_REPLICA = "per_replica"


class OfflineItemInfo(_Model):
    """The offline map's item: editable, or replacing the web map's."""

    title: Annotated[str, Field(min_length=1, max_length=250)]
    snippet: Annotated[str, Field(max_length=250)] = ""
    description: Annotated[str, Field(max_length=65_536)] = ""
    tags: Annotated[
        tuple[Annotated[str, Field(min_length=1, max_length=64)], ...], Field(max_length=50)
    ] = ()
    thumbnail: str | None = None
    """A PNG or JPEG image, base64-encoded (:func:`encode_thumbnail`), at most
    :data:`MAX_THUMBNAIL_BYTES`; ``None`` for one made from the basemap."""

    @field_validator("thumbnail")
    @classmethod
    def _check_thumbnail(cls, text: str | None) -> str | None:
        if text is not None:
            thumbnail_bytes(text)
        return text


MAX_THUMBNAIL_BYTES = 1024 * 1024
"""The largest thumbnail accepted."""
_IMAGE_SUFFIXES = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpg"}


def encode_thumbnail(data: bytes) -> str:
    """A PNG or JPEG image as :attr:`OfflineItemInfo.thumbnail` takes it."""
    text = base64.b64encode(data).decode("ascii")
    thumbnail_bytes(text)
    return text


def thumbnail_bytes(text: str) -> tuple[bytes, str]:
    """The image of an encoded thumbnail and its file suffix (``.png`` or ``.jpg``).

    Raises:
        ValueError: not base64, over :data:`MAX_THUMBNAIL_BYTES`, or neither PNG nor JPEG.
    """
    if len(text) > MAX_THUMBNAIL_BYTES * 4 // 3 + 4:
        raise ValueError(f"the thumbnail is over {MAX_THUMBNAIL_BYTES:,} bytes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the thumbnail is not base64") from None
    for magic, suffix in _IMAGE_SUFFIXES.items():
        if data.startswith(magic):
            return data, suffix
    raise ValueError("the thumbnail must be a PNG or JPEG image")


class GenerateOfflineMapParameters(_Model):
    """Everything an on-demand offline map is made with (ArcGIS ``GenerateOfflineMapParameters``).

    Defaults come from the web map author's offline settings when made by
    :func:`offmaps.offline.plan.create_default_parameters`.
    """

    area_of_interest: Area
    min_scale: Scale = 0
    """The most zoomed-out scale of tile layers to take; 0 for each layer's own."""
    max_scale: Scale = 0
    """The most zoomed-in scale of tile layers to take; 0 for each layer's own."""
    include_basemap: bool = True
    reference_basemap_directory: Annotated[str, Field(max_length=1024)] | None = None
    reference_basemap_filename: Annotated[str, Field(max_length=255)] | None = None
    is_definition_expression_filter_enabled: bool = True
    destination_table_row_filter: DestinationTableRowFilter = DestinationTableRowFilter.RELATED_ONLY
    continue_on_errors: bool = True
    return_layer_attachment_option: AttachmentOption = AttachmentOption.INCLUDE_ALL
    attachment_sync_direction: AttachmentSyncDirection = AttachmentSyncDirection.BIDIRECTIONAL
    return_schema_only_for_editable_layers: bool = False
    update_mode: UpdateMode = UpdateMode.SYNC_WITH_FEATURE_SERVICES
    online_only_services_option: OnlineOnlyServicesOption = OnlineOnlyServicesOption.EXCLUDE
    item_info: OfflineItemInfo | None = None
    """The offline map's item; ``None`` keeps the web map's."""
    tile_format: TileArchiveFormat = TileArchiveFormat.MBTILES

    @model_validator(mode="after")
    def _check_scales(self) -> GenerateOfflineMapParameters:
        if self.min_scale and self.max_scale and self.min_scale < self.max_scale:
            msg = (
                f"min_scale (the most zoomed-out, 1:{self.min_scale:g}) must be at least "
                f"max_scale (the most zoomed-in, 1:{self.max_scale:g})"
            )
            raise ValueError(msg)
        return self


class GenerateLayerOption(_Model):
    """One layer or table of a feature service's extract (ArcGIS ``GenerateLayerOption``)."""

    layer_id: str
    """The web map's id of the layer or table."""
    where_clause: Annotated[str, Field(max_length=10_000)] | None = None
    """A CQL2 text filter; with the definition expression filter enabled, both apply."""
    area: Area | None = None
    """This layer's own extent; ``None`` for the offline map's area."""
    return_attachments: bool = False
    include_null_geometry: bool = False
    schema_only: bool = False


class GenerateGeodatabaseParameters(_Model):
    """The extract of one feature service (ArcGIS ``GenerateGeodatabaseParameters``)."""

    service: str
    layer_options: tuple[GenerateLayerOption, ...]
    sync_model: SyncModel = SyncModel.PER_LAYER
    attachments_sync_direction: AttachmentSyncDirection = AttachmentSyncDirection.BIDIRECTIONAL


class ExportTileCacheParameters(_Model):
    """The export of one tile layer (ArcGIS ``ExportTileCacheParameters`` and
    ``ExportVectorTilesParameters``)."""

    layer_id: str
    min_zoom: Annotated[int, Field(ge=0, le=30)]
    max_zoom: Annotated[int, Field(ge=0, le=30)]
    area: Area | None = None
    """This layer's own extent; ``None`` for the offline map's area."""

    @model_validator(mode="after")
    def _check_levels(self) -> ExportTileCacheParameters:
        if self.min_zoom > self.max_zoom:
            raise ValueError(f"min_zoom {self.min_zoom} is above max_zoom {self.max_zoom}")
        return self


class GenerateOfflineMapParameterOverrides(_Model):
    """Per-layer parameters, pre-filled and editable (ArcGIS
    ``GenerateOfflineMapParameterOverrides``). Removing a layer's entry leaves it out."""

    generate_geodatabase: dict[str, GenerateGeodatabaseParameters] = {}
    """By feature service name."""
    export_tiles: dict[str, ExportTileCacheParameters] = {}
    """By tile layer id: raster and vector tile layers."""
    online_only_layers: tuple[str, ...] = ()
    """Ids of layers and tables kept online only (not downloaded)."""


class CapabilityReason(StrEnum):
    """Why a layer cannot be taken offline (ArcGIS ``OfflineCapability``)."""

    UNSUPPORTED_TYPE = "unsupported_type"
    SYNC_DISABLED = "sync_disabled"
    EXPORT_DISABLED = "export_disabled"
    SHARED_SERVICE_ENDPOINT = "shared_service_endpoint"
    ONLINE_ONLY = "online_only"


class OfflineCapability(_Model):
    """Whether one layer or table can be taken offline, and why not."""

    layer_id: str
    title: str
    kind: LayerKind
    supports_offline: bool
    reason: CapabilityReason | None = None
    message: str | None = None


class OfflineMapCapabilities(_Model):
    """Per layer and table, whether it can be taken offline (ArcGIS ``OfflineMapCapabilities``)."""

    layers: tuple[OfflineCapability, ...]
    tables: tuple[OfflineCapability, ...]

    @property
    def has_errors(self) -> bool:
        """Whether some layer or table cannot be taken offline."""
        return not all(c.supports_offline for c in (*self.layers, *self.tables))


class LayerEstimate(_Model):
    """What one layer or table would bring down."""

    layer_id: str
    kind: str
    features: int | None = None
    attachments: int | None = None
    """Attachment records of the rows, when attachments are taken."""
    attachment_bytes: int | None = None
    """The bytes of those attachments (distinct files, each counted once in the package),
    part of ``bytes``."""
    tiles: int | None = None
    min_zoom: int | None = None
    max_zoom: int | None = None
    bytes: int
    measured: bool
    """Whether sizes come from the data (else from typical sizes)."""
    error: str | None = None
    """Why the layer would fail (an export over its limit), or ``None``."""


class OfflineMapEstimate(_Model):
    """Counts and bytes before any work starts (ArcGIS cannot do this)."""

    layers: tuple[LayerEstimate, ...]
    omitted: tuple[str, ...] = ()
    """Layers left out (removed from the overrides, not supported, online only)."""
    overhead_bytes: int = 0
    """The package's files that belong to no one layer: each replica's GeoPackage without rows
    (schemas, indexes, sync tables), the manifest, the thumbnail."""

    @property
    def bytes(self) -> int:
        """The estimated download, in bytes: every layer's, and the overhead."""
        return sum(layer.bytes for layer in self.layers) + self.overhead_bytes

    @property
    def tiles(self) -> int:
        """Tiles in all tile layers."""
        return sum(layer.tiles or 0 for layer in self.layers)

    @property
    def features(self) -> int:
        """Rows in all feature layers and tables."""
        return sum(layer.features or 0 for layer in self.layers)
