"""The web map document, format 1.0: what a map shows and how it may be taken offline.

A web map is a JSON document in the spirit of the ArcGIS web map specification, in snake_case: an
item (title, tags, ...), a basemap, operational layers (feature layers, vector and raster tile
layers, online-only layers), tables, relationships between them, offline settings and sharing.
``docs/webmap.md`` describes it field by field, with the ArcGIS name each field corresponds to.

The models validate everything that can be checked without a server: names and ids, scale ranges,
the initial extent, that definition expressions parse as CQL2 text, that layer ids are unique and
that relationships join layers or tables of the map. Whether the services and layers exist is
checked by the server when a map is saved. Unknown members are refused, so that a misspelt member
is an error rather than silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from offmaps.errors import InvalidWebMapError
from offmaps.schemas.changeset import ConflictPolicy, SyncDirection
from offmaps.schemas.cql2 import MAX_EXPRESSION_LENGTH, check_cql2_text

__all__ = [
    "MAX_WEBMAP_BYTES",
    "WEBMAP_FORMAT_VERSION",
    "AttachmentOption",
    "AttachmentSyncDirection",
    "Basemap",
    "BasemapLayer",
    "Bookmark",
    "EditingCapabilities",
    "FeatureLayerRef",
    "ItemInfo",
    "OfflineSettings",
    "OnlineOnlyLayerRef",
    "OnlineOnlyOption",
    "OperationalLayer",
    "RelationshipRef",
    "Sharing",
    "SyncDirection",
    "TableRef",
    "TileLayerRef",
    "UpdateMode",
    "WebMap",
    "parse_webmap",
]

WEBMAP_FORMAT_VERSION: Final = "1.0"
"""The ``format_version`` of the documents this module reads and writes."""

MAX_WEBMAP_BYTES: Final = 1024 * 1024
"""The largest web map document :func:`parse_webmap` reads, in bytes of JSON."""

# --- field types ----------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must be one line of text, without control characters")
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


def _url(value: str) -> str:
    """An absolute http(s) URL; braces are kept as they are (tile URL templates)."""
    _one_line(value)
    if " " in value:
        raise ValueError("must not contain spaces (percent-encode them)")
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


def _file_name(value: str) -> str:
    _one_line(value)
    if value in {".", ".."} or "/" in value or "\\" in value:
        raise ValueError("must be a file name, without folders")
    return value


Title = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_one_line)]
"""A title: one line of 1 to 200 characters."""

LayerId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
"""The id of a layer, table or relationship in a map: 1 to 64 letters, digits, ``_`` or ``-``."""

ServiceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")]
"""The name of a feature service or tile service on the server."""

FieldName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,62}$")]
"""The name of a layer, table or field in a feature service."""

PrincipalName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")]
"""The name of a user, client or group."""

Url = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_url)]
"""An absolute http(s) URL of at most 2,048 characters."""

MapId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
"""A web map's id: 32 lowercase hex characters (a UUID without dashes)."""

Scale = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A map scale denominator; 0 means no limit."""

GeometryTypeName = Literal[
    "Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon"
]
"""The geometry types of feature layers (as in :class:`offmaps.features.model.GeometryType`)."""

Coordinate = Annotated[float, Field(allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# --- item -----------------------------------------------------------------------------------


class ItemInfo(_Model):
    """The portal item of the map: what lists and search show (ArcGIS item properties)."""

    title: Title
    """The map's title (ArcGIS ``title``)."""
    snippet: Annotated[str, StringConstraints(max_length=250), AfterValidator(_one_line)] | None = (
        None
    )
    """A one-line summary (ArcGIS ``snippet``)."""
    description: (
        Annotated[str, StringConstraints(max_length=65_536), AfterValidator(_no_nul)] | None
    ) = None
    """A longer description, any text (ArcGIS ``description``)."""
    tags: Annotated[
        tuple[
            Annotated[
                str, StringConstraints(min_length=1, max_length=64), AfterValidator(_one_line)
            ],
            ...,
        ],
        Field(max_length=50),
    ] = ()
    """Up to 50 keywords of 1 to 64 characters (ArcGIS ``tags``)."""
    thumbnail: (
        Annotated[str, StringConstraints(max_length=2048), AfterValidator(_one_line)] | None
    ) = None
    """A URL or item-relative path of a thumbnail image (ArcGIS ``thumbnail``)."""
    owner: PrincipalName | None = None
    """The user who owns the map; set by the server (ArcGIS ``owner``)."""
    created: AwareDatetime | None = None
    """When the map was created, with its time zone; set by the server (ArcGIS ``created``)."""
    modified: AwareDatetime | None = None
    """When the map last changed, with its time zone; set by the server (ArcGIS ``modified``)."""


