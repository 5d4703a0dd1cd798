"""Portal items for web maps: list, create, read, replace, delete (``/api/maps``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from offmaps.access import Scope, can_read, check_can_write
from offmaps.errors import InvalidWebMapError
from offmaps.schemas import WebMap, parse_webmap
from offmaps.server.auth import GatedRoute
from offmaps.server.links import base_url
from offmaps.server.rest.deps import WRITE_MAPS, CatalogDep, PrincipalDep

__all__ = ["webmaps_router"]

MAX_WEBMAP_BYTES = 5 * 1024 * 1024


async def _document(request: Request) -> WebMap:
    raw = await request.body()
    if len(raw) > MAX_WEBMAP_BYTES:
        raise InvalidWebMapError(f"a web map document is at most {MAX_WEBMAP_BYTES:,} bytes")
    return parse_webmap(raw)


def _summary(webmap: WebMap, base: str) -> dict[str, Any]:
    return {
        "id": webmap.id,
        "title": webmap.item.title,
        "snippet": webmap.item.snippet,
        "tags": list(webmap.item.tags),
        "owner": webmap.sharing.owner,
        "public": webmap.sharing.public,
        "modified": webmap.item.modified.isoformat() if webmap.item.modified else None,
        "href": f"{base}/api/maps/{webmap.id}",
    }


_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WebMap"}}},
}


_routes = APIRouter(
    prefix="/api/maps", tags=["web maps"], dependencies=[WRITE_MAPS], route_class=GatedRoute
)


@_routes.get("", summary="The web maps you can see")
def list_maps(request: Request, catalog: CatalogDep, principal: PrincipalDep) -> dict[str, Any]:
    base = base_url(request)
    maps = [
        _summary(m, base)
        for m in catalog.webmaps.list()
        if principal.has(Scope.ADMIN)
        or can_read(principal, m.sharing.owner, m.sharing.groups, m.sharing.public)
    ]
    return {"maps": maps}


@_routes.post(
    "",
    summary="Create a web map",
    status_code=201,
    openapi_extra={"requestBody": _BODY},
)
async def create_map(
    request: Request, catalog: CatalogDep, principal: PrincipalDep
) -> JSONResponse:
    check_can_write(principal, None)
    webmap = await _document(request)
    catalog.check_references(webmap)
    stored = catalog.webmaps.create(webmap, owner=principal.subject)
    href = f"{base_url(request)}/api/maps/{stored.id}"
    return JSONResponse(
        _summary(stored, base_url(request)), status_code=201, headers={"Location": href}
    )


@_routes.get("/{map_id}", summary="One web map document", response_model=WebMap)
def get_map(map_id: str, catalog: CatalogDep, principal: PrincipalDep) -> WebMap:
    return catalog.visible_map(principal, map_id)


@_routes.put(
    "/{map_id}",
    summary="Replace a web map document",
    status_code=204,
    openapi_extra={"requestBody": _BODY},
)
async def replace_map(
    map_id: str, request: Request, catalog: CatalogDep, principal: PrincipalDep
) -> Response:
    catalog.owned_map(principal, map_id)
    webmap = await _document(request)
    catalog.check_references(webmap)
    catalog.webmaps.replace(map_id, webmap)
    return Response(status_code=204)


@_routes.delete("/{map_id}", summary="Delete a web map", status_code=204)
def delete_map(map_id: str, catalog: CatalogDep, principal: PrincipalDep) -> Response:
    catalog.owned_map(principal, map_id)
    catalog.webmaps.delete(map_id)
    return Response(status_code=204)


def webmaps_router() -> APIRouter:
    """The web map item routes."""
    return _routes
