"""Every service of a server, built from its settings: the same for the HTTP app and a worker.

:func:`build_services` opens the catalog (feature services, tile layers, web maps, blobs), the
state stores, the object store, the sync service and the job runner with the job kinds this
process can run. The HTTP edge (:func:`offmaps.server.create_app`) only wraps them; a worker,
the CLI or a scheduler calls the same function with the same settings and gets the same
services.

The state stores come from one typed table, :data:`STATE_BACKENDS`, keyed by backend name; the
embedded default keeps them in the data folder. With ``OFFMAPS_DATABASE_URL`` the ``postgres``
row keeps the jobs, the replicas, the map areas and the sync state in PostgreSQL (users and
web maps stay embedded until their turn comes), each store's tables versioned by the migrations of
:func:`state_migrations`, which ``offmaps db upgrade`` applies (:func:`upgrade_database`). The
object store (jobs' files now, tile caches later) comes from another, :data:`STORAGE_BACKENDS`,
since where bytes live is chosen apart from where state lives: the local folder ``DATA/objects``
by default, S3 another row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from offmaps.cache import SQLiteTileIndex, TileCacheService, TileIndex
from offmaps.cache.jobs import (
    clean_cache_kind,
    export_cache_kind,
    import_cache_kind,
    seed_cache_kind,
)
from offmaps.catalog import Catalog
from offmaps.errors import FeatureStoreError, StorageError
from offmaps.jobs import (
    FolderJobStore,
    InProcessJobRunner,
    JobKind,
    JobKinds,
    JobRunner,
    JobStore,
)
from offmaps.offline.generate import OfflineMapServices, generate_offline_map_kind
from offmaps.offline.preplanned import MapAreas, PreplannedServices, package_map_area_kind
from offmaps.replicas import SyncService
from offmaps.settings import ServerSettings
from offmaps.state import (
    MapAreaStore,
    ReplicaRegistry,
    SQLiteMapAreaStore,
    SQLiteReplicaRegistry,
    SQLiteSyncStateStore,
    SQLiteUserStore,
    SyncStateStore,
    UserStore,
)
from offmaps.storage import (
    BlobStore,
    BlobUploads,
    LocalBlobStore,
    LocalObjectStore,
    ObjectStore,
    ObjectUploads,
    SQLiteBlobStore,
    URLSigner,
    prefixed,
)

__all__ = [
    "ARCHIVES_PREFIX",
    "EMBEDDED",
    "LOCAL",
    "POSTGRES",
    "S3",
    "STATE_BACKENDS",
    "STORAGE_BACKENDS",
    "STORAGE_KEY_FILE",
    "TILE_BLOBS",
    "Services",
    "StateBackend",
    "StorageBackend",
    "build_services",
    "open_caches",
    "state_backend",
    "state_migrations",
    "storage_backend",
    "upgrade_database",
]

if TYPE_CHECKING:
    from offmaps.state.postgres import AppliedMigration, Migration, PostgresDatabase
    from offmaps.storage import S3Config

_log = logging.getLogger(__name__)

EMBEDDED = "embedded"
"""The state backend of the embedded default: files in the data folder."""
POSTGRES = "postgres"
"""The state backend of ``OFFMAPS_DATABASE_URL``: jobs, replicas, map areas and sync state in
PostgreSQL so far."""
LOCAL = "local"
"""The storage backend of the embedded default: objects as files of ``DATA/objects``."""
S3 = "s3"
"""The storage backend of ``OFFMAPS_STORAGE_URL=s3://BUCKET/PREFIX``."""
TILE_BLOBS = "tile-blobs"
"""The key prefix of the local tile blob store's presigned URLs (``/storage/tile-blobs/...``)."""
STORAGE_KEY_FILE = "storage-key"
"""The file in the data folder holding the generated secret of presigned URLs."""
ARCHIVES_PREFIX = "cache-archives"
"""The object store's prefix of tile archives uploaded for cache imports."""


