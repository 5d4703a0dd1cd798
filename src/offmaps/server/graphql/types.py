"""The object types of the GraphQL schema, each built from the value a service returns.

Nothing here decides anything: a type copies the fields of a service's value (a
:class:`~offmaps.cache.CacheStats`, a :class:`~offmaps.jobs.Job`...) and, where the REST API
shows a row as GeoJSON, takes the GeoJSON form from
:class:`~offmaps.replicas.geojson.GeoJSONChanges`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

import strawberry

from offmaps.cache import CacheDefinition, CacheStats, SeedPlan, SourceKind, ZoomStats
from offmaps.cache.service import StoreStats, TileURL, UploadGrant, VerifyReport
from offmaps.jobs import Job
from offmaps.replicas import ReplicaInfo
from offmaps.schemas.changeset import ChangeStatus
from offmaps.schemas.jobs import JobStatus
from offmaps.server.graphql.scalars import JSON, Long
from offmaps.storage import UploadState
from offmaps.types import TileFormat

if TYPE_CHECKING:
    from offmaps.server.graphql.context import GraphQLContext

__all__ = [
    "AttachmentUpload",
    "Cache",
    "CacheSource",
    "CacheStatsType",
    "CacheStoreStats",
    "ChangeResultType",
    "ChangeSetResultType",
    "ConflictSide",
    "ConflictStatusFilter",
    "ConflictType",
    "Download",
    "DownloadSizeType",
    "JobCancellation",
    "JobCancellationAction",
    "JobType",
    "MapAreaType",
    "LevelStats",
    "ReplicaType",
    "SeedJob",
    "SeedLevel",
    "SeedPlanType",
    "ServerChangeType",
    "Upstream",
    "TileKey",
    "TileUrl",
    "TileUrlPage",
    "UploadCommit",
    "UploadGrantType",
    "VerifyResult",
]

JobStatusEnum = strawberry.enum(JobStatus, name="JobStatus", description="Where a job is.")
TileFormatEnum = strawberry.enum(TileFormat, name="TileFormat", description="A tile format.")
SourceKindEnum = strawberry.enum(
    SourceKind, name="SourceKind", description="Where a cache's tiles come from."
)
ChangeStatusEnum = strawberry.enum(
    ChangeStatus, name="ChangeStatus", description="What became of an uploaded change."
)


@strawberry.enum(description="Which conflicts to list.")
class ConflictStatusFilter(Enum):
    """Open ones, settled ones, or all."""

    OPEN = "open"
    RESOLVED = "resolved"
    ALL = "all"


@strawberry.enum(description="How to settle a conflict.")
class ConflictSide(Enum):
    """Keep the server's row, take the device's edit, or merge field by field."""

    SERVER = "server"
    CLIENT = "client"
    MERGE = "merge"


# --- caches ---------------------------------------------------------------------------------


@strawberry.type(description="One level of a cache: what is stored and how it was used.")
class LevelStats:
    """A :class:`~offmaps.cache.ZoomStats`."""

    z: int
    tiles: Long
    bytes: Long
    blobs: Long
    blob_bytes: Long
    dedup_saving: Long
    hits: Long
    misses: Long
    fetches: Long
    errors: Long
    last_access: datetime | None

    @classmethod
    def of(cls, level: ZoomStats) -> LevelStats:
        """The type of a service value."""
        return cls(
            z=level.z, tiles=Long(level.tiles), bytes=Long(level.bytes),
            blobs=Long(level.blobs), blob_bytes=Long(level.blob_bytes),
            dedup_saving=Long(level.dedup_saving), hits=Long(level.hits),
            misses=Long(level.misses), fetches=Long(level.fetches), errors=Long(level.errors),
            last_access=level.last_access,
        )  # fmt: skip


@strawberry.type(name="CacheStats", description="A cache's figures, per level and in total.")
class CacheStatsType:
    """A :class:`~offmaps.cache.CacheStats`."""

    name: str
    tiles: Long
    bytes: Long
    blobs: Long
    blob_bytes: Long
    dedup_saving: Long
    hits: Long
    misses: Long
    fetches: Long
    errors: Long
    last_access: datetime | None
    levels: list[LevelStats]

    @classmethod
    def of(cls, stats: CacheStats) -> CacheStatsType:
        """The type of a service value."""
        return cls(
            name=stats.name, tiles=Long(stats.tiles), bytes=Long(stats.bytes),
            blobs=Long(stats.blobs), blob_bytes=Long(stats.blob_bytes),
            dedup_saving=Long(stats.dedup_saving), hits=Long(stats.hits),
            misses=Long(stats.misses), fetches=Long(stats.fetches), errors=Long(stats.errors),
            last_access=stats.last_access, levels=[LevelStats.of(z) for z in stats.levels],
        )  # fmt: skip


@strawberry.type(description="Where a cache's tiles come from.")
class CacheSource:
    """A :class:`~offmaps.cache.CacheSource`."""

    kind: SourceKindEnum  # type: ignore[valid-type]
    location: str


@strawberry.type(description="How a cache fetches from its upstream.")
class Upstream:
    """A :class:`~offmaps.cache.UpstreamSettings`."""

    concurrency: int
    requests_per_second: float
    retries: int
    backoff_s: float
    timeout_s: float
    failure_budget: int
    max_tile_bytes: Long


@strawberry.type(description="A tile cache: a named source, tile matrix set and format.")
class Cache:
    """A :class:`~offmaps.cache.CacheDefinition`, its tiles' URL and its figures."""

    name: str
    title: str
    source: CacheSource
    tms: str
    format: TileFormatEnum  # type: ignore[valid-type]
    mixed: bool = strawberry.field(
        description="Whether it is mixed (ArcGIS's MIXED): each tile PNG or JPEG, as it came."
    )
    min_zoom: int
    max_zoom: int
    upstream: Upstream
    verify_reads: float
    export_max_tiles: int = strawberry.field(
        description="The most tiles one export through the server may cover."
    )
    tiles_url: str = strawberry.field(
        description="The URL template of its tiles (/tiles/{name}/{z}/{x}/{y}: read-through)."
    )

    @strawberry.field(description="Its figures per level (cache:read).")
    def stats(self, info: strawberry.Info[GraphQLContext, None]) -> CacheStatsType:
        """The cache's figures, asked of the service when selected."""
        return CacheStatsType.of(info.context.services.caches.stats(self.name))

    @classmethod
    def of(cls, definition: CacheDefinition, base: str) -> Cache:
        """The type of a service value; ``base`` is the server's URL."""
        upstream = definition.upstream
        return cls(
            name=definition.name,
            title=definition.title,
            source=CacheSource(kind=definition.source.kind, location=definition.source.location),
            tms=definition.tms,
            format=definition.format,
            mixed=definition.mixed,
            min_zoom=definition.min_zoom,
            max_zoom=definition.max_zoom,
            upstream=Upstream(
                concurrency=upstream.concurrency,
                requests_per_second=upstream.requests_per_second,
                retries=upstream.retries,
                backoff_s=upstream.backoff_s,
                timeout_s=upstream.timeout_s,
                failure_budget=upstream.failure_budget,
                max_tile_bytes=Long(upstream.max_tile_bytes),
            ),
            verify_reads=definition.verify_reads,
            export_max_tiles=definition.export_max_tiles,
            tiles_url=f"{base}/tiles/{definition.name}/{{z}}/{{x}}/{{y}}",
        )