# --- layers ---------------------------------------------------------------------------------


class _LayerBase(_Model):
    """What every layer drawn on the map has."""

    id: LayerId
    """The layer's id, unique in the map (ArcGIS ``id``)."""
    title: Title
    """The layer's title in the legend and layer list (ArcGIS ``title``)."""
    visible: bool = True
    """Whether the layer is drawn when the map opens (ArcGIS ``visibility``)."""
    opacity: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 1.0
    """From 0 (transparent) to 1 (opaque) (ArcGIS ``opacity``)."""
    min_scale: Scale = 0
    """The most zoomed-out scale the layer is drawn at; 0 for no limit (ArcGIS ``minScale``)."""
    max_scale: Scale = 0
    """The most zoomed-in scale the layer is drawn at; 0 for no limit (ArcGIS ``maxScale``)."""

    @model_validator(mode="after")
    def _check_scales(self) -> Self:
        if self.min_scale and self.max_scale and self.min_scale < self.max_scale:
            msg = (
                f"min_scale (the most zoomed-out scale, 1:{self.min_scale:g}) must be at least "
                f"max_scale (the most zoomed-in, 1:{self.max_scale:g})"
            )
            raise ValueError(msg)
        return self


class EditingCapabilities(_Model):
    """The edits the map allows on a feature layer or table (ArcGIS ``capabilities`` and
    ``formInfo``/``popupInfo`` field editability)."""

    create: bool = False
    """Whether features or rows may be added."""
    update: bool = False
    """Whether features or rows may be changed (and attachments added or removed)."""
    delete: bool = False
    """Whether features or rows may be deleted."""
    editable_fields: Annotated[tuple[FieldName, ...], Field(max_length=500)] | None = None
    """The fields edits may set; ``None`` for every field."""


class _FeatureSource(_Model):
    """What feature layers and tables share: where the rows come from and what may be done."""

    service: ServiceName
    """The feature service on the server (the service part of ArcGIS ``url``)."""
    layer: FieldName
    """The layer or table in the service (the layer part of ArcGIS ``url``)."""
    definition_expression: (
        Annotated[
            str,
            StringConstraints(max_length=MAX_EXPRESSION_LENGTH),
            AfterValidator(check_cql2_text),
        ]
        | None
    ) = None
    """A CQL2 text filter on the rows shown (ArcGIS ``layerDefinition.definitionExpression``)."""
    editing: EditingCapabilities = EditingCapabilities()
    """The edits allowed through this map."""
    attachments_enabled: bool = False
    """Whether attachments are shown and, when editing allows updates, edited."""
    sync_enabled: bool = False
    """Whether offline copies of the layer sync edits back (ArcGIS ``Sync`` capability)."""
    conflict_policy: ConflictPolicy | None = None
    """How true sync conflicts on this layer are settled; ``None`` for the map's policy."""


class FeatureLayerRef(_LayerBase, _FeatureSource):
    """A layer of features of a feature service (ArcGIS ``ArcGISFeatureLayer``)."""

    type: Literal["feature"]
    """``feature`` (ArcGIS ``layerType``)."""
    geometry_type: GeometryTypeName | None = None
    """The geometry type of the layer, when the map states it (ArcGIS ``geometryType``)."""


class TableRef(_FeatureSource):
    """A table without geometry of a feature service (ArcGIS ``tables[]``)."""

    type: Literal["table"] = "table"
    """``table``; optional, as tables have a list of their own."""
    id: LayerId
    """The table's id, unique in the map (ArcGIS ``id``)."""
    title: Title
    """The table's title (ArcGIS ``title``)."""


