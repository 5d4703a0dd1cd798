"""The GraphQL schema: tile caches, their jobs, offline-edit sync and preplanned map areas,
over the REST services.

Each resolver parses its arguments, calls the same service the REST route calls, and builds the
answer's types; the work (and every rule about who may do it) is below the HTTP edge. Features
in sync operations are GeoJSON (RFC 7946) in both directions, converted by
:class:`~offmaps.replicas.geojson.GeoJSONChanges` as the REST API's GeoJSON form is. Blocking
service calls run in the thread pool, as REST handlers do, never on the event loop.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

import strawberry
from graphql import GraphQLError
from pydantic import Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from offmaps.access import Principal, Scope
from offmaps.cache import CacheDefinition
from offmaps.cache.jobs import (
    CLEAN_TILE_CACHE,
    SEED_TILE_CACHE,
    CleanCache,
    ExportSteps,
    ImportSteps,
    SeedCache,
)
from offmaps.errors import InvalidChangeSetError, OffmapsError
from offmaps.jobs import cancel_or_remove, visible_job
from offmaps.offline.areas import MapAreaChanges, MapAreaRequest
from offmaps.replicas.access import check_can_resolve, replica_for, review_owner
from offmaps.replicas.geojson import GeoJSONChanges
from offmaps.schemas.changeset import ServerChange
from offmaps.server.graphql.context import GraphQLContext
from offmaps.server.graphql.limits import limit_extensions
from offmaps.server.graphql.scalars import JSON, SCALARS, Long
from offmaps.server.graphql.security import Authorize
from offmaps.server.graphql.types import (
    AttachmentFile,
    AttachmentUpload,
    Cache,
    CacheStoreStats,
    ChangeResultType,
    ChangeSetResultType,
    ConflictSide,
    ConflictStatusFilter,
    ConflictType,
    Download,
    DownloadSizeType,
    JobCancellation,
    JobCancellationAction,
    JobType,
    MapAreaType,
    ReplicaType,
    SeedJob,
    SeedPlanType,
    ServerChangeType,
    TileKey,
    TileUrl,
    TileUrlPage,
    UploadCommit,
    UploadGrantType,
    VerifyResult,
)
from offmaps.server.rest.areas import area_json
from offmaps.server.rest.caches import (
    UploadsRequest,
    UrlsRequest,
    presigned_urls,
    start_export,
    start_import,
)
from offmaps.services import Services
from offmaps.state.syncstate import Conflict

__all__ = ["Mutation", "OffmapsSchema", "Query", "schema"]

Info = strawberry.Info[GraphQLContext, None]
T = TypeVar("T")

_CONFLICT_LIMIT = TypeAdapter(Annotated[int, Field(ge=1, le=1000)])
_SHA256 = TypeAdapter(Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")])
_MERGE_VALUES = TypeAdapter(Annotated[dict[str, Any], Field(max_length=500)])


async def _run(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await run_in_threadpool(function, *args, **kwargs)


def _seed_payload(
    name: str, area: Any, min_zoom: int, max_zoom: int, refresh_before: datetime | None
) -> SeedCache:
    return SeedCache.model_validate(
        {
            "cache": name,
            "area": {"geometry": area},
            "min_zoom": min_zoom,
            "max_zoom": max_zoom,
            "refresh_before": refresh_before,
        }
    )


def _geojson_of(services: Services, service: str) -> GeoJSONChanges:
    return GeoJSONChanges.of_store(services.catalog.feature_service(service))


def _conflict(services: Services, conflict: Conflict) -> ConflictType:
    return ConflictType.of(_geojson_of(services, conflict.service).conflict(conflict))


# --- inputs ---------------------------------------------------------------------------------


@strawberry.input(description="Where a cache's tiles come from.")
class CacheSourceInput:
    """As ``source`` of a cache definition (docs/cache.md)."""

    kind: str = strawberry.field(description="xyz, layer or archive.")
    location: str


@strawberry.input(description="How a cache fetches from its upstream (defaults if left out).")
class UpstreamInput:
    """As ``upstream`` of a cache definition."""

    concurrency: int | None = None
    requests_per_second: float | None = None
    retries: int | None = None
    backoff_s: float | None = None
    timeout_s: float | None = None
    failure_budget: int | None = None
    max_tile_bytes: Long | None = None


@strawberry.input(description="A cache definition (docs/cache.md).")
class CacheInput:
    """As the body of ``POST /api/caches``."""

    name: str
    source: CacheSourceInput
    title: str | None = None
    tms: str | None = None
    format: str | None = None
    min_zoom: int | None = None
    max_zoom: int | None = None
    upstream: UpstreamInput | None = None
    verify_reads: float | None = None
    export_max_tiles: int | None = None

    def definition(self) -> CacheDefinition:
        """The definition, validated as REST validates it."""

        def given(values: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in values.items() if v is not None}

        document = given(
            {
                "name": self.name,
                "title": self.title,
                "source": {"kind": self.source.kind, "location": self.source.location},
                "tms": self.tms,
                "format": self.format,
                "min_zoom": self.min_zoom,
                "max_zoom": self.max_zoom,
                "verify_reads": self.verify_reads,
                "export_max_tiles": self.export_max_tiles,
            }
        )
        if self.upstream is not None:
            document["upstream"] = given(vars(self.upstream))
        return CacheDefinition.model_validate(document)


@strawberry.input(description="One tile: level, column, row (from the top).")
class TileKeyInput:
    """As a tile of ``POST /api/caches/{name}/urls``."""

    z: int
    x: Long
    y: Long


@strawberry.input(description="A tile a client holds: its key, SHA-256 and size.")
class UploadTileInput:
    """As a tile of ``POST /api/caches/{name}/uploads``."""

    z: int
    x: Long
    y: Long
    sha256: str
    size: Long


def _keys(tiles: list[TileKeyInput] | None) -> list[dict[str, int]] | None:
    return None if tiles is None else [{"z": t.z, "x": int(t.x), "y": int(t.y)} for t in tiles]


@strawberry.input(description="An attachment as it travels (its bytes go by REST uploads).")
class AttachmentInput:
    """An :class:`~offmaps.schemas.changeset.AttachmentRef`."""

    attachment_id: uuid.UUID
    name: str
    content_type: str
    size: Long
    sha256: str


@strawberry.input(description="One edit of a device's outbox (docs/sync.md), rows as GeoJSON.")
class ChangeInput:
    """A change in the GeoJSON form (:mod:`offmaps.replicas.geojson`)."""

    change_id: uuid.UUID
    layer: str
    kind: str = strawberry.field(
        description="insert, update, delete, attachment_add or attachment_delete."
    )
    hlc: str = strawberry.field(description="The hybrid logical clock time of the edit.")
    global_id: uuid.UUID | None = strawberry.field(
        default=None, description="The row; may be left out when feature or base has its id."
    )
    base_version: Long = Long(0)
    version_vector: JSON | None = None
    feature: JSON | None = strawberry.field(
        default=None,
        description="Inserts and updates: the row after the edit, a GeoJSON Feature (CRS84).",
    )
    changed: list[str] | None = None
    base: JSON | None = strawberry.field(
        default=None,
        description="Updates: the changed fields before the edit; deletes: the row deleted. "
        "A partial GeoJSON Feature (geometry only when it changed).",
    )
    attachment: AttachmentInput | None = None
    covers: list[uuid.UUID] | None = None

    def document(self) -> dict[str, Any]:
        """The change as the GeoJSON form's JSON."""
        document: dict[str, Any] = {
            "change_id": str(self.change_id),
            "layer": self.layer,
            "kind": self.kind,
            "hlc": self.hlc,
            "base_version": int(self.base_version),
        }
        optional = {
            "global_id": None if self.global_id is None else str(self.global_id),
            "version_vector": self.version_vector,
            "feature": self.feature,
            "changed": self.changed,
            "base": self.base,
            "covers": None if self.covers is None else [str(c) for c in self.covers],
        }
        document.update({k: v for k, v in optional.items() if v is not None})
        if self.attachment is not None:
            document["attachment"] = {
                "attachment_id": str(self.attachment.attachment_id),
                "name": self.attachment.name,
                "content_type": self.attachment.content_type,
                "size": int(self.attachment.size),
                "sha256": self.attachment.sha256,
            }
        return document


