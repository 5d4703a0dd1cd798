"""The offmaps SDK: talk to an offmaps server over HTTP (httpx).

Beside the server, which it never imports. Errors from the server's problem documents are raised
again as the same :mod:`offmaps.errors` classes. :class:`OfflineMapTask` takes web maps offline
(docs/offline.md); :class:`AsyncOfflineMapTask` is the same for asyncio code.
"""

from __future__ import annotations

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

__all__ = [
    "AsyncGenerateOfflineMapJob",
    "AsyncOfflineMapTask",
    "Credentials",
    "GenerateOfflineMapJob",
    "GenerateOfflineMapResult",
    "JobStatus",
    "OfflineMapTask",
    "Portal",
    "PortalItem",
    "WebMapSummary",
]