class TileLayerRef(_LayerBase):
    """A layer of tiles from a tile service of the server: vector tiles (ArcGIS
    ``VectorTileLayer``) or raster tiles (ArcGIS ``ArcGISTiledMapServiceLayer``)."""

    type: Literal["vector_tile", "raster_tile"]
    """``vector_tile`` or ``raster_tile`` (ArcGIS ``layerType``)."""
    service: ServiceName
    """The tile service on the server (ArcGIS ``url``/``itemId``)."""
    style_url: Url | None = None
    """A Mapbox/MapLibre style for vector tiles (ArcGIS ``styleUrl``)."""
    export_tiles_allowed: bool = False
    """Whether the tiles may be exported for offline use (ArcGIS ``exportTilesAllowed``)."""
    max_export_tile_count: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    """The most tiles one export may hold (ArcGIS ``maxExportTilesCount``)."""

    @model_validator(mode="after")
    def _check_style(self) -> Self:
        if self.style_url is not None and self.type != "vector_tile":
            raise ValueError("style_url is for vector_tile layers only")
        return self


class OnlineOnlyLayerRef(_LayerBase):
    """A layer drawn from a third-party server that cannot be taken offline (ArcGIS
    ``WebTiledLayer``, ``WMS``, ``WebTiledLayer`` with ``wmtsInfo``)."""

    type: Literal["online_only"]
    """``online_only``."""
    url: Url
    """The service URL; for ``xyz`` a template with ``{z}``, ``{x}`` and ``{y}`` (or ``{-y}``)
    (ArcGIS ``templateUrl`` or ``url``)."""
    kind: Literal["xyz", "wms", "wmts"]
    """The protocol: an XYZ tile template, OGC WMS or OGC WMTS."""
    layer_name: (
        Annotated[str, StringConstraints(max_length=1024), AfterValidator(_one_line)] | None
    ) = None
    """The WMS layers (comma-separated) or the WMTS layer identifier (ArcGIS
    ``visibleLayers``, ``wmtsInfo.layerIdentifier``)."""
    attribution: (
        Annotated[str, StringConstraints(max_length=500), AfterValidator(_one_line)] | None
    ) = None
    """The credit line the provider asks for (ArcGIS ``copyright``)."""

    @model_validator(mode="after")
    def _check_template(self) -> Self:
        if self.kind == "xyz":
            rows = "{y}" in self.url or "{-y}" in self.url
            missing = [
                p
                for p, ok in (("{z}", "{z}" in self.url), ("{x}", "{x}" in self.url), ("{y}", rows))
                if not ok
            ]
            if missing:
                msg = (
                    f"an xyz url is a template with {{z}}, {{x}} and {{y}}: no {', '.join(missing)}"
                )
                raise ValueError(msg)
        return self


OperationalLayer = Annotated[
    FeatureLayerRef | TileLayerRef | OnlineOnlyLayerRef, Field(discriminator="type")
]
"""A layer of ``operational_layers``, told apart by its ``type``."""

BasemapLayer = Annotated[TileLayerRef | OnlineOnlyLayerRef, Field(discriminator="type")]
"""A layer of a basemap, told apart by its ``type``."""


class Basemap(_Model):
    """The layers drawn under the operational layers (ArcGIS ``baseMap``)."""

    title: Title
    """The basemap's title (ArcGIS ``baseMap.title``)."""
    layers: Annotated[tuple[BasemapLayer, ...], Field(max_length=20)] = ()
    """Tile or online-only layers, bottom first (ArcGIS ``baseMap.baseMapLayers``)."""


class RelationshipRef(_Model):
    """A one-to-many relationship between two feature layers or tables of the map (ArcGIS
    ``relationships`` of the layers' services)."""

    id: LayerId
    """The relationship's id, unique among the map's relationships (ArcGIS ``id``)."""
    name: Title
    """What the relationship is called in forms and pop-ups (ArcGIS ``name``)."""
    origin: LayerId
    """The id of the layer or table on the "one" side (ArcGIS origin ``relatedTableId``)."""
    destination: LayerId
    """The id of the layer or table on the "many" side (ArcGIS destination
    ``relatedTableId``)."""
    origin_key: FieldName
    """The field of the origin that rows of the destination refer to (ArcGIS
    ``keyField`` of the origin)."""
    destination_key: FieldName
    """The field of the destination holding the origin's key (ArcGIS ``keyField`` of the
    destination)."""
    cardinality: Literal["1:N"] = "1:N"
    """Only one-to-many (ArcGIS ``esriRelCardinalityOneToMany``)."""


