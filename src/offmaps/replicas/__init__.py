"""The server side of offline editing: the sync service of the replicas a server handed out.

Layer 5 of DESIGN.md, above the catalog it reads and writes through. :class:`SyncService` takes
change sets from devices, decides each change with the pure merge rules of :mod:`offmaps.sync`,
writes the feature stores, and answers downloads and the conflict review queue. Attachments'
bytes come in resumable, hash-checked parts (:class:`AttachmentUploads`, the name this package
has long given :class:`offmaps.storage.BlobUploads`).
"""

from offmaps.replicas.service import (
    Conflict,
    DownloadSize,
    LayerRules,
    ReplicaInfo,
    SyncService,
    layer_rules,
)
from offmaps.storage import BlobUploads as AttachmentUploads
from offmaps.storage import UploadPart, UploadState

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
