"""Tiling schemes (OGC API – Tiles): the registered tile matrix sets and the custom ones of
the application's tile layers, and the tile sources every tile route reads."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any
from urllib.parse import quote

import morecantile
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from morecantile import TileMatrixSet

from offmaps.errors import UnknownTileMatrixSetError
from offmaps.server.links import base_url
from offmaps.server.problems import problem_response
from offmaps.sources.base import TileSource, WithTileMatrixSet
from offmaps.tiling.tms import get_tms, list_tms

__all__ = ["SourcesDep", "tile_sources", "tms_not_found", "tms_router"]

_JSON = "application/json"


def tms_not_found(exc: UnknownTileMatrixSetError) -> JSONResponse:
    """A 404 problem for a tile matrix set named in a path that does not exist."""
    # UnknownTileMatrixSetError is a 400 elsewhere (a bad TMS document); as a path it is a 404.
    return problem_response(
        404,
        str(exc),
        type_="https://offmaps.dev/problems/UnknownTileMatrixSetError",
        title="UnknownTileMatrixSetError",
        extra={"tms_id": exc.tms_id},
    )


@cache
def _registered_tms_summaries() -> tuple[tuple[str, str | None, str | None], ...]:
    summaries = []
    for tms_id in list_tms():
        tms = morecantile.tms.get(tms_id)
        summaries.append((tms_id, tms.title, str(tms.uri) if tms.uri else None))
    return tuple(summaries)


async def tile_sources(request: Request) -> Mapping[str, TileSource]:
    """The tile services of the application serving ``request`` (``app.state.tile_sources``),
    looked up on every request, so layers added later are served.

    Asynchronous only so that FastAPI does not run it in the thread pool: a tile's every
    synchronous step waits there for a thread, and for the GIL, behind whatever else runs."""
    sources: Mapping[str, TileSource] = request.app.state.tile_sources
    return sources


SourcesDep = Annotated[Mapping[str, TileSource], Depends(tile_sources)]


def _custom_tms(sources: Mapping[str, TileSource]) -> dict[str, TileMatrixSet]:
    found: dict[str, TileMatrixSet] = {}
    registered = set(list_tms())
    for source in list(sources.values()):
        tms_id = source.info.tms_id
        if tms_id not in registered and isinstance(source, WithTileMatrixSet):
            found[tms_id] = source.tms
    return found


_routes = APIRouter(tags=["tiles"])


@_routes.get("/tileMatrixSets", summary="Tiling schemes (OGC API – Tiles)")
def tile_matrix_sets(sources: SourcesDep, request: Request) -> dict[str, Any]:
    base = base_url(request)
    entries = list(_registered_tms_summaries())
    entries += [
        (tms_id, tms.title, str(tms.uri) if tms.uri else None)
        for tms_id, tms in sorted(_custom_tms(sources).items())
    ]
    listed = []
    for tms_id, title, uri in entries:
        entry: dict[str, Any] = {
            "id": tms_id,
            "links": [
                {
                    "rel": "self",
                    "type": _JSON,
                    "href": f"{base}/tileMatrixSets/{quote(tms_id, safe='')}",
                }
            ],
        }
        if title:
            entry["title"] = title
        if uri:
            entry["uri"] = uri
        listed.append(entry)
    return {
        "links": [{"rel": "self", "type": _JSON, "href": f"{base}/tileMatrixSets"}],
        "tileMatrixSets": listed,
    }


@_routes.get(
    "/tileMatrixSets/{tileMatrixSetId}",
    summary="One tiling scheme as OGC TileMatrixSet JSON",
    response_model=None,
)
def tile_matrix_set(sources: SourcesDep, tileMatrixSetId: str) -> dict[str, Any] | Response:  # noqa: N803
    tms = _custom_tms(sources).get(tileMatrixSetId)
    if tms is None:
        if tileMatrixSetId not in list_tms():
            return tms_not_found(
                UnknownTileMatrixSetError(
                    f"unknown tile matrix set {tileMatrixSetId[:64]!r}: see /tileMatrixSets",
                    tms_id=tileMatrixSetId[:64],
                )
            )
        tms = get_tms(tileMatrixSetId)
    document: dict[str, Any] = tms.model_dump(mode="json", exclude_none=True, by_alias=True)
    return document


def tms_router() -> APIRouter:
    """The tiling scheme routes."""
    return _routes