# --- offline --------------------------------------------------------------------------------


class AttachmentOption(StrEnum):
    """Which layers' attachments an offline copy gets (ArcGIS ``ReturnLayerAttachmentOption``)."""

    INCLUDE_ALL = "include_all"
    """Every layer's (``AllLayers``)."""
    INCLUDE_READ_ONLY = "include_read_only"
    """Read-only layers' only (``ReadOnlyLayers``)."""
    INCLUDE_EDITABLE = "include_editable"
    """Editable layers' only (``EditableLayers``)."""
    EXCLUDE = "exclude"
    """None (``None``)."""


class AttachmentSyncDirection(StrEnum):
    """How attachments sync (ArcGIS ``AttachmentSyncDirection``)."""

    NONE = "none"
    UPLOAD = "upload"
    BIDIRECTIONAL = "bidirectional"


class UpdateMode(StrEnum):
    """Whether an offline copy receives changes (ArcGIS ``GenerateOfflineMapUpdateMode``)."""

    SYNC_WITH_FEATURE_SERVICES = "sync_with_feature_services"
    NO_UPDATES = "no_updates"


class OnlineOnlyOption(StrEnum):
    """What becomes of online-only layers offline (ArcGIS ``OnlineOnlyServicesOption``).

    The web map's own setting (``offline.online_only_option``) is ``exclude`` or ``include``;
    offline map parameters may also defer to it (``use_authored_settings``).
    """

    EXCLUDE = "exclude"
    """They are left out of the offline map."""
    INCLUDE = "include"
    """They are kept, drawn only while a connection is available."""
    USE_AUTHORED_SETTINGS = "use_authored_settings"
    """The web map author's choice (``offline.online_only_option``): for offline map
    parameters only."""


def _authored_online_only_option(value: object) -> object:
    # the web map is where the authored settings are: it cannot defer to them
    if value not in (OnlineOnlyOption.EXCLUDE, OnlineOnlyOption.INCLUDE):
        expected = "'exclude' or 'include'"
        raise PydanticCustomError("enum", f"Input should be {expected}", {"expected": expected})
    return value


_AuthoredOnlineOnlyOption = Annotated[
    OnlineOnlyOption, BeforeValidator(_authored_online_only_option)
]
"""An :class:`OnlineOnlyOption` a web map author chooses: ``exclude`` or ``include``."""


class OfflineSettings(_Model):
    """How the map is taken offline by default (ArcGIS ``GenerateOfflineMapParameters`` and the
    web map's ``applicationProperties.offline``)."""

    attachment_option: AttachmentOption = AttachmentOption.INCLUDE_ALL
    """Which layers' attachments to download (ArcGIS ``returnLayerAttachmentOption``)."""
    attachment_sync_direction: AttachmentSyncDirection = AttachmentSyncDirection.BIDIRECTIONAL
    """How attachments sync (ArcGIS ``attachmentSyncDirection``)."""
    sync_direction: SyncDirection = SyncDirection.BIDIRECTIONAL
    """How feature edits sync (ArcGIS ``syncDirection`` of the layer options)."""
    update_mode: UpdateMode = UpdateMode.SYNC_WITH_FEATURE_SERVICES
    """Whether the offline map syncs at all (ArcGIS ``updateMode``)."""
    conflict_policy: ConflictPolicy = ConflictPolicy.MANUAL
    """How true sync conflicts are settled, unless a layer says otherwise (docs/sync.md)."""
    online_only_option: _AuthoredOnlineOnlyOption = OnlineOnlyOption.EXCLUDE
    """What becomes of online-only layers (ArcGIS ``onlineOnlyServicesOption``)."""
    include_basemap: bool = True
    """Whether the basemap is taken offline (ArcGIS ``includeBasemap``)."""
    return_schema_only_for_editable_layers: bool = False
    """Download only the schema of editable layers, not their rows (ArcGIS
    ``returnSchemaOnlyForEditableLayers``)."""
    reference_basemap_directory: (
        Annotated[str, StringConstraints(max_length=1024), AfterValidator(_one_line)] | None
    ) = None
    """A folder on the device that holds a basemap to use instead of downloading one (ArcGIS
    ``referenceBasemapDirectory``)."""
    reference_basemap_filename: (
        Annotated[str, StringConstraints(max_length=255), AfterValidator(_file_name)] | None
    ) = None
    """The basemap file in that folder (ArcGIS ``referenceBasemapFilename``)."""