@strawberry.type(description="The blob store under every cache.")
class CacheStoreStats:
    """A :class:`~offmaps.cache.StoreStats`."""

    blobs: Long
    bytes: Long
    referenced: Long
    orphans: Long
    orphan_bytes: Long

    @classmethod
    def of(cls, stats: StoreStats) -> CacheStoreStats:
        """The type of a service value."""
        return cls(
            blobs=Long(stats.blobs), bytes=Long(stats.bytes), referenced=Long(stats.referenced),
            orphans=Long(stats.orphans), orphan_bytes=Long(stats.orphan_bytes),
        )  # fmt: skip


@strawberry.type(description="One level of a seed plan.")
class SeedLevel:
    """Tiles of the area at a level, how many are stored, the size assumed per tile."""

    z: int
    tiles: Long
    stored: Long
    bytes_per_tile: Long


@strawberry.type(name="SeedPlan", description="What a seed would do: a dry run.")
class SeedPlanType:
    """A :class:`~offmaps.cache.SeedPlan`."""

    cache: str
    tiles: Long
    stored: Long
    to_fetch: Long
    estimated_bytes: Long
    levels: list[SeedLevel]

    @classmethod
    def of(cls, plan: SeedPlan) -> SeedPlanType:
        """The type of a service value."""
        return cls(
            cache=plan.cache,
            tiles=Long(plan.tiles),
            stored=Long(sum(plan.stored.values())),
            to_fetch=Long(plan.to_fetch),
            estimated_bytes=Long(plan.estimated_bytes),
            levels=[
                SeedLevel(
                    z=z,
                    tiles=Long(count),
                    stored=Long(plan.stored.get(z, 0)),
                    bytes_per_tile=Long(plan.bytes_per_tile[z]),
                )
                for z, count in sorted(plan.levels.items())
            ],
        )


