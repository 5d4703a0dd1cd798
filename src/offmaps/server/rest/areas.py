"""Preplanned map areas of a web map (``/api/maps/{id}/areas``), docs/preplanned.md.

- ``GET /api/maps/{id}/areas``: the map's areas (whoever may read the map).
- ``POST /api/maps/{id}/areas``: create one and start packaging it (the map's owner or an admin,
  with ``maps:write``); 201 with the area.
- ``GET``, ``PATCH``, ``DELETE /api/maps/{id}/areas/{area}``: one area; a change of extent,
  scales, layers or update mode repackages it; a deleted area answers 410 from then on.
- ``POST /api/maps/{id}/areas/{area}/refresh``: package it again now (409 while one runs).
- ``GET .../updates?from=N&epoch=E``: what a device holding package ``N`` downloads to reach the
  newest: the update files in order, or the full package; ``GET .../updates/{n}/{name}`` an
  update file (ranges, ``offline:sync``).
- ``POST .../replicas``: the caller's replicas of a package they downloaded, for an area in
  ``sync_with_feature_services`` mode (``offline:sync``).
- ``GET .../packages``, ``GET .../packages/{n}``: its kept packages and one package's files;
  ``GET .../packages/latest/files/{path}`` and ``.../packages/{n}/files/{path}``: a file, with
  HTTP ranges (409 while the area has no complete package). Downloads need a signed-in user
  with ``offline:sync``, as taking a map offline on demand does.
- ``GET .../files/{sha256}``: a file of one of the area's kept packages (or an update file) by
  its SHA-256, with ranges: how a device fetches the attachment blobs its update files name,
  which the package it holds lacks (``offline:sync``).

The work is :mod:`offmaps.offline.preplanned`'s; these handlers parse, check access, call it and
serialise.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from offmaps.access import Scope
from offmaps.errors import JobNotFoundError, MapAreaNotFoundError
from offmaps.offline.areas import MapAreaChanges, MapAreaRequest
from offmaps.server.auth import GatedRoute, require_scopes
from offmaps.server.downloads import object_response
from offmaps.server.links import base_url
from offmaps.server.rest.deps import PrincipalDep, ServicesDep
from offmaps.state import AreaPackage, MapArea

__all__ = ["DOWNLOAD_PACKAGES", "READ_MAPS", "WRITE_MAP_AREAS", "area_json", "areas_router"]

DOWNLOAD_PACKAGES = require_scopes(Scope.OFFLINE_SYNC, signed_in=True)
"""What downloading a package needs: a signed-in user who may take maps offline."""
READ_MAPS = require_scopes(Scope.MAPS_READ)
"""What reading areas needs (and that the caller may see the map)."""
WRITE_MAP_AREAS = require_scopes(Scope.MAPS_WRITE)
"""What changing areas needs (and that the caller owns the map, or is an admin)."""


def _href(request: Request, area: MapArea) -> str:
    return f"{base_url(request)}/api/maps/{area.map_id}/areas/{area.id}"


def _files(request: Request, area: MapArea, package: AreaPackage) -> list[dict[str, Any]]:
    base = f"{_href(request, area)}/packages/{package.number}/files"
    return [{**entry, "href": f"{base}/{entry['path']}"} for entry in package.files]


def area_json(
    area: MapArea, request: Request, package: AreaPackage | None = None
) -> dict[str, Any]:
    """An area as the API shows it; with its newest package's files when given."""
    document: dict[str, Any] = {
        "id": area.id,
        "map_id": area.map_id,
        "title": area.title,
        "description": area.description,
        "owner": area.owner,
        "area": area.area,
        "source": area.source,
        "min_scale": area.min_scale,
        "max_scale": area.max_scale,
        "overrides": area.overrides,
        "attachments": area.attachments,
        "tile_format": area.tile_format,
        "update_mode": area.update_mode,
        "refresh": area.refresh,
        "next_refresh_at": area.next_refresh_at,
        "status": area.status,
        "reason": area.reason,
        "job_id": area.job_id,
        "epoch": area.epoch,
        "latest": area.latest,
        "created": area.created,
        "updated": area.updated,
        "links": [{"rel": "self", "href": _href(request, area)}],
    }
    if area.job_id is not None:
        document["links"].append(
            {"rel": "job", "href": f"{base_url(request)}/api/jobs/{area.job_id}"}
        )
    if package is not None:
        document["package"] = _package_json(area, package, request)
    return document