# --- sharing --------------------------------------------------------------------------------


class Sharing(_Model):
    """Who may see the map (ArcGIS item sharing: ``access`` and groups)."""

    owner: PrincipalName | None = None
    """The owner; set by the server to the creator."""
    groups: Annotated[tuple[PrincipalName, ...], Field(max_length=100)] = ()
    """Groups whose members may see the map."""
    public: bool = False
    """Whether everyone may see the map, signed in or not (ArcGIS ``access: public``)."""


class Bookmark(_Model):
    """A named extent of the map (ArcGIS web map ``bookmarks``): where a crew works, which a
    preplanned map area may be made from."""

    name: Title
    """The bookmark's name, unique in its map."""
    extent: tuple[Coordinate, Coordinate, Coordinate, Coordinate]
    """``[west, south, east, north]`` in degrees of longitude and latitude (WGS 84); a west
    greater than its east crosses the antimeridian."""

    @field_validator("extent")
    @classmethod
    def _check_extent(cls, extent: tuple[float, float, float, float]) -> tuple[float, ...]:
        west, south, east, north = extent
        if not all(-180 <= x <= 180 for x in (west, east)):
            raise ValueError("longitudes must be between -180 and 180 degrees")
        if not all(-90 <= y <= 90 for y in (south, north)):
            raise ValueError("latitudes must be between -90 and 90 degrees")
        if south >= north or west == east:
            raise ValueError("is [west, south, east, north] and must not be empty")
        return extent


# --- the map --------------------------------------------------------------------------------

Layer = FeatureLayerRef | TileLayerRef | OnlineOnlyLayerRef | TableRef


