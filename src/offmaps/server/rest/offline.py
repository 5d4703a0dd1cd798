"""The offline API: capabilities, estimates and generate jobs for a web map (``/api``).

- ``POST /api/maps/{id}/offline/capabilities``: per layer, whether it can be taken offline.
- ``POST /api/maps/{id}/offline/estimate``: tiles, rows and bytes per layer, before any work.
- ``GET /api/jobs``: the caller's jobs of every kind, newest first (an admin's: all).
- ``POST /api/maps/{id}/offline/jobs``: start a generate job; ``GET``/``DELETE /api/jobs/{id}``
  follow or cancel it; ``GET /api/jobs/{id}/files/{path}`` downloads its files (HTTP ranges),
  ``GET /api/jobs/{id}/package.zip`` all of them at once, as one zip streamed as it is written.

The work is :mod:`offmaps.offline.generate`'s; these handlers parse, check access, call it and
serialise. Capabilities and estimates read a map as whoever may read it; the job routes need a
signed-in user with ``offline:sync`` (``features:edit`` includes it), checked by the write gate
before a body is read. Every job has its owner, who alone (and admins) may see it; a job is
accepted only within its owner's quotas (:mod:`offmaps.offline.quotas`).
"""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from offmaps.access import Scope
from offmaps.errors import JobNotFoundError
from offmaps.jobs import cancel_or_remove, visible_job
from offmaps.offline.generate import (
    GENERATE_OFFLINE_MAP,
    GenerateOfflineMap,
    check_export_limits,
    prepare_offline_map,
    tile_layer_infos,
)
from offmaps.offline.parameters import (
    GenerateOfflineMapParameterOverrides,
    GenerateOfflineMapParameters,
)
from offmaps.offline.plan import get_capabilities
from offmaps.offline.quotas import OfflineQuotas
from offmaps.schemas.jobs import JobStatus
from offmaps.server.auth import GatedRoute, require_scopes
from offmaps.server.downloads import CHUNK_BYTES, object_response
from offmaps.server.links import base_url
from offmaps.server.problems import problem_response
from offmaps.server.rest.deps import CatalogDep, JobsDep, PrincipalDep, ServicesDep, job_json
from offmaps.services import Services
from offmaps.storage import ObjectStore

__all__ = [
    "OfflineRequest",
    "cancel_job",
    "download_job_file",
    "download_job_package",
    "estimate",
    "get_capabilities_of_map",
    "job_status",
    "offline_router",
    "start_job",
]


class OfflineRequest(BaseModel):
    """The body of estimate and generate requests."""

    model_config = ConfigDict(extra="forbid")

    parameters: GenerateOfflineMapParameters
    overrides: GenerateOfflineMapParameterOverrides | None = None


_SUBMITTING = threading.Lock()

TAKE_OFFLINE = require_scopes(Scope.OFFLINE_SYNC, signed_in=True)
"""What starting a generate job needs: a signed-in user who may take maps offline."""

FOLLOW_JOBS = require_scopes(Scope.OFFLINE_SYNC, Scope.CACHE_READ, signed_in=True, any_of=True)
"""What the job routes need: a signed-in user who may start jobs: generate ones, or cache ones
(exports need ``cache:read``, which ``cache:write`` includes); each sees only their own (admins
all)."""


def get_capabilities_of_map(
    map_id: str,
    catalog: CatalogDep,
    principal: PrincipalDep,
    parameters: GenerateOfflineMapParameters | None = None,
) -> dict[str, Any]:
    """Per layer and table, whether it can be taken offline, and why not."""
    webmap = catalog.visible_map(principal, map_id)
    found = get_capabilities(webmap, parameters, tile_layer_infos(catalog))
    return {**found.model_dump(mode="json"), "has_errors": found.has_errors}


