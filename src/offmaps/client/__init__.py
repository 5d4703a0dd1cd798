"""The offmaps SDK: talk to an offmaps server over HTTP (httpx).

Beside the server, which it never imports. Errors from the server's problem documents are raised
again as the same :mod:`offmaps.errors` classes. :class:`OfflineMapTask` takes web maps offline
(docs/offline.md); :class:`AsyncOfflineMapTask` is the same for asyncio code;
:class:`OfflineMapSyncTask` syncs a package's edits with the server (docs/sync.md);
:class:`OfflineMapAreaManager` makes a map's preplanned areas, which devices download with
``OfflineMapTask.get_preplanned_map_areas()`` (docs/preplanned.md);
:class:`TileCaches` manages its tile caches and moves tiles through presigned URLs
(docs/cache.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers only: at run time, __getattr__ below imports on first use
    from offmaps.client.areas import (
        AsyncDownloadPreplannedOfflineMapJob,
        AsyncOfflineMapAreaManager,
        AsyncPreplannedMapArea,
        DownloadPreplannedOfflineMapJob,
        DownloadPreplannedOfflineMapParameters,
        OfflineMapAreaManager,
        PreplannedMapArea,
        PreplannedMapAreaItem,
        PreplannedPackageItem,
        PreplannedPackagingStatus,
        PreplannedUpdateCapabilities,
        PreplannedUpdateMode,
    )
    from offmaps.client.caches import TileCaches
    from offmaps.client.offline import (
        AsyncGenerateOfflineMapJob,
        AsyncOfflineMapTask,
        GenerateOfflineMapJob,
        GenerateOfflineMapResult,
        JobStatus,
        OfflineMapTask,
        PortalItem,
    )
    from offmaps.client.portal import Credentials, Portal, WebMapSummary
    from offmaps.client.sync import (
        AsyncOfflineMapSyncTask,
        LayerSyncResult,
        OfflineMapSyncJob,
        OfflineMapSyncResult,
        OfflineMapSyncTask,
        OfflineMapUpdatesInfo,
        PreplannedScheduledUpdatesOption,
        SyncOfflineMapParameters,
    )

__all__ = [
    "AsyncDownloadPreplannedOfflineMapJob",
    "AsyncGenerateOfflineMapJob",
    "AsyncOfflineMapAreaManager",
    "AsyncOfflineMapSyncTask",
    "AsyncOfflineMapTask",
    "AsyncPreplannedMapArea",
    "Credentials",
    "DownloadPreplannedOfflineMapJob",
    "DownloadPreplannedOfflineMapParameters",
    "GenerateOfflineMapJob",
    "GenerateOfflineMapResult",
    "JobStatus",
    "LayerSyncResult",
    "OfflineMapAreaManager",
    "OfflineMapSyncJob",
    "OfflineMapSyncResult",
    "OfflineMapSyncTask",
    "OfflineMapTask",
    "OfflineMapUpdatesInfo",
    "PreplannedScheduledUpdatesOption",
    "Portal",
    "PortalItem",
    "PreplannedMapArea",
    "PreplannedMapAreaItem",
    "PreplannedPackageItem",
    "PreplannedPackagingStatus",
    "PreplannedUpdateCapabilities",
    "PreplannedUpdateMode",
    "SyncOfflineMapParameters",
    "TileCaches",
    "WebMapSummary",
]

# Lazy, so that a command that needs one part (``offmaps sync`` needs :mod:`.sync`, not
# :mod:`.offline` with its tile archives) imports only that part (docs/cli.md, "Start-up").
_EXPORTS: dict[str, str] = {
    "AsyncDownloadPreplannedOfflineMapJob": "offmaps.client.areas",
    "AsyncOfflineMapAreaManager": "offmaps.client.areas",
    "AsyncPreplannedMapArea": "offmaps.client.areas",
    "DownloadPreplannedOfflineMapJob": "offmaps.client.areas",
    "DownloadPreplannedOfflineMapParameters": "offmaps.client.areas",
    "OfflineMapAreaManager": "offmaps.client.areas",
    "PreplannedMapArea": "offmaps.client.areas",
    "PreplannedMapAreaItem": "offmaps.client.areas",
    "PreplannedPackageItem": "offmaps.client.areas",
    "PreplannedPackagingStatus": "offmaps.client.areas",
    "PreplannedUpdateCapabilities": "offmaps.client.areas",
    "PreplannedUpdateMode": "offmaps.client.areas",
    "TileCaches": "offmaps.client.caches",
    "AsyncGenerateOfflineMapJob": "offmaps.client.offline",
    "AsyncOfflineMapTask": "offmaps.client.offline",
    "GenerateOfflineMapJob": "offmaps.client.offline",
    "GenerateOfflineMapResult": "offmaps.client.offline",
    "JobStatus": "offmaps.client.offline",
    "OfflineMapTask": "offmaps.client.offline",
    "PortalItem": "offmaps.client.offline",
    "Credentials": "offmaps.client.portal",
    "Portal": "offmaps.client.portal",
    "WebMapSummary": "offmaps.client.portal",
    "AsyncOfflineMapSyncTask": "offmaps.client.sync",
    "LayerSyncResult": "offmaps.client.sync",
    "OfflineMapSyncJob": "offmaps.client.sync",
    "OfflineMapSyncResult": "offmaps.client.sync",
    "OfflineMapSyncTask": "offmaps.client.sync",
    "OfflineMapUpdatesInfo": "offmaps.client.sync",
    "PreplannedScheduledUpdatesOption": "offmaps.client.sync",
    "SyncOfflineMapParameters": "offmaps.client.sync",
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