@strawberry.input(description="The changes a device uploads at once.")
class ChangeSetInput:
    """A :class:`~offmaps.schemas.changeset.ChangeSet` in the GeoJSON form."""

    change_set_id: uuid.UUID
    changes: list[ChangeInput]
    rollback_on_failure: bool = False


# --- queries --------------------------------------------------------------------------------


@strawberry.type(description="Reads: tile caches, jobs, replicas, downloads, the review queue.")
class Query:
    """Every read the REST API has, as fields."""

    @strawberry.field(description="The preplanned map areas of a web map (maps:read).")
    async def map_areas(self, info: Info, map_id: str) -> list[MapAreaType]:
        """``GET /api/maps/{id}/areas``."""
        context = info.context
        services = context.services

        def read() -> list[MapAreaType]:
            services.catalog.visible_map(context.principal, map_id)
            return [
                MapAreaType.of(area_json(area, context.http))
                for area in services.areas.store.for_map(map_id)
            ]

        return await _run(read)

    @strawberry.field(
        description="A preplanned map area with its newest package's files (maps:read)."
    )
    async def map_area(self, info: Info, map_id: str, id: str) -> MapAreaType:
        """``GET /api/maps/{id}/areas/{area}``."""
        context = info.context
        services = context.services

        def read() -> MapAreaType:
            services.catalog.visible_map(context.principal, map_id)
            area = services.areas.store.get(id, map_id=map_id)
            packages = services.areas.store.packages(area.id)
            newest = packages[-1] if packages else None
            return MapAreaType.of(area_json(area, context.http, newest))

        return await _run(read)

    @strawberry.field(description="Every tile cache (cache:read).")
    async def caches(self, info: Info) -> list[Cache]:
        """``GET /api/caches``."""
        context = info.context
        found = await _run(context.services.caches.list)
        return [Cache.of(d, context.base) for d in found]

    @strawberry.field(description="A tile cache (cache:read).")
    async def cache(self, info: Info, name: str) -> Cache:
        """``GET /api/caches/{name}``."""
        context = info.context
        return Cache.of(await _run(context.services.caches.definition, name), context.base)

    @strawberry.field(description="The blob store under every cache; lists it (cache:read).")
    async def cache_store(self, info: Info) -> CacheStoreStats:
        """``GET /api/cache-store``."""
        return CacheStoreStats.of(await _run(info.context.services.caches.store_stats))

    @strawberry.field(description="A seed's dry run: tiles and bytes per level (cache:write).")
    async def seed_plan(
        self,
        info: Info,
        name: str,
        area: JSON,
        min_zoom: int,
        max_zoom: int,
        refresh_before: datetime | None = None,
    ) -> SeedPlanType:
        """``POST /api/caches/{name}/seed`` with ``dry_run``; ``area`` a GeoJSON Polygon or
        MultiPolygon in CRS84."""
        payload = _seed_payload(name, area, min_zoom, max_zoom, refresh_before)
        plan = await _run(
            info.context.services.caches.plan,
            name,
            payload.area.aoi(),
            payload.zooms,
            refresh_before=payload.refresh_before,
        )
        return SeedPlanType.of(plan)

    @strawberry.field(
        description="Presigned GET URLs of stored tiles, listed or of an area (cache:read)."
    )
    async def tile_urls(
        self,
        info: Info,
        name: str,
        tiles: list[TileKeyInput] | None = None,
        area: JSON | None = None,
        min_zoom: int | None = None,
        max_zoom: int | None = None,
        after: TileKeyInput | None = None,
        limit: int = 1000,
        expires_s: int | None = None,
    ) -> TileUrlPage:
        """``POST /api/caches/{name}/urls``."""
        document: dict[str, Any] = {
            "tiles": _keys(tiles),
            "area": None if area is None else {"geometry": area},
            "min_zoom": min_zoom,
            "max_zoom": max_zoom,
            "after": None
            if after is None
            else {"z": after.z, "x": int(after.x), "y": int(after.y)},
            "limit": limit,
        }
        if expires_s is not None:
            document["expires_s"] = expires_s
        body = UrlsRequest.model_validate(document)
        context = info.context
        found, following = await _run(presigned_urls, context.services, name, body)
        return TileUrlPage(
            urls=[TileUrl.of(item, context.base) for item in found],
            next=None
            if following is None
            else TileKey(z=following.z, x=Long(following.x), y=Long(following.y)),
        )

    @strawberry.field(description="A job of yours (offline:sync or cache:write).")
    async def job(self, info: Info, id: str) -> JobType:
        """``GET /api/jobs/{id}``."""
        context = info.context
        job = await _run(visible_job, context.services.jobs, id, context.principal)
        return JobType.of(job, context.base)

    @strawberry.field(description="A replica of yours (offline:sync).")
    async def replica(self, info: Info, id: str) -> ReplicaType:
        """``GET /api/replicas/{id}``."""
        context = info.context
        services = context.services
        replica = await _run(
            replica_for, services.replicas, id, context.principal, Scope.OFFLINE_SYNC
        )
        return ReplicaType.of(await _run(services.sync.describe, replica))

    @strawberry.field(description="What a download would send now (offline:sync).")
    async def download_size(
        self, info: Info, replica_id: str, since: Long, layers: list[str] | None = None
    ) -> DownloadSizeType:
        """``GET /api/replicas/{id}/updates``."""
        context = info.context
        services = context.services
        replica = await _run(
            replica_for, services.replicas, replica_id, context.principal, Scope.OFFLINE_SYNC
        )
        found = await _run(services.sync.measure_download, replica, int(since), layers)
        return DownloadSizeType(
            generation=Long(found.generation), since=since, changes=Long(found.changes),
            upserts=Long(found.upserts), deletes=Long(found.deletes), bytes=Long(found.bytes),
            attachments=[
                AttachmentFile(sha256=k, size=Long(v)) for k, v in sorted(found.attachments.items())
            ],
        )  # fmt: skip

    @strawberry.field(
        description="The server's changes since a generation, rows as GeoJSON (offline:sync)."
    )
    async def changes(
        self, info: Info, replica_id: str, since: Long, layers: list[str] | None = None
    ) -> Download:
        """``GET /api/replicas/{id}/changes``: the same records, as one answer."""
        context = info.context
        services = context.services
        replica = await _run(
            replica_for, services.replicas, replica_id, context.principal, Scope.OFFLINE_SYNC
        )

        def read() -> list[dict[str, Any]]:
            lines = services.sync.download(replica, int(since), layers)
            records = [json.loads(line) for chunk in lines for line in chunk.splitlines()]
            services.replicas.synced(replica.id, int(since))
            return records

        records = await _run(read)
        header, rows = records[0], records[1:-1]
        geojson = await _run(_geojson_of, services, replica.service)
        return Download(
            replica_id=replica.id,
            since=since,
            generation=Long(header["generation"]),
            layers=header["layers"],
            changes=[
                ServerChangeType.of(geojson.server_change(ServerChange.model_validate(row)))
                for row in rows
            ],
            count=len(rows),
        )

    @strawberry.field(description="What became of one uploaded change (offline:sync).")
    async def change_status(
        self, info: Info, replica_id: str, change_id: uuid.UUID
    ) -> ChangeResultType:
        """``GET /api/replicas/{id}/changes/{change_id}``."""
        context = info.context
        services = context.services
        replica = await _run(
            replica_for, services.replicas, replica_id, context.principal, Scope.OFFLINE_SYNC
        )
        found = await _run(services.sync.change_result, replica, change_id)
        if found is None:
            raise InvalidChangeSetError(f"the server has no change {change_id}")
        geojson = await _run(_geojson_of, services, replica.service)
        return ChangeResultType.of(geojson.change_result(found))

    @strawberry.field(description="How much of an attachment the server has (features:edit).")
    async def attachment_upload(self, info: Info, replica_id: str, sha256: str) -> AttachmentUpload:
        """``GET /api/replicas/{id}/uploads/{sha256}`` (the bytes go by REST)."""
        context = info.context
        services = context.services
        replica = await _run(
            replica_for, services.replicas, replica_id, context.principal, Scope.FEATURES_EDIT
        )
        state = await _run(services.uploads.state, replica.id, _SHA256.validate_python(sha256))
        return AttachmentUpload.of(state)

    @strawberry.field(description="Your review queue, newest first (offline:sync).")
    async def conflicts(
        self,
        info: Info,
        status: ConflictStatusFilter = ConflictStatusFilter.OPEN,
        replica_id: str | None = None,
        limit: int = 100,
    ) -> list[ConflictType]:
        """``GET /api/conflicts``."""
        context = info.context
        services = context.services
        owner = review_owner(context.principal)
        found = await _run(
            services.sync.list_conflicts,
            owner=owner,
            status=None if status is ConflictStatusFilter.ALL else status.value,
            replica_id=replica_id,
            limit=_CONFLICT_LIMIT.validate_python(limit),
        )
        return [await _run(_conflict, services, conflict) for conflict in found]

    @strawberry.field(description="One conflict: base, device and server rows (offline:sync).")
    async def conflict(self, info: Info, id: str) -> ConflictType:
        """``GET /api/conflicts/{id}``."""
        context = info.context
        services = context.services
        found = await _run(services.sync.get_conflict, id, owner=review_owner(context.principal))
        return await _run(_conflict, services, found)


