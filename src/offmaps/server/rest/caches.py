"""The tile cache API (``/api/caches``): create, list, seed, measure, verify, clean, delete.

- ``GET /api/caches``, ``POST /api/caches``: the caches; create one from a
  :class:`~offmaps.cache.CacheDefinition`.
- ``GET``/``DELETE /api/caches/{name}``: a cache's definition and figures; remove it (its
  blobs go at the next garbage collection).
- ``GET /api/caches/{name}/stats``: tiles, bytes, distinct blobs, dedup saving, hits, misses,
  fetches and errors per level.
- ``POST /api/caches/{name}/seed``: a seed job for an area and levels; with ``dry_run`` the
  count and byte estimate only, at once.
- ``POST /api/caches/{name}/clean``: a cleanup job (truncate an area or levels, drop old tiles,
  trim to a byte quota, collect orphan blobs); ``POST /api/caches/{name}/verify`` hashes every
  blob of the cache again.
- ``GET /api/cache-store``, ``POST /api/cache-store/gc``: the blob store under every cache, and
  its garbage collection (a job).
- ``POST /api/caches/{name}/export``: an export job of an area into a container (MBTiles,
  GeoPackage, PMTiles, Esri compact or exploded, XYZ, TMS) whose files are then downloaded from
  ``/api/jobs/{id}/files/{path}`` (ranges: resumable); with ``dry_run`` the tile count only.
  The cache's ``export_max_tiles`` is checked before the job is accepted.
- ``GET``/``PUT /api/cache-archives/{sha256}``: upload a tile archive (MBTiles, GeoPackage,
  PMTiles) for an import, in resumable parts checked against its SHA-256;
  ``POST /api/caches/{name}/import``: an import job of an uploaded archive.

A cache's tiles are served as a tile layer: ``/tiles/{name}/{z}/{x}/{y}`` (read-through), so a
web map's tile layer may be a cache. Jobs are followed at ``/api/jobs/{id}``. Reading and exporting
need ``cache:read``, changing and importing ``cache:write`` (which includes it), checked before
any body is read.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from offmaps.access import Scope
from offmaps.cache import (
    DEFAULT_URL_EXPIRY,
    MAX_GRANT_TILES,
    MAX_URLS_PAGE,
    CacheDefinition,
    TileURL,
)
from offmaps.cache.jobs import (
    CLEAN_TILE_CACHE,
    EXPORT_TILE_CACHE,
    IMPORT_TILE_CACHE,
    SEED_TILE_CACHE,
    CleanCache,
    CleanSteps,
    ExportCache,
    ExportSteps,
    ImportCache,
    ImportSteps,
    OptionalLevels,
    SeedArea,
    SeedCache,
)
from offmaps.errors import CacheError, InvalidAOIError, ObjectNotFoundError, TileLimitError
from offmaps.jobs import Job, JobRunner
from offmaps.offline.quotas import OfflineQuotas
from offmaps.server.auth import GatedRoute, require_scopes
from offmaps.server.links import absolute_url, base_url
from offmaps.server.rest.deps import JobsDep, PrincipalDep, ServicesDep, job_json
from offmaps.services import Services
from offmaps.storage import MAX_PRESIGN_EXPIRY
from offmaps.tiling import Area
from offmaps.types import Tile

__all__ = [
    "ExportRequest",
    "SeedRequest",
    "UploadsRequest",
    "UrlsRequest",
    "caches_router",
    "presigned_urls",
    "commit_uploads",
    "grant_uploads",
    "tile_urls",
    "clean_cache",
    "create_cache",
    "delete_cache",
    "export_cache",
    "get_cache",
    "import_cache",
    "count_export",
    "start_export",
    "start_import",
    "archive_state",
    "upload_archive",
    "list_caches",
    "seed_cache",
    "stats_of_cache",
    "store_gc",
    "store_stats",
    "verify_cache",
]

READ_CACHES = require_scopes(Scope.CACHE_READ, signed_in=True)
WRITE_CACHES = require_scopes(Scope.CACHE_WRITE, signed_in=True)


class SeedRequest(SeedArea):
    """The body of a seed request: the area and levels, and whether to only count.

    Attributes:
        dry_run: only count the tiles and estimate the bytes; start nothing.
    """

    dry_run: bool = False


class ExportRequest(ExportSteps):
    """The body of an export request: the area, levels and container, and whether to only count.

    Attributes:
        dry_run: only count the tiles (and check them against the cache's limit); start nothing.
    """

    dry_run: bool = False


def _cache_document(definition: CacheDefinition, request: Request) -> dict[str, Any]:
    base = base_url(request)
    return {
        **definition.model_dump(mode="json"),
        "links": [
            {"rel": "self", "href": f"{base}/api/caches/{definition.name}"},
            {"rel": "stats", "href": f"{base}/api/caches/{definition.name}/stats"},
            {
                "rel": "item",
                # a mixed cache's tiles are PNG or JPEG each: no one type to name
                **({} if definition.mixed else {"type": definition.format.media_type}),
                "href": f"{base}/tiles/{definition.name}/{{z}}/{{x}}/{{y}}",
                "templated": True,
            },
        ],
    }


def list_caches(request: Request, services: ServicesDep) -> dict[str, Any]:
    """Every tile cache."""
    return {"caches": [_cache_document(d, request) for d in services.caches.list()]}


def create_cache(
    definition: CacheDefinition, request: Request, response: Response, services: ServicesDep
) -> dict[str, Any]:
    """Create a cache: its source is checked first (a layer or archive must exist and match)."""
    services.caches.create(definition)
    response.headers["Location"] = f"{base_url(request)}/api/caches/{definition.name}"
    return _cache_document(definition, request)


def get_cache(name: str, request: Request, services: ServicesDep) -> dict[str, Any]:
    """A cache's definition and figures."""
    definition = services.caches.definition(name)
    stats = services.caches.stats(name)
    return {**_cache_document(definition, request), "stats": stats.as_dict()}


def stats_of_cache(name: str, services: ServicesDep) -> dict[str, Any]:
    """A cache's figures per level."""
    return services.caches.stats(name).as_dict()


def delete_cache(name: str, services: ServicesDep) -> Response:
    """Remove a cache and its tiles; their blobs go at the next garbage collection."""
    services.caches.delete(name)
    return Response(status_code=204)


def seed_cache(
    name: str,
    body: SeedRequest,
    request: Request,
    response: Response,
    services: ServicesDep,
    principal: PrincipalDep,
    jobs: JobsDep,
) -> dict[str, Any]:
    """Start a seed job (201), or with ``dry_run`` count and estimate at once (200)."""
    payload = SeedCache(
        cache=name,
        area=body.area,
        min_zoom=body.min_zoom,
        max_zoom=body.max_zoom,
        refresh_before=body.refresh_before,
    )
    plan = services.caches.plan(
        name, payload.area.aoi(), payload.zooms, refresh_before=payload.refresh_before
    )
    if body.dry_run:
        return plan.as_dict()
    job = jobs.submit(SEED_TILE_CACHE, payload, owner=principal.subject)
    response.status_code = 201
    return {**job_json(job, request), "plan": plan.as_dict()}


def clean_cache(
    name: str,
    body: CleanSteps,
    request: Request,
    response: Response,
    services: ServicesDep,
    principal: PrincipalDep,
    jobs: JobsDep,
) -> dict[str, Any]:
    """Start a cleanup job of a cache."""
    services.caches.definition(name)
    payload = CleanCache(cache=name, **body.model_dump(exclude_unset=True))
    job = jobs.submit(CLEAN_TILE_CACHE, payload, owner=principal.subject)
    response.status_code = 201
    return job_json(job, request)


def verify_cache(name: str, services: ServicesDep) -> dict[str, Any]:
    """Hash every blob of a cache again; damaged ones are dropped to be fetched again."""
    report = services.caches.verify(name)
    return {"checked": report.checked, "damaged": list(report.damaged)}


def store_stats(services: ServicesDep) -> dict[str, Any]:
    """The blob store under every cache: blobs, bytes, orphans (it lists every blob)."""
    return asdict(services.caches.store_stats())


def store_gc(
    request: Request, response: Response, principal: PrincipalDep, jobs: JobsDep
) -> dict[str, Any]:
    """Start a garbage collection of the blobs no cache names."""
    job = jobs.submit(CLEAN_TILE_CACHE, CleanCache(gc=True), owner=principal.subject)
    response.status_code = 201
    return job_json(job, request)


def count_export(services: Services, name: str, steps: ExportSteps) -> dict[str, Any]:
    """Count an export of cache ``name`` before any work: ``tiles`` of the area, ``stored``
    ones, the cache's ``max_tiles`` and an estimate of the ``bytes``.

    Raises:
        TileLimitError: the area holds more tiles than the cache's ``export_max_tiles``.
        InvalidAOIError: the cache holds no tile of the area at those levels.
    """
    definition = services.caches.definition(name)
    seeded = services.caches.plan(name, steps.area.aoi(), steps.zooms)
    limit = definition.export_max_tiles
    if seeded.tiles > limit:
        raise TileLimitError(
            f"the export covers {seeded.tiles:,} tiles, more than cache {name!r}'s limit of "
            f"{limit:,} per export: export a smaller area or fewer levels",
            tiles=seeded.tiles,
            limit=limit,
        )
    stored = sum(seeded.stored.values())
    if not stored:
        raise InvalidAOIError(
            f"cache {name!r} holds no tile in this area at levels {steps.min_zoom}-{steps.max_zoom}"
        )
    estimate = sum(count * seeded.bytes_per_tile[z] for z, count in seeded.stored.items())
    return {"tiles": seeded.tiles, "stored": stored, "max_tiles": limit, "bytes": estimate}


def start_export(
    services: Services, jobs: JobRunner, owner: str, name: str, steps: ExportSteps
) -> tuple[Job, dict[str, Any]]:
    """Check an export (:func:`count_export`, the user's job quotas) and start its job; the job
    and the plan."""
    counted = count_export(services, name, steps)
    OfflineQuotas(services.settings.limits, jobs, services.replicas).check_generate(
        owner, counted["bytes"], what="cache export"
    )
    fields = steps.model_dump(include=set(ExportSteps.model_fields))
    payload = ExportCache(cache=name, max_tiles=counted["max_tiles"], **fields)
    return jobs.submit(EXPORT_TILE_CACHE, payload, owner=owner), counted


def export_cache(
    name: str,
    body: ExportRequest,
    request: Request,
    response: Response,
    services: ServicesDep,
    principal: PrincipalDep,
    jobs: JobsDep,
) -> dict[str, Any]:
    """Start an export job (201), or with ``dry_run`` count its tiles at once (200); the
    cache's ``export_max_tiles`` is checked first either way (422 over it), and an area
    where the cache holds no tile is refused (400)."""
    if body.dry_run:
        return count_export(services, name, body)
    job, counted = start_export(services, jobs, principal.subject, name, body)
    response.status_code = 201
    return {**job_json(job, request), "plan": counted}


def _uploader(principal: PrincipalDep) -> str:
    """The folder of a user's upload parts: a hash of the name (a safe path segment)."""
    return hashlib.sha256(principal.subject.encode()).hexdigest()[:32]


SHA256 = Annotated[str, Path(pattern="^[0-9a-f]{64}$", description="The archive's SHA-256")]


def archive_state(sha256: SHA256, services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    """How much of a tile archive the server has (``received``, ``complete``)."""
    return asdict(services.archives.state(_uploader(principal), sha256))


async def upload_archive(
    sha256: SHA256,
    request: Request,
    services: ServicesDep,
    principal: PrincipalDep,
    offset: Annotated[int, Query(ge=0)],
    total: Annotated[int, Query(ge=0)],
) -> dict[str, Any]:
    """Take (part of) a tile archive's bytes from ``offset``; once all ``total`` bytes have
    come and hash to ``sha256``, the archive is stored for an import."""
    archives = services.archives
    with archives.open_part(_uploader(principal), sha256, offset=offset, total=total) as part:
        async for chunk in request.stream():
            part.write(chunk)
        return asdict(await run_in_threadpool(part.finish))


def start_import(
    services: Services, jobs: JobRunner, owner: str, name: str, steps: ImportSteps
) -> Job:
    """Start an import job of an uploaded archive into cache ``name``.

    Raises:
        CacheNotFoundError: no such cache.
        ObjectNotFoundError: no such uploaded archive.
    """
    services.caches.definition(name)
    if not services.archives.objects.exists(steps.archive):
        raise ObjectNotFoundError(
            f"no uploaded tile archive {steps.archive}: upload it first with "
            "PUT /api/cache-archives/{sha256}",
            key=steps.archive,
        )
    payload = ImportCache(cache=name, **steps.model_dump())
    return jobs.submit(IMPORT_TILE_CACHE, payload, owner=owner)


def import_cache(
    name: str,
    body: ImportSteps,
    request: Request,
    response: Response,
    services: ServicesDep,
    principal: PrincipalDep,
    jobs: JobsDep,
) -> dict[str, Any]:
    """Start an import job of an uploaded archive into a cache."""
    job = start_import(services, jobs, principal.subject, name, body)
    response.status_code = 201
    return job_json(job, request)


class TileKey(BaseModel):
    """One tile, rows from the top."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    z: int = Field(ge=0, le=30)
    x: int = Field(ge=0)
    y: int = Field(ge=0)

    @property
    def tile(self) -> Tile:
        """As a :class:`~offmaps.types.Tile`."""
        return Tile(self.x, self.y, self.z)


_EXPIRES = Field(
    default=int(DEFAULT_URL_EXPIRY.total_seconds()),
    ge=1,
    le=int(MAX_PRESIGN_EXPIRY.total_seconds()),
    description="Seconds the URLs work for",
)


class UrlsRequest(OptionalLevels):
    """Presigned download URLs: of listed tiles, or of an area's stored tiles (paged).

    Attributes:
        tiles: the tiles (at most 10,000); or
        area, min_zoom, max_zoom: an area and levels, with ``after`` (the ``next`` of the
            previous page) and ``limit``.
        expires_s: how long the URLs work.
    """

    tiles: list[TileKey] | None = Field(default=None, max_length=MAX_URLS_PAGE)
    area: Area | None = None
    after: TileKey | None = None
    limit: int = Field(default=1000, ge=1, le=MAX_URLS_PAGE)
    expires_s: int = _EXPIRES

    @model_validator(mode="after")
    def _one_way(self) -> UrlsRequest:
        if (self.tiles is None) == (self.area is None):
            raise ValueError("give either tiles or an area with min_zoom and max_zoom")
        if self.area is not None and self.zooms is None:
            raise ValueError("an area needs min_zoom and max_zoom")
        return self


class UploadTile(TileKey):
    """A tile a client holds and declares: its SHA-256 and size."""

    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    size: int = Field(ge=1)


class UploadsRequest(BaseModel):
    """Presigned upload URLs for tiles a client holds, and a grant to commit them with."""

    model_config = ConfigDict(extra="forbid")

    tiles: list[UploadTile] = Field(min_length=1, max_length=MAX_GRANT_TILES)
    expires_s: int = _EXPIRES


def _url_document(found: TileURL, request: Request) -> dict[str, Any]:
    return {
        "z": found.tile.z,
        "x": found.tile.x,
        "y": found.tile.y,
        "sha256": found.sha256,
        "size": found.size,
        "url": absolute_url(request, found.url.url),
        "method": str(found.url.method),
        "headers": dict(found.url.headers),
        "expires_at": found.url.expires_at.isoformat(),
    }


def presigned_urls(
    services: Services, name: str, body: UrlsRequest
) -> tuple[tuple[TileURL, ...], Tile | None]:
    """The presigned URLs a request asks for, and the next page's ``after`` (REST and GraphQL)."""
    expires = timedelta(seconds=body.expires_s)
    if body.tiles is not None:
        tiles = [key.tile for key in body.tiles]
        return services.caches.tile_urls_for(name, tiles, expires=expires), None
    area, zooms = body.area, body.zooms
    if area is None or zooms is None:  # the model allows neither
        raise CacheError("give either tiles or an area with min_zoom and max_zoom")
    return services.caches.tile_urls(
        name,
        area.aoi(),
        zooms,
        expires=expires,
        after=body.after.tile if body.after else None,
        limit=body.limit,
    )


def tile_urls(
    name: str, body: UrlsRequest, request: Request, services: ServicesDep
) -> dict[str, Any]:
    """Presigned GET URLs of stored tiles, to fetch straight from storage."""
    found, following = presigned_urls(services, name, body)
    return {
        "urls": [_url_document(item, request) for item in found],
        "next": None
        if following is None
        else {"z": following.z, "x": following.x, "y": following.y},
    }


def grant_uploads(
    name: str,
    body: UploadsRequest,
    request: Request,
    response: Response,
    services: ServicesDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """Presigned PUT URLs for tiles, each bound to its declared SHA-256, and the grant to
    commit them with."""
    grant = services.caches.grant_uploads(
        name,
        [(t.tile, t.sha256, t.size) for t in body.tiles],
        owner=principal.subject,
        expires=timedelta(seconds=body.expires_s),
    )
    base = base_url(request)
    response.status_code = 201
    return {
        "id": grant.id,
        "cache": grant.cache,
        "expires_at": grant.expires_at.isoformat(),
        "uploads": [_url_document(item, request) for item in grant.uploads],
        "commit": f"{base}/api/caches/{name}/uploads/{grant.id}/commit",
    }


def commit_uploads(
    name: str, grant_id: str, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Check the uploaded tiles of a grant and make them visible, all or none."""
    changed = services.caches.commit_uploads(name, grant_id, owner=principal.subject)
    return {"committed": True, "changed": changed}


def caches_router() -> APIRouter:
    """The tile cache API."""
    router = APIRouter(prefix="/api", tags=["caches"], route_class=GatedRoute)
    read = [Depends(READ_CACHES)]
    write = [Depends(WRITE_CACHES)]
    router.add_api_route(
        "/caches", list_caches, methods=["GET"], dependencies=read, summary="The tile caches"
    )
    router.add_api_route(
        "/caches",
        create_cache,
        methods=["POST"],
        dependencies=write,
        status_code=201,
        summary="Create a tile cache",
    )
    router.add_api_route(
        "/caches/{name}", get_cache, methods=["GET"], dependencies=read, summary="A tile cache"
    )
    router.add_api_route(
        "/caches/{name}",
        delete_cache,
        methods=["DELETE"],
        dependencies=write,
        status_code=204,
        response_class=Response,
        summary="Remove a tile cache",
    )
    router.add_api_route(
        "/caches/{name}/stats",
        stats_of_cache,
        methods=["GET"],
        dependencies=read,
        summary="A tile cache's figures per level",
    )
    router.add_api_route(
        "/caches/{name}/seed",
        seed_cache,
        methods=["POST"],
        dependencies=write,
        summary="Seed an area (a job), or count it (dry run)",
    )
    router.add_api_route(
        "/caches/{name}/clean",
        clean_cache,
        methods=["POST"],
        dependencies=write,
        status_code=201,
        summary="Clean a tile cache (a job)",
    )
    router.add_api_route(
        "/caches/{name}/verify",
        verify_cache,
        methods=["POST"],
        dependencies=write,
        summary="Hash a tile cache's blobs again",
    )
    router.add_api_route(
        "/caches/{name}/urls",
        tile_urls,
        methods=["POST"],
        dependencies=read,
        summary="Presigned URLs of stored tiles",
    )
    router.add_api_route(
        "/caches/{name}/uploads",
        grant_uploads,
        methods=["POST"],
        dependencies=write,
        status_code=201,
        summary="Presigned upload URLs and a grant",
    )
    router.add_api_route(
        "/caches/{name}/uploads/{grant_id}/commit",
        commit_uploads,
        methods=["POST"],
        dependencies=write,
        summary="Commit uploaded tiles, all or none",
    )
    router.add_api_route(
        "/caches/{name}/export",
        export_cache,
        methods=["POST"],
        dependencies=read,
        summary="Export an area of a tile cache into a container (a job), or count it",
    )
    router.add_api_route(
        "/caches/{name}/import",
        import_cache,
        methods=["POST"],
        dependencies=write,
        status_code=201,
        summary="Import an uploaded tile archive into a tile cache (a job)",
    )
    router.add_api_route(
        "/cache-archives/{sha256}",
        archive_state,
        methods=["GET"],
        dependencies=write,
        summary="How much of an uploaded tile archive the server has",
    )
    router.add_api_route(
        "/cache-archives/{sha256}",
        upload_archive,
        methods=["PUT"],
        dependencies=write,
        summary="Upload (part of) a tile archive for an import, from an offset",
        responses={409: {"description": "The offset is not what the server has (`expected`)"}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    router.add_api_route(
        "/cache-store",
        store_stats,
        methods=["GET"],
        dependencies=read,
        summary="The blob store under every cache",
    )
    router.add_api_route(
        "/cache-store/gc",
        store_gc,
        methods=["POST"],
        dependencies=write,
        status_code=201,
        summary="Collect the blobs no cache names (a job)",
    )
    return router