@strawberry.type(description="What a verification found.")
class VerifyResult:
    """A :class:`~offmaps.cache.VerifyReport`."""

    checked: Long
    damaged: list[str]

    @classmethod
    def of(cls, report: VerifyReport) -> VerifyResult:
        """The type of a service value."""
        return cls(checked=Long(report.checked), damaged=list(report.damaged))


@strawberry.type(description="A presigned URL of one tile's bytes in storage.")
class TileUrl:
    """A :class:`~offmaps.cache.TileURL`: send ``method`` to ``url`` with ``headers``."""

    z: int
    x: Long
    y: Long
    sha256: str
    size: Long
    url: str
    method: str
    headers: JSON
    expires_at: datetime

    @classmethod
    def of(cls, found: TileURL, base: str) -> TileUrl:
        """The type of a service value; this server's own URLs made absolute with ``base``."""
        url = found.url.url
        return cls(
            z=found.tile.z,
            x=Long(found.tile.x),
            y=Long(found.tile.y),
            sha256=found.sha256,
            size=Long(found.size),
            url=f"{base}{url}" if url.startswith("/") else url,
            method=str(found.url.method),
            headers=JSON(dict(found.url.headers)),
            expires_at=found.url.expires_at,
        )


@strawberry.type(description="One tile's key: level, column, row (from the top).")
class TileKey:
    """A :class:`~offmaps.types.Tile`."""

    z: int
    x: Long
    y: Long


@strawberry.type(description="A page of presigned download URLs; next is the next page's after.")
class TileUrlPage:
    """The answer of ``POST /api/caches/{name}/urls``."""

    urls: list[TileUrl]
    next: TileKey | None


@strawberry.type(description="Presigned upload URLs and the grant to commit them with.")
class UploadGrantType:
    """An :class:`~offmaps.cache.UploadGrant`."""

    id: str
    cache: str
    expires_at: datetime
    uploads: list[TileUrl]

    @classmethod
    def of(cls, grant: UploadGrant, base: str) -> UploadGrantType:
        """The type of a service value."""
        return cls(
            id=grant.id,
            cache=grant.cache,
            expires_at=grant.expires_at,
            uploads=[TileUrl.of(item, base) for item in grant.uploads],
        )


@strawberry.type(description="A committed upload grant.")
class UploadCommit:
    """What ``POST /api/caches/{name}/uploads/{id}/commit`` answers."""

    committed: bool
    changed: Long


# --- jobs -----------------------------------------------------------------------------------


@strawberry.type(name="MapArea", description="A preplanned map area of a web map.")
class MapAreaType:
    """An area, as ``GET /api/maps/{id}/areas/{area}`` shows it (``document``), with its main
    fields typed."""

    id: str
    map_id: str
    title: str
    status: str = strawberry.field(description="packaging, complete or failed.")
    reason: str | None = strawberry.field(description="Why the last packaging failed.")
    update_mode: str
    refresh: str = strawberry.field(description="never, an interval such as 1d, or cron.")
    epoch: int
    latest: int | None = strawberry.field(description="The newest complete package's number.")
    job_id: str | None = strawberry.field(description="The packaging job running or last run.")
    document: JSON = strawberry.field(
        description="The whole area as the REST API shows it, its newest package's files too."
    )

    @classmethod
    def of(cls, document: dict[str, Any]) -> MapAreaType:
        """The type of an area's REST document."""
        return cls(
            id=document["id"], map_id=document["map_id"], title=document["title"],
            status=document["status"], reason=document["reason"],
            update_mode=document["update_mode"], refresh=document["refresh"],
            epoch=document["epoch"], latest=document["latest"], job_id=document["job_id"],
            document=JSON(document),
        )  # fmt: skip


