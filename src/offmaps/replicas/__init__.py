"""The server side of offline editing: the sync service of the replicas a server handed out.

Layer 5 of DESIGN.md, above the catalog it reads and writes through. :class:`SyncService` takes
change sets from devices, decides each change with the pure merge rules of :mod:`offmaps.sync`,
writes the feature stores, and answers downloads and the conflict review queue;
:class:`AttachmentUploads` takes attachments' bytes in resumable, hash-checked parts.
"""

from offmaps.replicas.service import (
    Conflict,
    DownloadSize,
    LayerRules,
    ReplicaInfo,
    SyncService,
    layer_rules,
)
from offmaps.replicas.uploads import AttachmentUploads, UploadPart, UploadState

__all__ = [
    "AttachmentUploads",
    "Conflict",
    "DownloadSize",
    "LayerRules",
    "ReplicaInfo",
    "SyncService",
    "UploadPart",
    "UploadState",
    "layer_rules",
]