@dataclass(frozen=True)
class StateBackend:
    """How each state store of one backend opens from settings."""

    users: Callable[[ServerSettings], UserStore]
    replicas: Callable[[ServerSettings], ReplicaRegistry]
    jobs: Callable[[ServerSettings], JobStore]
    sync_state: Callable[[ServerSettings], SyncStateStore]
    areas: Callable[[ServerSettings], MapAreaStore]


def _state_database(settings: ServerSettings, *, check: bool = True) -> PostgresDatabase:
    """The state schema (``<OFFMAPS_DATABASE_SCHEMA>_state``) of ``OFFMAPS_DATABASE_URL``,
    with every component's version checked (:meth:`PostgresDatabase.require`) unless not
    ``check``."""
    from offmaps.state.postgres import STATE_SUFFIX, PostgresDatabase  # noqa: PLC0415 - psycopg

    if settings.database_url is None:
        raise FeatureStoreError(
            "the postgres state backend needs OFFMAPS_DATABASE_URL=postgresql://..."
        )
    database = PostgresDatabase(
        settings.database_url,
        schema=f"{settings.database_schema}{STATE_SUFFIX}",
        pool_size=settings.database_pool_size,
    )
    if not check:
        return database
    # every component at once, whichever store opens first: a schema of an older version
    # stops build_services before it has opened anything else (the cache index) to leak
    for component, migrations in state_migrations().items():
        database.require(component, migrations, migrate=settings.database_migrate)
    return database


def _postgres_jobs(settings: ServerSettings) -> JobStore:
    from offmaps.jobs.postgres import PostgresJobStore  # noqa: PLC0415 - psycopg on demand

    return PostgresJobStore(_state_database(settings), migrate=settings.database_migrate)


def _postgres_replicas(settings: ServerSettings) -> ReplicaRegistry:
    from offmaps.state.postgres_replicas import PostgresReplicaRegistry  # noqa: PLC0415

    return PostgresReplicaRegistry(_state_database(settings), migrate=settings.database_migrate)


def _postgres_users(settings: ServerSettings) -> UserStore:
    from offmaps.state.postgres_users import PostgresUserStore  # noqa: PLC0415

    return PostgresUserStore(_state_database(settings), migrate=settings.database_migrate)


def _postgres_areas(settings: ServerSettings) -> MapAreaStore:
    from offmaps.state.postgres_areas import PostgresMapAreaStore  # noqa: PLC0415

    return PostgresMapAreaStore(_state_database(settings), migrate=settings.database_migrate)


def _postgres_sync_state(settings: ServerSettings) -> SyncStateStore:
    from offmaps.state.postgres_syncstate import PostgresSyncStateStore  # noqa: PLC0415

    return PostgresSyncStateStore(_state_database(settings), migrate=settings.database_migrate)


_EMBEDDED_STATE = StateBackend(
    users=lambda settings: SQLiteUserStore(settings.data_dir / "users.sqlite"),
    replicas=lambda settings: SQLiteReplicaRegistry(settings.data_dir / "replicas.sqlite"),
    jobs=lambda settings: FolderJobStore(settings.data_dir / "jobs"),
    sync_state=lambda settings: SQLiteSyncStateStore(settings.data_dir / "sync.sqlite"),
    areas=lambda settings: SQLiteMapAreaStore(settings.data_dir / "areas.sqlite"),
)

STATE_BACKENDS: Mapping[str, StateBackend] = MappingProxyType(
    {
        EMBEDDED: _EMBEDDED_STATE,
        # web maps stay in the data folder until their turn
        POSTGRES: dataclasses.replace(
            _EMBEDDED_STATE,
            users=_postgres_users,
            jobs=_postgres_jobs,
            replicas=_postgres_replicas,
            areas=_postgres_areas,
            sync_state=_postgres_sync_state,
        ),
    }
)
"""The state backends by name."""


