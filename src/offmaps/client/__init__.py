"""The offmaps SDK: talk to an offmaps server over HTTP (httpx).

Beside the server, which it never imports. Errors from the server's problem documents are raised
again as the same :mod:`offmaps.errors` classes. :class:`OfflineMapTask` takes web maps offline
(docs/offline.md); :class:`AsyncOfflineMapTask` is the same for asyncio code;
:class:`OfflineMapSyncTask` syncs a package's edits with the server (docs/sync.md);
:class:`TileCaches` manages its tile caches and moves tiles through presigned URLs
(docs/cache.md).
"""

from __future__ import annotations

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
    SyncOfflineMapParameters,
)

__all__ = [
    "AsyncGenerateOfflineMapJob",
    "AsyncOfflineMapSyncTask",
    "AsyncOfflineMapTask",
    "Credentials",
    "GenerateOfflineMapJob",
    "GenerateOfflineMapResult",
    "JobStatus",
    "LayerSyncResult",
    "OfflineMapSyncJob",
    "OfflineMapSyncResult",
    "OfflineMapSyncTask",
    "OfflineMapUpdatesInfo",
    "OfflineMapTask",
    "Portal",
    "PortalItem",
    "SyncOfflineMapParameters",
    "TileCaches",
    "WebMapSummary",
]