class WebMap(_Model):
    """A web map document (ArcGIS web map JSON and its portal item)."""

    format_version: Literal["1.0"]
    """The version of this format: ``1.0`` (ArcGIS ``version``)."""
    id: MapId | None = None
    """The map's id; set by the server (ArcGIS item ``id``)."""
    item: ItemInfo
    """Title, description and tags (ArcGIS item properties)."""
    spatial_reference: Literal[4326, 3857] = 4326
    """The EPSG code of the CRS the map is drawn in (ArcGIS ``spatialReference.wkid``)."""
    initial_extent: tuple[Coordinate, Coordinate, Coordinate, Coordinate] | None = None
    """``[west, south, east, north]`` in degrees of longitude and latitude (WGS 84) shown when
    the map opens (ArcGIS item ``extent``, ``initialState.viewpoint``)."""
    basemap: Basemap
    """The basemap (ArcGIS ``baseMap``)."""
    operational_layers: Annotated[tuple[OperationalLayer, ...], Field(max_length=500)] = ()
    """The layers over the basemap, bottom first (ArcGIS ``operationalLayers``)."""
    tables: Annotated[tuple[TableRef, ...], Field(max_length=500)] = ()
    """Tables without geometry (ArcGIS ``tables``)."""
    relationships: Annotated[tuple[RelationshipRef, ...], Field(max_length=500)] = ()
    """Relationships between the map's layers and tables."""
    offline: OfflineSettings = OfflineSettings()
    """How the map is taken offline (ArcGIS ``applicationProperties.offline``)."""
    sharing: Sharing = Sharing()
    """Who may see the map."""
    bookmarks: Annotated[tuple[Bookmark, ...], Field(max_length=500)] = ()
    """Named extents of the map (ArcGIS ``bookmarks``)."""

    @field_validator("initial_extent")
    @classmethod
    def _check_extent(
        cls, extent: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if extent is None:
            return None
        west, south, east, north = extent
        if not all(-180 <= x <= 180 for x in (west, east)):
            raise ValueError("longitudes must be between -180 and 180 degrees")
        if not all(-90 <= y <= 90 for y in (south, north)):
            raise ValueError("latitudes must be between -90 and 90 degrees")
        if west > east or south > north:
            raise ValueError("is [west, south, east, north], with west <= east, south <= north")
        return extent

    @model_validator(mode="after")
    def _check_ids(self) -> Self:
        seen: set[str] = set()
        for layer in self.iter_layers():
            if layer.id in seen:
                raise ValueError(f"layer id {layer.id!r} is used more than once")
            seen.add(layer.id)
        related = {
            ref.id: ref
            for ref in (*self.operational_layers, *self.tables)
            if isinstance(ref, FeatureLayerRef | TableRef)
        }
        relationship_ids: set[str] = set()
        for relationship in self.relationships:
            if relationship.id in relationship_ids:
                raise ValueError(f"relationship id {relationship.id!r} is used more than once")
            relationship_ids.add(relationship.id)
            for end in (relationship.origin, relationship.destination):
                if end not in related:
                    msg = (
                        f"relationship {relationship.id!r} joins {end!r}, which is not a feature "
                        "layer or table of this map"
                    )
                    raise ValueError(msg)
        names = [bookmark.name for bookmark in self.bookmarks]
        if len(set(names)) != len(names):
            raise ValueError("a bookmark name is used more than once")
        return self

    def iter_layers(self) -> Iterator[Layer]:
        """Yield every layer and table: basemap layers, operational layers, then tables."""
        yield from self.basemap.layers
        yield from self.operational_layers
        yield from self.tables

    def find_bookmark(self, name: str) -> Bookmark | None:
        """The bookmark called ``name``, or ``None``."""
        return next((found for found in self.bookmarks if found.name == name), None)

    def find_layer(self, layer_id: str) -> Layer | None:
        """The layer or table with id ``layer_id``, or ``None``."""
        return next((layer for layer in self.iter_layers() if layer.id == layer_id), None)


# --- parsing --------------------------------------------------------------------------------

_UNION_TAGS = frozenset({"feature", "vector_tile", "raster_tile", "online_only"})


def parse_webmap(data: bytes | bytearray | str | Mapping[str, Any]) -> WebMap:
    """Read and validate a web map document: JSON text or bytes, or an already decoded mapping.

    Raises:
        InvalidWebMapError: the JSON is malformed, larger than :data:`MAX_WEBMAP_BYTES`, or not a
            valid document. The message is one line naming the first problem and where it is,
            e.g. ``operational_layers[2].opacity: Input should be less than or equal to 1``.
    """
    try:
        if isinstance(data, str | bytes | bytearray):
            raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
            size = len(raw)
            if size > MAX_WEBMAP_BYTES:
                msg = f"a web map document is at most {MAX_WEBMAP_BYTES:,} bytes, not {size:,}"
                raise InvalidWebMapError(msg)
            return WebMap.model_validate_json(data)
        if isinstance(data, Mapping):
            return WebMap.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidWebMapError(_describe(exc)) from None
    raise InvalidWebMapError(
        f"a web map document is JSON text or a mapping, not {type(data).__name__}"
    )


def _describe(exc: ValidationError) -> str:
    problems = exc.errors(include_url=False, include_input=False, include_context=False)
    first = problems[0]
    where = ""
    after_index = False
    for part in first["loc"]:
        if isinstance(part, int):
            where += f"[{part}]"
            after_index = True
            continue
        # a discriminated union puts the tag after the index: layers[0].feature.title
        if not (after_index and part in _UNION_TAGS):
            shown = part if len(part) <= 64 else f"{part[:61]}..."
            where += f".{shown}" if where else shown
        after_index = False
    message = first["msg"].removeprefix("Value error, ")
    more = len(problems) - 1
    text = f"{where or 'document'}: {message}"
    if more:
        text += f" (and {more} more problem{'s' if more > 1 else ''})"
    return " ".join(text.split())[:1000]