def state_migrations() -> Mapping[str, tuple[Migration, ...]]:
    """The migrations of every state store kept in PostgreSQL, by component (imported when
    asked for: psycopg is the postgis extra's)."""
    from offmaps.jobs import postgres as jobs  # noqa: PLC0415 - psycopg on demand
    from offmaps.state import postgres_areas as areas  # noqa: PLC0415
    from offmaps.state import postgres_replicas as replicas  # noqa: PLC0415
    from offmaps.state import postgres_syncstate as sync_state  # noqa: PLC0415
    from offmaps.state import postgres_users as users  # noqa: PLC0415

    return MappingProxyType(
        {
            jobs.COMPONENT: jobs.MIGRATIONS,
            replicas.COMPONENT: replicas.MIGRATIONS,
            areas.COMPONENT: areas.MIGRATIONS,
            sync_state.COMPONENT: sync_state.MIGRATIONS,
            users.COMPONENT: users.MIGRATIONS,
        }
    )


def state_backend(settings: ServerSettings) -> str:
    """The state backend ``settings`` ask for: ``postgres`` with a database URL, else
    ``embedded``."""
    return POSTGRES if settings.database_url else EMBEDDED


def upgrade_database(settings: ServerSettings) -> list[AppliedMigration]:
    """Bring every PostgreSQL store of ``settings`` to this offmaps's version: apply the
    missing migrations of each component of :data:`STATE_MIGRATIONS` (each under the schema's
    lock, so several processes may run it at once), and make the tile caches' index tables.
    Returns the steps applied (none when up to date).

    Raises:
        FeatureStoreError: no ``database_url``, the database cannot be reached, a step failed
            (nothing of that component's upgrade stays), or the tables are newer than this
            offmaps.
        CacheIndexError: the cache index's tables cannot be made.
    """
    database = _state_database(settings, check=False)
    try:
        applied = []
        for component, migrations in state_migrations().items():
            applied.extend(database.upgrade(component, migrations))
    finally:
        database.close()
    from offmaps.cache.postgres import PostgresTileIndex  # noqa: PLC0415 - psycopg on demand

    PostgresTileIndex(database.url, schema=f"{settings.database_schema}_cache").close()
    return applied


def _storage_signer(settings: ServerSettings) -> URLSigner:
    """The signer of the object store's presigned URLs: ``settings.storage_secret``, or else a
    secret generated once into ``DATA/storage-key`` (mode 0600) and read from there after.

    Raises:
        StorageError: the key file cannot be made or read, or holds no valid secret.
    """
    if settings.storage_secret is not None:
        return URLSigner(settings.storage_secret.get_secret_value().encode("utf-8"))
    return URLSigner(_load_or_create_secret(settings.data_dir / STORAGE_KEY_FILE))


def _load_or_create_secret(path: Path) -> bytes:
    """The secret in ``path`` (64 hex digits), generated first if missing.

    It is written to a private temporary file and linked into place, so that readers never see
    half a secret and two processes starting together end up with the same one.
    """
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.partial")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32) + "\n")
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use its secret
                os.link(temporary, path)
        except OSError as exc:
            reason = exc.strerror or exc
            raise StorageError(f"cannot make the storage key {path}: {reason}") from exc
        finally:
            temporary.unlink(missing_ok=True)
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read the storage key {path}: {exc}") from None
    if len(secret) < 16:
        raise StorageError(f"the storage key {path} is too short: remove it to make a new one")
    return secret


@dataclass(frozen=True)
class StorageBackend:
    """How the byte stores of one storage backend open from settings.

    Attributes:
        objects: the keyed object store (jobs' files).
        tile_blobs: the blob store of the tile caches' tiles.
        attachments: the blob store of the feature services' attachments.
    """

    objects: Callable[[ServerSettings], ObjectStore]
    tile_blobs: Callable[[ServerSettings], BlobStore]
    attachments: Callable[[ServerSettings], BlobStore]


def _local_tile_blobs(settings: ServerSettings) -> SQLiteBlobStore:
    """The tile caches' blobs in ``DATA/tile-caches/blobs.sqlite``; the blob files an older
    offmaps kept in ``DATA/tile-caches/blobs/ab/cd/`` are moved in on first open."""
    folder = settings.data_dir / "tile-caches" / "blobs"
    store = SQLiteBlobStore(
        settings.data_dir / "tile-caches" / "blobs.sqlite",
        signer=_storage_signer(settings),
        url_prefix=TILE_BLOBS,
    )
    if folder.is_dir():
        moved = store.move_from(LocalBlobStore(folder))
        _log.warning("moved %d tile blobs from %s into %s", moved, folder, store.path)
        shutil.rmtree(folder, ignore_errors=True)
    return store


