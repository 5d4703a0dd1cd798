"""The server side of offline editing: the sync service of the replicas a server handed out.

Layer 5 of DESIGN.md, above the catalog it reads and writes through. :class:`SyncService` takes
change sets from devices, decides each change with the pure merge rules of :mod:`offmaps.sync`,
writes the feature stores, and answers downloads and the conflict review queue. Attachments'
bytes come in resumable, hash-checked parts (:class:`offmaps.storage.BlobUploads`).
"""

from offmaps.replicas.service import (
    Conflict,
    DownloadSize,
    LayerRules,
    ReplicaInfo,
    SyncService,
    layer_rules,
)

__all__ = [
    "Conflict",
    "DownloadSize",
    "LayerRules",
    "ReplicaInfo",
    "SyncService",
    "layer_rules",
]
