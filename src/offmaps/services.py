"""Every service of a server, built from its settings: the same for the HTTP app and a worker.

:func:`build_services` opens the catalog (feature services, tile layers, web maps, blobs), the
state stores, the sync service and the job runner with the job kinds this process can run.
The HTTP edge (:func:`offmaps.server.create_app`) only wraps them; a worker, the CLI or a
scheduler calls the same function with the same settings and gets the same services.

The state stores come from one typed table, :data:`STATE_BACKENDS`, keyed by backend name; the
embedded default keeps them in the data folder. The PostgreSQL backend of the scale-out work is
another row of the table, not a branch in this code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from offmaps.catalog import Catalog
from offmaps.jobs import FolderJobStore, InProcessJobRunner, JobKinds, JobRunner, JobStore
from offmaps.offline.generate import OfflineMapServices, generate_offline_map_kind
from offmaps.replicas import AttachmentUploads, SyncService
from offmaps.settings import ServerSettings
from offmaps.state import (
    ReplicaRegistry,
    SQLiteReplicaRegistry,
    SQLiteSyncStateStore,
    SQLiteUserStore,
    SyncStateStore,
    UserStore,
)

__all__ = ["EMBEDDED", "STATE_BACKENDS", "Services", "StateBackend", "build_services"]

EMBEDDED = "embedded"
"""The state backend of the embedded default: files in the data folder."""


@dataclass(frozen=True)
class StateBackend:
    """How each state store of one backend opens from settings."""

    users: Callable[[ServerSettings], UserStore]
    replicas: Callable[[ServerSettings], ReplicaRegistry]
    jobs: Callable[[ServerSettings], JobStore]
    sync_state: Callable[[ServerSettings], SyncStateStore]


STATE_BACKENDS: Mapping[str, StateBackend] = MappingProxyType(
    {
        EMBEDDED: StateBackend(
            users=lambda settings: SQLiteUserStore(settings.data_dir / "users.sqlite"),
            replicas=lambda settings: SQLiteReplicaRegistry(settings.data_dir / "replicas.sqlite"),
            jobs=lambda settings: FolderJobStore(settings.data_dir / "jobs"),
            sync_state=lambda settings: SQLiteSyncStateStore(settings.data_dir / "sync.sqlite"),
        )
    }
)
"""The state backends by name."""


@dataclass(frozen=True)
class Services:
    """The services of one server process.

    Attributes:
        settings: what they were built from.
        catalog: feature services, tile layers, web maps and blobs.
        users: users and OAuth2 clients.
        replicas: the replicas handed out.
        sync: the sync service.
        uploads: attachments' bytes on their way in from devices.
        jobs: the job runner, with every job kind of this process.
    """

    settings: ServerSettings
    catalog: Catalog
    users: UserStore
    replicas: ReplicaRegistry
    sync: SyncService
    uploads: AttachmentUploads
    jobs: JobRunner

    def close(self) -> None:
        """Stop the jobs of this process and close every store."""
        self.jobs.close()
        self.replicas.close()
        self.sync.close()
        self.catalog.close()
        self.users.close()


def build_services(settings: ServerSettings, *, backend: str = EMBEDDED) -> Services:
    """Open every service of a server for ``settings``.

    Raises:
        KeyError: no state backend called ``backend``.
    """
    state = STATE_BACKENDS[backend]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(
        settings.data_dir,
        features_url=settings.features_url,
        max_attachment_bytes=settings.max_body_bytes,
    )
    users = state.users(settings)
    replicas = state.replicas(settings)
    sync = SyncService(state.sync_state(settings), catalog)
    uploads = AttachmentUploads(
        settings.data_dir / "sync" / "uploads",
        catalog.blobs,
        max_bytes=catalog.max_attachment_bytes,
    )
    offline = OfflineMapServices(catalog, replicas, sync)
    jobs = InProcessJobRunner(state.jobs(settings), JobKinds([generate_offline_map_kind(offline)]))
    return Services(settings, catalog, users, replicas, sync, uploads, jobs)