def _package_json(area: MapArea, package: AreaPackage, request: Request) -> dict[str, Any]:
    return {
        "number": package.number,
        "epoch": package.epoch,
        "created": package.created,
        "bytes": package.bytes,
        "layer_errors": package.layer_errors,
        "table_errors": package.table_errors,
        "files": _files(request, area, package),
        "chains": package.chains,
        "updates": [
            {**update, "href": f"{_href(request, area)}/updates/{package.number}/{update['path']}"}
            for update in package.updates
        ],
    }


def list_areas(
    map_id: str, request: Request, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    """The preplanned map areas of a map, oldest first."""
    services.catalog.visible_map(principal, map_id)
    return {"areas": [area_json(a, request) for a in services.areas.store.for_map(map_id)]}


def create_area(
    map_id: str,
    body: MapAreaRequest,
    request: Request,
    services: ServicesDep,
    principal: PrincipalDep,
) -> JSONResponse:
    """Create an area and start packaging it."""
    webmap = services.catalog.owned_map(principal, map_id)
    area = services.areas.create(
        webmap, body, owner=principal.subject, server_url=base_url(request)
    )
    return JSONResponse(
        area_json(area, request), status_code=201, headers={"Location": _href(request, area)}
    )


def get_area(
    map_id: str, area_id: str, request: Request, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    """One area, with its newest package's files once it has one."""
    services.catalog.visible_map(principal, map_id)
    area = services.areas.store.get(area_id, map_id=map_id)
    packages = services.areas.store.packages(area.id)
    return area_json(area, request, packages[-1] if packages else None)


def change_area(
    map_id: str,
    area_id: str,
    body: MapAreaChanges,
    request: Request,
    services: ServicesDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """Change an area; a new extent, scales, layers or update mode repackage it."""
    webmap = services.catalog.owned_map(principal, map_id)
    area = services.areas.change(
        webmap, area_id, body, owner=principal.subject, server_url=base_url(request)
    )
    return area_json(area, request)


def delete_area(
    map_id: str, area_id: str, services: ServicesDep, principal: PrincipalDep
) -> Response:
    """Delete an area and its packages; devices asking for it are told it was deleted."""
    services.catalog.owned_map(principal, map_id)
    services.areas.delete(services.areas.store.get(area_id, map_id=map_id))
    return Response(status_code=204)


def refresh_area(
    map_id: str, area_id: str, request: Request, services: ServicesDep, principal: PrincipalDep
) -> JSONResponse:
    """Package an area again now."""
    services.catalog.owned_map(principal, map_id)
    area = services.areas.store.get(area_id, map_id=map_id)
    area = services.areas.refresh(area, owner=principal.subject, server_url=base_url(request))
    return JSONResponse(area_json(area, request), status_code=202)


def list_packages(
    map_id: str, area_id: str, request: Request, services: ServicesDep, principal: PrincipalDep
) -> dict[str, Any]:
    """The kept packages of an area, oldest first."""
    services.catalog.visible_map(principal, map_id)
    area = services.areas.store.get(area_id, map_id=map_id)
    return {
        "packages": [
            _package_json(area, package, request)
            for package in services.areas.store.packages(area.id)
        ]
    }


def _number(number: str) -> int | None:
    if number == "latest":
        return None
    if not number.isdigit() or len(number) > 9:
        raise MapAreaNotFoundError(f"no package {number[:20]!r}: packages are numbered, or latest")
    return int(number)


def get_package(
    map_id: str,
    area_id: str,
    number: str,
    request: Request,
    services: ServicesDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """One package of an area (``latest`` for its newest): its files."""
    services.catalog.visible_map(principal, map_id)
    area = services.areas.store.get(area_id, map_id=map_id)
    return _package_json(area, services.areas.package(area, _number(number)), request)


def download_package_file(
    map_id: str,
    area_id: str,
    number: str,
    path: str,
    request: Request,
    services: ServicesDep,
    principal: PrincipalDep,
) -> Response:
    """A file of a package: whole, or the one byte range asked."""
    services.catalog.visible_map(principal, map_id)
    area = services.areas.store.get(area_id, map_id=map_id)
    package = services.areas.package(area, _number(number))
    found = {entry["path"]: entry["sha256"] for entry in package.files}.get(path)
    if found is None:
        raise JobNotFoundError(f"package {package.number} has no file {path[:200]!r}")
    return object_response(
        services.areas.files,
        found,
        request,
        filename=PurePosixPath(path).name,
        redirect_s=services.settings.download_redirect_s,
    )


def plan_updates(
    map_id: str,
    area_id: str,
    request: Request,
    services: ServicesDep,
    principal: PrincipalDep,
    epoch: Annotated[int, Query(alias="epoch", ge=0, le=2**31)],
    have: Annotated[int, Query(alias="from", ge=1, le=2**31)],
) -> dict[str, Any]:
    """What a device holding package ``from`` (of ``epoch``) downloads to reach the newest:
    the update files in order, or the full package."""
    services.catalog.visible_map(principal, map_id)
    area = services.areas.store.get(area_id, map_id=map_id)
    plan = services.areas.plan_updates(area, have, epoch)
    base = _href(request, area)
    for entry in plan["files"]:
        entry["href"] = f"{base}/updates/{entry['number']}/{entry['path']}"
    newest = services.areas.package(area)
    return {**plan, "package": _package_json(area, newest, request)}


def download_update_file(
    map_id: str,
    area_id: str,
    number: int,
    name: str,
    request: Request,
    services: ServicesDep,
    principal: PrincipalDep,
) -> Response:
    """An update file: whole, or the one byte range asked."""
    services.catalog.visible_map(principal, map_id)
    area = services.areas.store.get(area_id, map_id=map_id)
    kept = {p.number: p for p in services.areas.store.packages(area.id)}
    package = kept.get(number)
    found = {u["path"]: u["sha256"] for u in package.updates}.get(name) if package else None
    if found is None:
        raise MapAreaNotFoundError(f"map area {area.id} has no update file {number}/{name[:200]!r}")
    return object_response(
        services.areas.files,
        found,
        request,
        filename=name,
        redirect_s=services.settings.download_redirect_s,
    )


def download_area_file(
    map_id: str,
    area_id: str,
    sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="SHA-256, lowercase hex")],
    request: Request,
    services: ServicesDep,
    principal: PrincipalDep,
) -> Response:
    """A file of the area's kept packages or update files, by its SHA-256: whole, or the one
    byte range asked. Only what a package of this area names is served (the files are kept
    once for every area)."""
    services.catalog.visible_map(principal, map_id)
    area = services.areas.store.get(area_id, map_id=map_id)
    for package in services.areas.store.packages(area.id):
        if any(entry["sha256"] == sha256 for entry in (*package.files, *package.updates)) or any(
            sha256 in update.get("blobs", ()) for update in package.updates
        ):
            return object_response(
                services.areas.files,
                sha256,
                request,
                filename=sha256,
                redirect_s=services.settings.download_redirect_s,
            )
    raise MapAreaNotFoundError(f"no package of map area {area.id} has a file {sha256}")


class ReplicasRequest(BaseModel):
    """The body of ``POST .../areas/{area}/replicas``."""

    model_config = ConfigDict(extra="forbid")

    package: int = Field(ge=1, le=2**31, description="The package the device downloaded.")


def register_replicas(
    map_id: str,
    area_id: str,
    body: ReplicasRequest,
    services: ServicesDep,
    principal: PrincipalDep,
) -> JSONResponse:
    """Register the caller's replicas of a downloaded package, for
    ``sync_with_feature_services``."""
    webmap = services.catalog.visible_map(principal, map_id)
    area = services.areas.store.get(area_id, map_id=map_id)
    replicas = services.areas.register_replicas(webmap, area, body.package, owner=principal.subject)
    return JSONResponse({"replicas": replicas}, status_code=201)


_AREA_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such map or area"},
    410: {"description": "The area was deleted by its author"},
}
_BUSY: dict[int | str, dict[str, Any]] = {
    409: {"description": "The area is being packaged, or has no complete package yet"},
}
_RANGES: dict[int | str, dict[str, Any]] = {
    206: {"description": "The one byte range asked for (`Range: bytes=...`)"},
    416: {"description": "The range asked for has no byte of the file"},
}


def areas_router() -> APIRouter:
    """The preplanned map area routes."""
    router = APIRouter(
        prefix="/api/maps/{map_id}/areas",
        tags=["preplanned map areas"],
        route_class=GatedRoute,
    )
    write = [Depends(WRITE_MAP_AREAS)]  # checked before the body is read; ownership after
    area = "/{area_id}"
    routes: list[tuple[str, Any, str, str, dict[str, Any]]] = [
        ("", list_areas, "GET", "The preplanned map areas of a map", {}),
        (
            "",
            create_area,
            "POST",
            "Create a preplanned map area and package it",
            {"status_code": 201, "responses": _AREA_ERRORS, "dependencies": write},
        ),
        (area, get_area, "GET", "One preplanned map area", {"responses": _AREA_ERRORS}),
        (
            area,
            change_area,
            "PATCH",
            "Change a preplanned map area",
            {"responses": {**_AREA_ERRORS, **_BUSY}, "dependencies": write},
        ),
        (
            area,
            delete_area,
            "DELETE",
            "Delete a preplanned map area and its packages",
            {
                "status_code": 204,
                "response_class": Response,
                "responses": _AREA_ERRORS,
                "dependencies": write,
            },
        ),
        (
            f"{area}/refresh",
            refresh_area,
            "POST",
            "Package a preplanned map area again now",
            {"status_code": 202, "responses": {**_AREA_ERRORS, **_BUSY}, "dependencies": write},
        ),
        (
            f"{area}/packages",
            list_packages,
            "GET",
            "The kept packages of a preplanned map area",
            {"responses": _AREA_ERRORS},
        ),
        (
            f"{area}/packages/{{number}}",
            get_package,
            "GET",
            "One package of a preplanned map area (or latest)",
            {"responses": {**_AREA_ERRORS, **_BUSY}},
        ),
        (
            f"{area}/packages/{{number}}/files/{{path:path}}",
            download_package_file,
            "GET",
            "A file of a package (ranges)",
            {
                "response_class": Response,
                "responses": {**_AREA_ERRORS, **_BUSY, **_RANGES},
                "dependencies": [Depends(DOWNLOAD_PACKAGES)],
            },
        ),
        (
            f"{area}/updates",
            plan_updates,
            "GET",
            "What a device downloads to bring its package up to date",
            {"responses": {**_AREA_ERRORS, **_BUSY}},
        ),
        (
            f"{area}/updates/{{number}}/{{name}}",
            download_update_file,
            "GET",
            "An update file (ranges)",
            {
                "response_class": Response,
                "responses": {**_AREA_ERRORS, **_RANGES},
                "dependencies": [Depends(DOWNLOAD_PACKAGES)],
            },
        ),
        (
            f"{area}/files/{{sha256}}",
            download_area_file,
            "GET",
            "A file of a kept package of the area, by its SHA-256 (ranges)",
            {
                "response_class": Response,
                "responses": {**_AREA_ERRORS, **_RANGES},
                "dependencies": [Depends(DOWNLOAD_PACKAGES)],
            },
        ),
        (
            f"{area}/replicas",
            register_replicas,
            "POST",
            "Register your device's replicas of a package, to sync it with the services",
            {
                "status_code": 201,
                "responses": {**_AREA_ERRORS, **_BUSY, 429: {"description": "Over a quota"}},
                "dependencies": [Depends(DOWNLOAD_PACKAGES)],
            },
        ),
    ]
    for path, handler, method, summary, extra in routes:
        router.add_api_route(
            path, handler, methods=[method], name=f"area_{handler.__name__}", summary=summary,
            **extra,
        )  # fmt: skip
    return router