def _s3_store(settings: ServerSettings, below: str, *, blobs: bool = False) -> Any:
    from offmaps.storage import S3BlobStore, S3ObjectStore  # noqa: PLC0415 - boto3 on demand

    return (S3BlobStore if blobs else S3ObjectStore)(_s3(settings, below))


def _s3(settings: ServerSettings, below: str) -> S3Config:
    from offmaps.storage import S3Config  # noqa: PLC0415 - boto3 only when S3 is asked for

    if settings.storage_url is None:
        raise StorageError("the s3 storage backend needs OFFMAPS_STORAGE_URL=s3://BUCKET/PREFIX")
    try:
        return S3Config.from_url(settings.storage_url).below(below)
    except ValueError as exc:
        raise StorageError(f"OFFMAPS_STORAGE_URL: {exc}") from None


STORAGE_BACKENDS: Mapping[str, StorageBackend] = MappingProxyType(
    {
        LOCAL: StorageBackend(
            objects=lambda settings: LocalObjectStore(
                settings.data_dir / "objects", signer=_storage_signer(settings)
            ),
            tile_blobs=_local_tile_blobs,
            attachments=lambda settings: LocalBlobStore(settings.data_dir / "blobs"),
        ),
        S3: StorageBackend(
            objects=lambda settings: _s3_store(settings, "objects"),
            tile_blobs=lambda settings: _s3_store(settings, "tile-caches/blobs", blobs=True),
            attachments=lambda settings: _s3_store(settings, "blobs", blobs=True),
        ),
    }
)
"""How the stores of each storage backend open from settings, by backend name: ``local``
(the data folder) unless ``OFFMAPS_STORAGE_URL`` names S3."""


def storage_backend(settings: ServerSettings) -> str:
    """The storage backend ``settings`` ask for: ``s3`` with a storage URL, else ``local``."""
    return S3 if settings.storage_url else LOCAL


