"""The server's side of feature update files: an area's changes read through sync's download.

An area has no registered replica; its scope (the area, the layers' filters, related-only
tables) is that of a synthetic :class:`~offmaps.state.replicas.Replica`, and
:class:`~offmaps.replicas.SyncService` reads its download since the previous package's
generation: rows changed, rows gone out of the scope as deletions, attachment records.

Not imported by :mod:`offmaps.offline.updates` (the device side, which the SDK imports, never
reaches the server's modules).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from offmaps.features.model import LayerSchema
from offmaps.offline.updates.chain import UpdateFile, UpdateLink
from offmaps.offline.updates.features import write_feature_update
from offmaps.replicas import SyncService
from offmaps.schemas.changeset import DownloadHeader, ServerChange
from offmaps.state.replicas import LayerScope, Replica

__all__ = ["area_replica", "area_replica_id", "iter_area_download", "write_area_feature_update"]


def area_replica_id(area_id: str, service: str) -> str:
    """The id of an area's synthetic replica of ``service``: 32 hex digits, the same for every
    packaging of the area (every device of a preplanned package shares it)."""
    return hashlib.sha256(f"offmaps-area\0{area_id}\0{service}".encode()).hexdigest()[:32]


def area_replica(
    area_id: str,
    service: str,
    scope: Mapping[str, LayerScope],
    *,
    map_id: str,
    generation: int,
    attachments: bool,
    owner: str | None = None,
) -> Replica:
    """A replica that is never registered, with an area's scope of one feature service.

    Args:
        area_id: the preplanned map area.
        service: the feature service.
        scope: the layers and tables of the area's package, each with the rows it holds (as
            the packaging job extracted them).
        map_id: the web map.
        generation: the generation of the package it describes.
        attachments: whether the package carries attachments (their records then come with
            each upserted row).
        owner: the area's owner.
    """
    return Replica(
        id=area_replica_id(area_id, service),
        service=service,
        layers=tuple(scope),
        generation=generation,
        owner=owner,
        map_id=map_id,
        sync_direction="download",
        sync_model="per_layer",
        created=0.0,
        scope=dict(scope),
        attachment_sync_direction="bidirectional" if attachments else "none",
    )


def iter_area_download(
    sync: SyncService, replica: Replica, since: int, layers: Sequence[str] | None = None
) -> Iterator[DownloadHeader | ServerChange]:
    """The header and changes of ``replica``'s download since generation ``since``
    (:meth:`SyncService.iter_download`).

    Raises:
        GenerationAheadError: ``since`` is beyond the service's generation.
    """
    return sync.iter_download(replica, since, layers)


def write_area_feature_update(
    path: Path,
    sync: SyncService,
    replica: Replica,
    link: UpdateLink,
    since: int,
    *,
    previous: Mapping[str, LayerSchema] | None = None,
    created: datetime | None = None,
) -> tuple[UpdateFile, DownloadHeader]:
    """Write the feature update file of an area's service: its changes since ``since`` (the
    previous package's generation), to the service's generation now.

    Returns:
        The file written, and the download's header (its ``generation`` is the new package's).
    """
    records = iter_area_download(sync, replica, since)
    header = next(records)
    if not isinstance(header, DownloadHeader):
        raise AssertionError("a download starts with its header")
    changes = (record for record in records if isinstance(record, ServerChange))
    store = sync.catalog.feature_service(replica.service)
    written = write_feature_update(
        path,
        link,
        replica.service,
        header,
        changes,
        store.list_layers(),
        previous=previous,
        created=created,
    )
    return written, header
