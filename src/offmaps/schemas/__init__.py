"""Documents offmaps owns, as pydantic models: the web map (``docs/webmap.md``), change sets
(:mod:`offmaps.schemas.changeset`) and jobs (:mod:`offmaps.schemas.jobs`).

Layer 0 of DESIGN.md: imports :mod:`offmaps.errors` only, and pydantic and pygeofilter.
"""

from offmaps.schemas.jobs import JobDocument, JobLink, JobStatus
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
    "JobDocument",
    "JobLink",
    "JobStatus",
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