@strawberry.type(name="Job", description="A job: its status, progress and result.")
class JobType:
    """A :class:`~offmaps.jobs.Job`, as ``GET /api/jobs/{id}`` shows it."""

    id: str
    kind: str
    status: JobStatusEnum  # type: ignore[valid-type]
    progress: float
    message: str
    created: float
    finished: float | None
    error: str | None
    result: JSON | None = strawberry.field(description="What it made, by kind.")
    href: str = strawberry.field(description="The job at the REST API (its files under it).")

    @classmethod
    def of(cls, job: Job, base: str) -> JobType:
        """The type of a service value; ``base`` is the server's URL."""
        from offmaps.jobs import job_document  # noqa: PLC0415

        document = job_document(job, base)
        return cls(
            id=document.id, kind=document.kind, status=document.status,
            progress=document.progress, message=document.message, created=document.created,
            finished=document.finished, error=document.error,
            result=None if document.result is None else JSON(document.result),
            href=f"{base}/api/jobs/{job.id}",
        )  # fmt: skip


@strawberry.type(description="A seed job and the plan it started from.")
class SeedJob:
    """What ``seedCache`` answers."""

    job: JobType
    plan: SeedPlanType


@strawberry.enum(description="What cancelJob did.")
class JobCancellationAction(Enum):
    """A job that had not ended is cancelled; an ended one is removed with its files."""

    CANCELLED = "cancelled"
    REMOVED = "removed"


@strawberry.type(description="What cancelJob did to a job.")
class JobCancellation:
    """The job's id and what was done."""

    id: str
    action: JobCancellationAction


# --- sync -----------------------------------------------------------------------------------


@strawberry.type(name="Replica", description="A replica of an offline map.")
class ReplicaType:
    """A :class:`~offmaps.replicas.ReplicaInfo`."""

    id: str
    service: str
    layers: list[str]
    map_id: str | None
    generation: Long
    server_generation: Long
    sync_direction: str
    sync_model: str
    attachment_sync_direction: str
    open_conflicts: int

    @classmethod
    def of(cls, info: ReplicaInfo) -> ReplicaType:
        """The type of a service value."""
        replica = info.replica
        return cls(
            id=replica.id, service=replica.service, layers=list(replica.layers),
            map_id=replica.map_id, generation=Long(replica.generation),
            server_generation=Long(info.server_generation),
            sync_direction=replica.sync_direction, sync_model=replica.sync_model,
            attachment_sync_direction=replica.attachment_sync_direction,
            open_conflicts=info.open_conflicts,
        )  # fmt: skip


@strawberry.type(name="AttachmentFile", description="An attachment file a download names.")
class AttachmentFile:
    """Its SHA-256 and size."""

    sha256: str
    size: Long


@strawberry.type(name="DownloadSize", description="What a download would send now.")
class DownloadSizeType:
    """A :class:`~offmaps.replicas.DownloadSize` (REST: ``/api/replicas/{id}/updates``)."""

    generation: Long
    since: Long
    changes: Long
    upserts: Long
    deletes: Long
    bytes: Long
    attachments: list[AttachmentFile]


@strawberry.type(
    name="ServerChange", description="A row as the server has it now (or its deletion)."
)
class ServerChangeType:
    """A :class:`~offmaps.schemas.changeset.ServerChange` in the GeoJSON form."""

    layer: str
    global_id: uuid.UUID
    kind: str = strawberry.field(description="upsert or delete.")
    version: Long
    version_vector: JSON
    feature: JSON | None = strawberry.field(
        description="The row as a GeoJSON Feature (RFC 7946, CRS84); null for deletes."
    )
    attachments: JSON | None

    @classmethod
    def of(cls, document: dict[str, Any]) -> ServerChangeType:
        """The type of a row in the GeoJSON form."""
        return cls(
            layer=document["layer"], global_id=uuid.UUID(document["global_id"]),
            kind=document["kind"], version=Long(document["version"]),
            version_vector=document["version_vector"], feature=document["feature"],
            attachments=document.get("attachments"),
        )  # fmt: skip


