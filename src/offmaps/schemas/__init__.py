"""Documents offmaps owns, as pydantic models: the web map (``docs/webmap.md``), change sets
(:mod:`offmaps.schemas.changeset`) and jobs (:mod:`offmaps.schemas.jobs`).

Layer 0 of DESIGN.md: imports :mod:`offmaps.errors` only, and pydantic and pygeofilter.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers only: at run time, __getattr__ below imports on first use
    from offmaps.schemas.changeset import SyncDirection
    from offmaps.schemas.jobs import JobDocument, JobLink, JobStatus
    from offmaps.schemas.webmap import (
        MAX_WEBMAP_BYTES,
        WEBMAP_FORMAT_VERSION,
        AttachmentOption,
        AttachmentSyncDirection,
        Basemap,
        BasemapLayer,
        Bookmark,
        EditingCapabilities,
        FeatureLayerRef,
        ItemInfo,
        OfflineSettings,
        OnlineOnlyLayerRef,
        OnlineOnlyOption,
        OperationalLayer,
        RelationshipRef,
        Sharing,
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
    "Bookmark",
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

# Lazy, so that importing one module (change sets, for sync) does not import the others: the web
# map's models and its CQL2 check take ~0.1-0.4 s to import (docs/cli.md, "Start-up").
_EXPORTS: dict[str, str] = {
    "AttachmentOption": "offmaps.schemas.webmap",
    "AttachmentSyncDirection": "offmaps.schemas.webmap",
    "Basemap": "offmaps.schemas.webmap",
    "BasemapLayer": "offmaps.schemas.webmap",
    "Bookmark": "offmaps.schemas.webmap",
    "EditingCapabilities": "offmaps.schemas.webmap",
    "FeatureLayerRef": "offmaps.schemas.webmap",
    "ItemInfo": "offmaps.schemas.webmap",
    "JobDocument": "offmaps.schemas.jobs",
    "JobLink": "offmaps.schemas.jobs",
    "JobStatus": "offmaps.schemas.jobs",
    "MAX_WEBMAP_BYTES": "offmaps.schemas.webmap",
    "OfflineSettings": "offmaps.schemas.webmap",
    "OnlineOnlyLayerRef": "offmaps.schemas.webmap",
    "OnlineOnlyOption": "offmaps.schemas.webmap",
    "OperationalLayer": "offmaps.schemas.webmap",
    "RelationshipRef": "offmaps.schemas.webmap",
    "Sharing": "offmaps.schemas.webmap",
    "SyncDirection": "offmaps.schemas.changeset",
    "TableRef": "offmaps.schemas.webmap",
    "TileLayerRef": "offmaps.schemas.webmap",
    "UpdateMode": "offmaps.schemas.webmap",
    "WEBMAP_FORMAT_VERSION": "offmaps.schemas.webmap",
    "WebMap": "offmaps.schemas.webmap",
    "parse_webmap": "offmaps.schemas.webmap",
}


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