def open_caches(settings: ServerSettings, catalog: Catalog) -> TileCacheService:
    """The tile caches of a server (the index in ``DATA/tile-caches`` or in PostgreSQL with
    ``OFFMAPS_DATABASE_URL``; the tiles' blobs in the data folder or in S3 with
    ``OFFMAPS_STORAGE_URL``), each published as a tile layer of ``catalog``, whose tile layers
    may be their sources.

    Raises:
        CacheIndexError: the index cannot be opened.
    """
    blobs = STORAGE_BACKENDS[storage_backend(settings)].tile_blobs(settings)
    index: TileIndex
    if settings.database_url:
        from offmaps.cache.postgres import PostgresTileIndex  # noqa: PLC0415 - psycopg on demand

        index = PostgresTileIndex(settings.database_url, schema=f"{settings.database_schema}_cache")
    else:
        index = SQLiteTileIndex(settings.data_dir / "tile-caches" / "index.sqlite")
    return TileCacheService(
        index,
        blobs,
        layers=catalog.tile_sources.get,
        published=catalog.tile_sources,
        seed_processes=settings.seed_processes or 2 * (os.cpu_count() or 1),
    )


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
        objects: the keyed object store: jobs' files (``jobs/<id>/files/``), tile archives
            uploaded for cache imports (``cache-archives/<sha256>``).
        caches: the tile caches (``DATA/tile-caches``: the index and the tiles' blobs).
        jobs: the job runner, with every job kind of this process.
        archives: tile archives on their way in for cache imports (parts wait in
            ``DATA/tile-caches/uploads``).
        areas: the preplanned map areas of the web maps, and their packaging.
    """

    settings: ServerSettings
    catalog: Catalog
    users: UserStore
    replicas: ReplicaRegistry
    sync: SyncService
    uploads: BlobUploads
    objects: ObjectStore
    caches: TileCacheService
    jobs: JobRunner
    archives: ObjectUploads
    areas: MapAreas

    def cleanup(self) -> None:
        """Remove what has been kept longer than ``job_keep_s``: ended jobs and their files,
        uploaded tile archives no import took, and parts of uploads that never finished."""
        self.jobs.cleanup()
        self.archives.remove_older_than(time.time() - self.settings.job_keep_s)

    def close(self) -> None:
        """Stop the jobs of this process and close every store."""
        self.jobs.close()
        # the JobStore protocol has no close (the folder store needs none); PostgreSQL's holds
        # a pool of connections
        close_jobs = getattr(self.jobs.store, "close", None)
        if callable(close_jobs):
            close_jobs()
        self.areas.store.close()
        self.caches.close()
        self.replicas.close()
        self.sync.close()
        self.catalog.close()
        self.users.close()


def open_job_runner(
    settings: ServerSettings, store: JobStore, kinds: JobKinds, objects: ObjectStore
) -> JobRunner:
    """The job runner the settings ask for: a Redis queue that ``offmaps worker`` processes
    take jobs from when ``queue_url`` is set, else a thread pool in this process."""
    # beside DATA/objects: finished files move in by a rename, not a copy
    scratch = settings.data_dir / "scratch"
    if settings.queue_url is None:
        return InProcessJobRunner(
            store, kinds, objects=objects, scratch=scratch, keep=settings.job_keep_s
        )
    from offmaps.jobs.queue import QueueJobRunner  # noqa: PLC0415 - the queue extra

    return QueueJobRunner(
        store,
        kinds,
        objects=objects,
        scratch=scratch,
        url=settings.queue_url,
        keep=settings.job_keep_s,
        heartbeat_s=settings.queue_heartbeat_s,
        maintenance_chance=settings.queue_maintenance_chance,
        namespace=settings.queue_namespace,
    )


def build_services(
    settings: ServerSettings, *, backend: str | None = None, storage: str | None = None
) -> Services:
    """Open every service of a server for ``settings``; ``backend`` and ``storage`` by default
    as the settings say (:func:`state_backend`, :func:`storage_backend`).

    Raises:
        KeyError: no state backend called ``backend``, or no storage backend ``storage``.
        FeatureStoreError: a state store in PostgreSQL cannot be opened (unreachable, or its
            tables at an older version: run ``offmaps db upgrade``).
    """
    state = STATE_BACKENDS[backend or state_backend(settings)]
    stores = STORAGE_BACKENDS[storage or storage_backend(settings)]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(
        settings.data_dir,
        features_url=settings.features_url,
        max_attachment_bytes=settings.max_body_bytes,
        blobs=stores.attachments(settings),
    )
    users = state.users(settings)
    replicas = state.replicas(settings)
    sync = SyncService(state.sync_state(settings), catalog)
    uploads = BlobUploads(
        settings.data_dir / "sync" / "uploads",
        catalog.blobs,
        max_bytes=catalog.max_attachment_bytes,
    )
    objects = stores.objects(settings)
    offline = OfflineMapServices(catalog, replicas, sync, settings.limits)
    caches = open_caches(settings, catalog)
    archives = ObjectUploads(
        settings.data_dir / "tile-caches" / "uploads",
        prefixed(objects, ARCHIVES_PREFIX),
        max_bytes=settings.import_max_bytes,
        noun="tile archive",
    )
    preplanned = PreplannedServices(
        offline,
        state.areas(settings),
        objects,
        keep_packages=settings.area_keep_packages,
        grace_s=settings.job_keep_s,
    )
    kinds: list[JobKind[Any]] = [
        generate_offline_map_kind(offline),
        package_map_area_kind(preplanned),
        seed_cache_kind(caches),
        clean_cache_kind(caches),
        export_cache_kind(caches),
        import_cache_kind(caches, archives.objects),
    ]
    jobs = open_job_runner(settings, state.jobs(settings), JobKinds(kinds), objects)
    return Services(
        settings,
        catalog,
        users,
        replicas,
        sync,
        uploads,
        objects,
        caches,
        jobs,
        archives,
        MapAreas(preplanned, jobs),
    )