@strawberry.type(name="ChangeResult", description="What became of one uploaded change.")
class ChangeResultType:
    """A :class:`~offmaps.schemas.changeset.ChangeResult` in the GeoJSON form."""

    change_id: uuid.UUID
    status: ChangeStatusEnum  # type: ignore[valid-type]
    reason: str | None
    version: Long | None
    version_vector: JSON | None
    conflict_id: uuid.UUID | None
    conflict_fields: list[str]
    resolution: str | None
    row: ServerChangeType | None

    @classmethod
    def of(cls, document: dict[str, Any]) -> ChangeResultType:
        """The type of an answer in the GeoJSON form."""
        conflict = document.get("conflict_id")
        version = document.get("version")
        return cls(
            change_id=uuid.UUID(document["change_id"]),
            status=ChangeStatus(document["status"]),
            reason=document.get("reason"),
            version=None if version is None else Long(version),
            version_vector=document.get("version_vector"),
            conflict_id=None if conflict is None else uuid.UUID(conflict),
            conflict_fields=list(document.get("conflict_fields") or ()),
            resolution=document.get("resolution"),
            row=None if document.get("row") is None else ServerChangeType.of(document["row"]),
        )


@strawberry.type(name="ChangeSetResult", description="The answers to a change set, in order.")
class ChangeSetResultType:
    """A :class:`~offmaps.schemas.changeset.ChangeSetResult` in the GeoJSON form."""

    change_set_id: uuid.UUID
    replica_id: str
    generation: Long
    results: list[ChangeResultType]
    layers: JSON = strawberry.field(description="The fields of the layers the rows are of.")

    @classmethod
    def of(cls, document: dict[str, Any]) -> ChangeSetResultType:
        """The type of answers in the GeoJSON form."""
        return cls(
            change_set_id=uuid.UUID(document["change_set_id"]),
            replica_id=document["replica_id"],
            generation=Long(document["generation"]),
            results=[ChangeResultType.of(r) for r in document["results"]],
            layers=document.get("layers", []),
        )


@strawberry.type(description="The server's changes since a generation.")
class Download:
    """What ``GET /api/replicas/{id}/changes`` streams, as one answer: the header's
    generation and layers, the rows, their count."""

    replica_id: str
    since: Long
    generation: Long = strawberry.field(description="The generation it brings the device to.")
    layers: JSON = strawberry.field(description="Each layer's fields as the server has them.")
    changes: list[ServerChangeType]
    count: int


@strawberry.type(name="Conflict", description="An entry of the review queue.")
class ConflictType:
    """A :class:`~offmaps.state.syncstate.Conflict` with its rows as GeoJSON Features."""

    id: str
    replica_id: str
    map_id: str | None
    collection: str
    layer: str
    global_id: str
    kind: str = strawberry.field(description="update_update, delete_update or update_delete.")
    change_id: str
    fields: list[str]
    base: JSON = strawberry.field(description="The row before the device's edit (partial).")
    client: JSON = strawberry.field(description="The device's values (a partial Feature).")
    server: JSON | None = strawberry.field(description="The server's row, null if deleted.")
    server_version: Long | None
    status: str
    resolution: str | None
    created: str
    resolved: str | None
    resolved_by: str | None

    @classmethod
    def of(cls, document: dict[str, Any]) -> ConflictType:
        """The type of a conflict in the GeoJSON form."""
        version = document.get("server_version")
        names = (
            "id", "replica_id", "map_id", "collection", "layer", "global_id", "kind",
            "change_id", "fields", "base", "client", "server", "status", "resolution",
            "created", "resolved", "resolved_by",
        )  # fmt: skip
        return cls(
            **{name: document[name] for name in names},
            server_version=None if version is None else Long(version),
        )


@strawberry.type(description="How much of an attachment the server has.")
class AttachmentUpload:
    """An :class:`~offmaps.replicas.UploadState`; the bytes go by REST
    (``PUT /api/replicas/{id}/uploads/{sha256}``)."""

    sha256: str
    received: Long
    complete: bool

    @classmethod
    def of(cls, state: UploadState) -> AttachmentUpload:
        """The type of a service value."""
        return cls(sha256=state.sha256, received=Long(state.received), complete=state.complete)