def estimate(
    map_id: str, body: OfflineRequest, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Tiles, rows and bytes per layer, before any work."""
    catalog = services.catalog
    webmap = catalog.visible_map(principal, map_id)
    _, found = prepare_offline_map(
        catalog, webmap, body.parameters, body.overrides, states=services.sync.recorded_states
    )
    return {
        **found.model_dump(mode="json"),
        "bytes": found.bytes,
        "tiles": found.tiles,
        "features": found.features,
    }


def start_job(
    map_id: str,
    body: OfflineRequest,
    request: Request,
    catalog: CatalogDep,
    principal: PrincipalDep,
    jobs: JobsDep,
) -> dict[str, Any]:
    """Start a generate job of the caller, once the export limits and their quotas are
    checked."""
    webmap = catalog.visible_map(principal, map_id)
    plan, found = prepare_offline_map(catalog, webmap, body.parameters, body.overrides)
    check_export_limits(plan, found)
    owner = principal.subject
    services: Services = request.app.state.services
    payload = GenerateOfflineMap(
        map_id=map_id,
        parameters=body.parameters,
        overrides=body.overrides,
        owner=owner,
        server_url=base_url(request),
    )
    with _SUBMITTING:  # two requests of one user at once count each other's job
        OfflineQuotas(services.settings.limits, jobs, services.replicas).check_generate(
            owner, found.bytes
        )
        job = jobs.submit(GENERATE_OFFLINE_MAP, payload, owner=owner)
    return job_json(job, request)


def list_jobs(request: Request, principal: PrincipalDep, jobs: JobsDep) -> dict[str, Any]:
    """The caller's jobs, newest first; an admin's: every job, with its owner."""
    everyone = principal.has(Scope.ADMIN)
    listed = sorted(
        (job for job in jobs.store.iter_jobs() if everyone or job.owner == principal.subject),
        key=lambda job: job.created,
        reverse=True,
    )
    return {"jobs": [{**job_json(job, request), "owner": job.owner} for job in listed]}


def job_status(
    job_id: str, request: Request, principal: PrincipalDep, jobs: JobsDep
) -> dict[str, Any]:
    """A job's status, progress and result."""
    return job_json(visible_job(jobs, job_id, principal), request)


def cancel_job(job_id: str, principal: PrincipalDep, jobs: JobsDep) -> Response:
    """Cancel a running job; remove an ended one, with its files."""
    cancel_or_remove(jobs, job_id, principal)
    return Response(status_code=204)


def download_job_file(
    job_id: str, path: str, request: Request, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """A file of a finished job, from the object store: whole, or the one byte range asked
    (or a redirect to a presigned URL of it, with ``OFFMAPS_DOWNLOAD_REDIRECT_S``)."""
    jobs = services.jobs
    job = visible_job(jobs, job_id, principal)
    listed = {entry["path"] for entry in (job.result or {}).get("files", [])}
    if job.status is not JobStatus.SUCCEEDED or path not in listed:
        raise JobNotFoundError(f"job {job_id} has no file {path[:200]!r}")
    return object_response(
        jobs.output(job_id),
        path,
        request,
        filename=PurePosixPath(path).name,
        redirect_s=services.settings.download_redirect_s,
    )


_STORED_SUFFIXES = frozenset({".mbtiles", ".pmtiles", ".png", ".jpg", ".jpeg", ".zip"})
"""Files whose bytes are compressed already (tiles, images): stored in the zip, not deflated."""


class _ZipSink:
    """Where :class:`zipfile.ZipFile` writes a zip being streamed: no ``tell`` nor ``seek``, so
    zipfile writes data descriptors and keeps its own offsets; the bytes wait here until sent."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: :meth:`take` hands the bytes on."""

    def close(self) -> None:
        """Nothing to close: the bytes left are taken after the zip is closed."""

    def take(self) -> bytes:
        """The bytes written since the last call."""
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _zip_stream(store: ObjectStore, paths: list[str]) -> Iterator[bytes]:
    """The files ``paths`` of ``store`` as one zip, in chunks, never held whole."""
    sink = _ZipSink()
    with zipfile.ZipFile(sink, "w", allowZip64=True) as archive:
        for path in paths:
            stored = PurePosixPath(path).suffix.lower() in _STORED_SUFFIXES
            info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with store.open(path) as source, archive.open(info, "w", force_zip64=True) as target:
                while chunk := source.read(CHUNK_BYTES):
                    target.write(chunk)
                    if data := sink.take():
                        yield data
            if data := sink.take():
                yield data
    if data := sink.take():  # the central directory
        yield data


def _safe_member(path: str) -> bool:
    """Whether ``path`` may name a member of a zip: relative, with no ``..`` (no zip slip)."""
    parts = PurePosixPath(path).parts
    return bool(parts) and not path.startswith("/") and ".." not in parts and "\\" not in path


def download_job_package(job_id: str, principal: PrincipalDep, jobs: JobsDep) -> Response:
    """Every file of a finished job as one zip (the offline package, ready to copy to a
    device), streamed as it is written; a 409 problem while the job has not succeeded."""
    job = visible_job(jobs, job_id, principal)
    if job.status is not JobStatus.SUCCEEDED:
        detail = f"job {job.id} is {job.status.value}: only a job that succeeded has a package"
        return problem_response(409, detail, extra={"job_status": job.status.value})
    paths = [entry["path"] for entry in (job.result or {}).get("files", [])]
    if not all(_safe_member(path) for path in paths):
        raise JobNotFoundError(f"job {job.id} has a file no zip may hold")
    name = f"offline-map-{job.id}.zip"
    return StreamingResponse(
        _zip_stream(jobs.output(job.id), paths),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


_RANGES: dict[int | str, dict[str, Any]] = {
    206: {"description": "The one byte range asked for (`Range: bytes=...`)"},
    416: {"description": "The range asked for has no byte of the file"},
}


def offline_router() -> APIRouter:
    """The offline API; its handlers reach the job runner through the application's services.

    The routes keep the names (and so the OpenAPI operation ids) of the earlier handlers.
    """
    router = APIRouter(prefix="/api", tags=["offline"], route_class=GatedRoute)
    router.add_api_route(
        "/maps/{map_id}/offline/capabilities",
        get_capabilities_of_map,
        methods=["POST"],
        name="capabilities",
        summary="What can be taken offline",
    )
    router.add_api_route(
        "/maps/{map_id}/offline/estimate",
        estimate,
        methods=["POST"],
        name="estimate",
        summary="Tiles, rows and bytes, before work",
    )
    router.add_api_route(
        "/maps/{map_id}/offline/jobs",
        start_job,
        methods=["POST"],
        name="start",
        dependencies=[Depends(TAKE_OFFLINE)],
        summary="Start generating an offline map",
        status_code=201,
    )
    router.add_api_route(
        "/jobs",
        list_jobs,
        methods=["GET"],
        name="list",
        dependencies=[Depends(FOLLOW_JOBS)],
        summary="The caller's jobs, newest first (an admin's: all, with their owners)",
    )
    router.add_api_route(
        "/jobs/{job_id}",
        job_status,
        methods=["GET"],
        name="status",
        dependencies=[Depends(FOLLOW_JOBS)],
        summary="A job's status, progress and result",
    )
    router.add_api_route(
        "/jobs/{job_id}",
        cancel_job,
        methods=["DELETE"],
        name="cancel",
        dependencies=[Depends(FOLLOW_JOBS)],
        summary="Cancel a job, or remove an ended one",
        status_code=204,
        response_class=Response,
    )
    router.add_api_route(
        "/jobs/{job_id}/files/{path:path}",
        download_job_file,
        methods=["GET"],
        name="download",
        dependencies=[Depends(FOLLOW_JOBS)],
        summary="A file of a finished job (ranges)",
        response_class=Response,
        responses=_RANGES,
    )
    router.add_api_route(
        "/jobs/{job_id}/package.zip",
        download_job_package,
        methods=["GET"],
        name="package",
        dependencies=[Depends(FOLLOW_JOBS)],
        summary="Every file of a finished job, as one zip",
        response_class=Response,
        responses={
            200: {"content": {"application/zip": {}}, "description": "The package as a zip"},
            409: {"description": "The job has not succeeded (yet)"},
        },
    )
    return router