# --- mutations ------------------------------------------------------------------------------


def _cleanup(
    name: str,
    area: Any,
    min_zoom: int | None,
    max_zoom: int | None,
    older_than: datetime | None,
    max_bytes: int | None,
    gc: bool,
) -> CleanCache:
    document: dict[str, Any] = {"cache": name, "gc": gc}
    optional = {
        "area": None if area is None else {"geometry": area},
        "min_zoom": min_zoom,
        "max_zoom": max_zoom,
        "older_than": older_than,
        "max_bytes": max_bytes,
    }
    document.update({k: v for k, v in optional.items() if v is not None})
    return CleanCache.model_validate(document)


def _owner(principal: Principal) -> str:
    return principal.subject


@strawberry.type(description="Writes: tile caches, their jobs, uploads and conflict reviews.")
class Mutation:
    """Every write the REST API has, as fields; each needs its REST route's scope."""

    @strawberry.mutation(
        description="Create a preplanned map area of a web map and start packaging it; "
        "`area` is the body of POST /api/maps/{id}/areas (maps:write, the map's owner)."
    )
    async def create_map_area(self, info: Info, map_id: str, area: JSON) -> MapAreaType:
        """``POST /api/maps/{id}/areas``."""
        context = info.context
        services = context.services
        request = MapAreaRequest.model_validate(area)

        def create() -> MapAreaType:
            webmap = services.catalog.owned_map(context.principal, map_id)
            created = services.areas.create(
                webmap, request, owner=_owner(context.principal), server_url=context.base
            )
            return MapAreaType.of(area_json(created, context.http))

        return await _run(create)

    @strawberry.mutation(
        description="Change a preplanned map area; `changes` is the body of PATCH "
        "/api/maps/{id}/areas/{area} (maps:write, the map's owner)."
    )
    async def update_map_area(self, info: Info, map_id: str, id: str, changes: JSON) -> MapAreaType:
        """``PATCH /api/maps/{id}/areas/{area}``."""
        context = info.context
        services = context.services
        body = MapAreaChanges.model_validate(changes)

        def change() -> MapAreaType:
            webmap = services.catalog.owned_map(context.principal, map_id)
            changed = services.areas.change(
                webmap, id, body, owner=_owner(context.principal), server_url=context.base
            )
            return MapAreaType.of(area_json(changed, context.http))

        return await _run(change)

    @strawberry.mutation(
        description="Package a preplanned map area again now (maps:write, the map's owner)."
    )
    async def refresh_map_area(self, info: Info, map_id: str, id: str) -> MapAreaType:
        """``POST /api/maps/{id}/areas/{area}/refresh``."""
        context = info.context
        services = context.services

        def refresh() -> MapAreaType:
            services.catalog.owned_map(context.principal, map_id)
            area = services.areas.store.get(id, map_id=map_id)
            refreshed = services.areas.refresh(
                area, owner=_owner(context.principal), server_url=context.base
            )
            return MapAreaType.of(area_json(refreshed, context.http))

        return await _run(refresh)

    @strawberry.mutation(
        description="Delete a preplanned map area and its packages (maps:write, the map's owner)."
    )
    async def delete_map_area(self, info: Info, map_id: str, id: str) -> bool:
        """``DELETE /api/maps/{id}/areas/{area}``."""
        context = info.context
        services = context.services

        def delete() -> bool:
            services.catalog.owned_map(context.principal, map_id)
            services.areas.delete(services.areas.store.get(id, map_id=map_id))
            return True

        return await _run(delete)

    @strawberry.mutation(description="Create a tile cache (cache:write).")
    async def create_cache(self, info: Info, definition: CacheInput) -> Cache:
        """``POST /api/caches``: the source is checked first."""
        context = info.context
        created = definition.definition()
        await _run(context.services.caches.create, created)
        return Cache.of(created, context.base)

    @strawberry.mutation(description="Remove a tile cache; its blobs go at the next collection.")
    async def delete_cache(self, info: Info, name: str) -> str:
        """``DELETE /api/caches/{name}``; answers the name."""
        await _run(info.context.services.caches.delete, name)
        return name

    @strawberry.mutation(description="Start a seed job of an area and levels (cache:write).")
    async def seed_cache(
        self,
        info: Info,
        name: str,
        area: JSON,
        min_zoom: int,
        max_zoom: int,
        refresh_before: datetime | None = None,
    ) -> SeedJob:
        """``POST /api/caches/{name}/seed``; ``area`` a GeoJSON Polygon or MultiPolygon."""
        context = info.context
        services = context.services
        payload = _seed_payload(name, area, min_zoom, max_zoom, refresh_before)
        plan = await _run(
            services.caches.plan,
            name,
            payload.area.aoi(),
            payload.zooms,
            refresh_before=payload.refresh_before,
        )
        job = await _run(
            services.jobs.submit, SEED_TILE_CACHE, payload, owner=_owner(context.principal)
        )
        return SeedJob(job=JobType.of(job, context.base), plan=SeedPlanType.of(plan))

    @strawberry.mutation(
        description="Start a cleanup job: truncate an area or levels, drop old tiles, trim to "
        "a byte quota, collect orphans (cache:write)."
    )
    async def clean_cache(
        self,
        info: Info,
        name: str,
        area: JSON | None = None,
        min_zoom: int | None = None,
        max_zoom: int | None = None,
        older_than: datetime | None = None,
        max_bytes: Long | None = None,
        gc: bool = False,
    ) -> JobType:
        """``POST /api/caches/{name}/clean``."""
        context = info.context
        services = context.services
        payload = _cleanup(name, area, min_zoom, max_zoom, older_than, max_bytes, gc)
        await _run(services.caches.definition, name)
        job = await _run(
            services.jobs.submit, CLEAN_TILE_CACHE, payload, owner=_owner(context.principal)
        )
        return JobType.of(job, context.base)

    @strawberry.mutation(description="Hash every blob of a cache again (cache:write).")
    async def verify_cache(self, info: Info, name: str) -> VerifyResult:
        """``POST /api/caches/{name}/verify``."""
        return VerifyResult.of(await _run(info.context.services.caches.verify, name))

    @strawberry.mutation(
        description="Presigned PUT URLs for tiles, bound to their SHA-256, and a grant to "
        "commit them with (cache:write)."
    )
    async def grant_uploads(
        self, info: Info, name: str, tiles: list[UploadTileInput], expires_s: int | None = None
    ) -> UploadGrantType:
        """``POST /api/caches/{name}/uploads``."""
        document: dict[str, Any] = {
            "tiles": [
                {"z": t.z, "x": int(t.x), "y": int(t.y), "sha256": t.sha256, "size": int(t.size)}
                for t in tiles
            ]
        }
        if expires_s is not None:
            document["expires_s"] = expires_s
        body = UploadsRequest.model_validate(document)
        context = info.context
        grant = await _run(
            context.services.caches.grant_uploads,
            name,
            [(t.tile, t.sha256, t.size) for t in body.tiles],
            owner=_owner(context.principal),
            expires=timedelta(seconds=body.expires_s),
        )
        return UploadGrantType.of(grant, context.base)

    @strawberry.mutation(
        description="Check a grant's uploaded tiles and make them visible, all or none "
        "(cache:write)."
    )
    async def commit_uploads(self, info: Info, name: str, grant_id: str) -> UploadCommit:
        """``POST /api/caches/{name}/uploads/{id}/commit``."""
        context = info.context
        changed = await _run(
            context.services.caches.commit_uploads,
            name,
            grant_id,
            owner=_owner(context.principal),
        )
        return UploadCommit(committed=True, changed=Long(changed))

    @strawberry.mutation(
        description="Start an export job of an area of a cache into a container (mbtiles, "
        "gpkg, pmtiles, esri-compact, esri-exploded, xyz, tms), its files then downloaded from "
        "the job (cache:read)."
    )
    async def export_cache(
        self,
        info: Info,
        name: str,
        area: JSON,
        min_zoom: int,
        max_zoom: int,
        format: str = "mbtiles",
        background: str = "#ffffff",
    ) -> JobType:
        """``POST /api/caches/{name}/export``: the cache's export limit checked first."""
        context = info.context
        steps = ExportSteps.model_validate(
            {
                "area": {"geometry": area},
                "min_zoom": min_zoom,
                "max_zoom": max_zoom,
                "format": format,
                "background": background,
            }
        )
        services = context.services
        job, _ = await _run(
            start_export, services, services.jobs, _owner(context.principal), name, steps
        )
        return JobType.of(job, context.base)

    @strawberry.mutation(
        description="Start an import job of an uploaded tile archive (PUT "
        "/api/cache-archives/{sha256}) into a cache: merged, or replacing its tiles with "
        "overwrite (cache:write)."
    )
    async def import_cache(
        self,
        info: Info,
        name: str,
        archive: str,
        archive_format: str = "mbtiles",
        area: JSON | None = None,
        min_zoom: int | None = None,
        max_zoom: int | None = None,
        overwrite: bool = False,
        background: str = "#ffffff",
    ) -> JobType:
        """``POST /api/caches/{name}/import``."""
        context = info.context
        document: dict[str, Any] = {
            "archive": archive,
            "archive_format": archive_format,
            "min_zoom": min_zoom,
            "max_zoom": max_zoom,
            "overwrite": overwrite,
            "background": background,
        }
        if area is not None:
            document["area"] = {"geometry": area}
        steps = ImportSteps.model_validate(document)
        services = context.services
        job = await _run(
            start_import, services, services.jobs, _owner(context.principal), name, steps
        )
        return JobType.of(job, context.base)

    @strawberry.mutation(description="Start collecting the blobs no cache names (cache:write).")
    async def collect_garbage(self, info: Info) -> JobType:
        """``POST /api/cache-store/gc``."""
        context = info.context
        job = await _run(
            context.services.jobs.submit,
            CLEAN_TILE_CACHE,
            CleanCache(gc=True),
            owner=_owner(context.principal),
        )
        return JobType.of(job, context.base)

    @strawberry.mutation(description="Cancel a job of yours, or remove an ended one.")
    async def cancel_job(self, info: Info, id: str) -> JobCancellation:
        """``DELETE /api/jobs/{id}``."""
        context = info.context
        removed = await _run(cancel_or_remove, context.services.jobs, id, context.principal)
        action = JobCancellationAction.REMOVED if removed else JobCancellationAction.CANCELLED
        return JobCancellation(id=id, action=action)

    @strawberry.mutation(description="Unregister a replica of yours (offline:sync).")
    async def unregister_replica(self, info: Info, id: str) -> str:
        """``DELETE /api/replicas/{id}``; answers the id."""
        context = info.context
        services = context.services
        replica = await _run(
            replica_for, services.replicas, id, context.principal, Scope.OFFLINE_SYNC
        )
        await _run(services.replicas.unregister, replica.id)
        return replica.id

    @strawberry.mutation(
        description="Upload a change set, rows as GeoJSON; every change is answered, "
        "idempotent by change id (features:edit)."
    )
    async def upload_changes(
        self, info: Info, replica_id: str, change_set: ChangeSetInput
    ) -> ChangeSetResultType:
        """``POST /api/replicas/{id}/changes``."""
        context = info.context
        services = context.services
        replica = await _run(
            replica_for, services.replicas, replica_id, context.principal, Scope.FEATURES_EDIT
        )
        document = {
            "change_set_id": str(change_set.change_set_id),
            "replica_id": replica.id,
            "rollback_on_failure": change_set.rollback_on_failure,
            "changes": [change.document() for change in change_set.changes],
        }
        geojson = await _run(_geojson_of, services, replica.service)
        parsed = await _run(geojson.change_set, document)
        result = await _run(services.sync.upload, replica, parsed)
        return ChangeSetResultType.of(geojson.change_set_result(result))

    @strawberry.mutation(
        description="Settle a conflict: keep the server's row, take the device's, or merge "
        "(properties and a GeoJSON geometry for the conflicting fields) (features:edit)."
    )
    async def resolve_conflict(
        self,
        info: Info,
        id: str,
        side: ConflictSide,
        properties: JSON | None = None,
        geometry: JSON | None = strawberry.UNSET,
    ) -> ConflictType:
        """``POST /api/conflicts/{id}/resolve``."""
        context = info.context
        services = context.services
        principal = context.principal
        owner = review_owner(principal)
        check_can_resolve(principal, id)
        values = None
        if side is ConflictSide.MERGE:
            found = await _run(services.sync.get_conflict, id, owner=owner)
            geojson = await _run(_geojson_of, services, found.service)
            values = geojson.resolution_values(
                found.layer,
                _MERGE_VALUES.validate_python(properties or {}),
                geometry,
                has_geometry=geometry is not strawberry.UNSET,
            )
        settled = await _run(
            services.sync.resolve_conflict,
            id,
            owner=owner,
            side=side.value,
            values=values,
            resolved_by=principal.subject,
        )
        return await _run(_conflict, services, settled)


class OffmapsSchema(strawberry.Schema):
    """The schema, logging only the errors that are bugs: a refusal (an offmaps error, an
    argument that does not validate, a document that does not) is the caller's, as for REST."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log the unexpected errors among ``errors`` with their tracebacks."""
        unexpected = [
            error
            for error in errors
            if error.path is not None
            and not isinstance(error.original_error, OffmapsError | ValidationError)
        ]
        if unexpected:
            super().process_errors(unexpected, execution_context)


schema = OffmapsSchema(
    query=Query,
    mutation=Mutation,
    extensions=[*limit_extensions(), Authorize],  # limits first: refuse before authorising
    config=StrawberryConfig(auto_camel_case=True, scalar_map=SCALARS),
)
"""The schema served at ``/graphql`` and printed to ``docs/schema.graphql``."""
