"""The offline API: capabilities, estimates and generate jobs for a web map (``/api``).

- ``POST /api/maps/{id}/offline/capabilities``: per layer, whether it can be taken offline.
- ``POST /api/maps/{id}/offline/estimate``: tiles, rows and bytes per layer, before any work.
- ``POST /api/maps/{id}/offline/jobs``: start a generate job; ``GET``/``DELETE /api/jobs/{id}``
  follow or cancel it; ``GET /api/jobs/{id}/files/{path}`` downloads its files (HTTP ranges).

The work is :mod:`offmaps.offline.generate`'s; these handlers parse, check access, call it and
serialise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict

from offmaps.access import Principal, Scope
from offmaps.errors import JobNotFoundError
from offmaps.jobs import Job, JobRunner, job_document
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
from offmaps.server.links import base_url
from offmaps.server.rest.deps import CatalogDep, PrincipalDep
from offmaps.server.rest.webmaps import visible_map

__all__ = ["OfflineRequest", "offline_router"]


class OfflineRequest(BaseModel):
    """The body of estimate and generate requests."""

    model_config = ConfigDict(extra="forbid")

    parameters: GenerateOfflineMapParameters
    overrides: GenerateOfflineMapParameterOverrides | None = None


def _document(job: Job, request: Request) -> dict[str, Any]:
    return job_document(job, base_url(request)).model_dump(mode="json")


def _check_job_access(job: Job, principal: Principal) -> None:
    if job.owner is not None and job.owner != principal.subject and not principal.has(Scope.ADMIN):
        raise JobNotFoundError(f"no job {job.id!r}")


def offline_router(jobs: JobRunner) -> APIRouter:
    """The offline API; generate jobs run on ``jobs``."""
    router = APIRouter(prefix="/api", tags=["offline"])

    @router.post("/maps/{map_id}/offline/capabilities", summary="What can be taken offline")
    def capabilities(
        map_id: str,
        catalog: CatalogDep,
        principal: PrincipalDep,
        parameters: GenerateOfflineMapParameters | None = None,
    ) -> dict[str, Any]:
        webmap = visible_map(catalog, principal, map_id)
        found = get_capabilities(webmap, parameters, tile_layer_infos(catalog))
        return {**found.model_dump(mode="json"), "has_errors": found.has_errors}

    @router.post("/maps/{map_id}/offline/estimate", summary="Tiles, rows and bytes, before work")
    def estimate(
        map_id: str, body: OfflineRequest, catalog: CatalogDep, principal: PrincipalDep
    ) -> dict[str, Any]:
        webmap = visible_map(catalog, principal, map_id)
        _, found = prepare_offline_map(catalog, webmap, body.parameters, body.overrides)
        return {
            **found.model_dump(mode="json"),
            "bytes": found.bytes,
            "tiles": found.tiles,
            "features": found.features,
        }

    @router.post(
        "/maps/{map_id}/offline/jobs", summary="Start generating an offline map", status_code=201
    )
    def start(
        map_id: str,
        body: OfflineRequest,
        request: Request,
        catalog: CatalogDep,
        principal: PrincipalDep,
    ) -> dict[str, Any]:
        webmap = visible_map(catalog, principal, map_id)
        plan, found = prepare_offline_map(catalog, webmap, body.parameters, body.overrides)
        check_export_limits(plan, found)
        owner = None if principal.anonymous else principal.subject
        payload = GenerateOfflineMap(
            map_id=map_id,
            parameters=body.parameters,
            overrides=body.overrides,
            owner=owner,
            server_url=base_url(request),
        )
        return _document(jobs.submit(GENERATE_OFFLINE_MAP, payload, owner=owner), request)

    @router.get("/jobs/{job_id}", summary="A job's status, progress and result")
    def status(job_id: str, request: Request, principal: PrincipalDep) -> dict[str, Any]:
        job = jobs.get(job_id)
        _check_job_access(job, principal)
        return _document(job, request)

    @router.delete("/jobs/{job_id}", summary="Cancel a job, or remove an ended one")
    def cancel(job_id: str, principal: PrincipalDep) -> Response:
        job = jobs.get(job_id)
        _check_job_access(job, principal)
        if job.status.done:
            jobs.delete(job_id)
        else:
            jobs.cancel(job_id)
        return Response(status_code=204)

    @router.get("/jobs/{job_id}/files/{path:path}", summary="A file of a finished job (ranges)")
    def download(job_id: str, path: str, principal: PrincipalDep) -> FileResponse:
        job = jobs.get(job_id)
        _check_job_access(job, principal)
        listed = {entry["path"] for entry in (job.result or {}).get("files", [])}
        if path not in listed:
            raise JobNotFoundError(f"job {job_id} has no file {path[:200]!r}")
        return FileResponse(jobs.store.files(job_id) / Path(path), filename=Path(path).name)

    return router
