"""Documents offmaps owns, as pydantic models: the web map (``docs/webmap.md``).

Layer 0 of DESIGN.md: imports :mod:`offmaps.errors` only, and pydantic and pygeofilter.
"""

from offmaps.schemas.webmap import (
    MAX_WEBMAP_BYTES,
    WEBMAP_FORMAT_VERSION,
    AttachmentOption,
    AttachmentSyncDirection,
    Basemap,
    BasemapLayer,
    EditingCapabilities,
    FeatureLayerRef,
    ItemInfo,
    OfflineSettings,
    OnlineOnlyLayerRef,
    OnlineOnlyOption,
    OperationalLayer,
    RelationshipRef,
    Sharing,
    SyncDirection,
    TableRef,
    TileLayerRef,
    UpdateMode,
    WebMap,
    parse_webmap,
)

__all__ = [
    "MAX_WEBMAP_BYTES",
    "WEBMAP_FORMAT_VERSION",
    "AttachmentOption",
    "AttachmentSyncDirection",
    "Basemap",
    "BasemapLayer",
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
