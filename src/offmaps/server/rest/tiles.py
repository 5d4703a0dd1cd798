"""The HTTP routes of tile services: XYZ, TileJSON 3.0, OGC API – Tiles.

:func:`tiles_router` serves any mapping of :class:`offmaps.sources.TileSource` (archives,
upstream XYZ through a cache, vector tiles built from features).

Tile keys from the wire are parsed here, never by FastAPI's validation: a hostile key (not a
number, negative, huge, outside the matrix) is a domain error and so a 400 or 404 problem document.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response, params
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse
from morecantile import TileMatrixSet

from offmaps.cache import DEFAULT_URL_EXPIRY, TileCache
from offmaps.errors import (
    InvalidTileError,
    TileNotFoundError,
    UnknownTileMatrixSetError,
    UnsupportedTileMatrixSetError,
)
from offmaps.server.links import absolute_url, base_url
from offmaps.server.rest.tms import SourcesDep, tms_not_found, tms_router
from offmaps.sources.archive import ArchiveTileSource
from offmaps.sources.base import TileSource, TileSourceInfo, source_tms
from offmaps.types import BBox, Tile, TileCompression, TileFormat

__all__ = [
    "CACHE_CONTROL",
    "EXTENSIONS",
    "extensions_of",
    "etag_matches",
    "etag_of",
    "tiles_router",
]

CACHE_CONTROL = "public, max-age=3600"
_JSON = "application/json"
_CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
_REL_TILING_SCHEME = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
_NUMBER = re.compile(r"^[0-9]{1,9}$")
EXTENSIONS: dict[TileFormat, frozenset[str]] = {
    TileFormat.PNG: frozenset({"png"}),
    TileFormat.JPEG: frozenset({"jpg", "jpeg"}),
    TileFormat.WEBP: frozenset({"webp"}),
    TileFormat.MVT: frozenset({"pbf", "mvt"}),
}


def extensions_of(source: TileSource) -> frozenset[str]:
    """The file extensions a tile URL of ``source`` may end with: its format's, and for a
    mixed cache those of PNG and JPEG."""
    if isinstance(source, TileCache):
        formats = source.definition.tile_formats
        return frozenset().union(*(EXTENSIONS[f] for f in formats))
    return EXTENSIONS[source.info.tile_format]


# --- HTTP -----------------------------------------------------------------------------------


def _get_source(sources: Mapping[str, TileSource], name: str) -> TileSource:
    source = sources.get(name)
    if source is None:
        raise TileNotFoundError(f"no tile layer named {name[:64]!r}")
    return source


def _parse_number(text: str, what: str) -> int:
    if not _NUMBER.match(text):
        raise InvalidTileError(f"the tile {what} must be a non-negative integer, not {text[:32]!r}")
    return int(text)


def etag_of(data: bytes) -> str:
    """The strong ETag of a tile: its SHA-256."""
    return f'"{hashlib.sha256(data).hexdigest()}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (or ``*``)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


async def _read_tile(source: TileSource, tile: Tile) -> bytes:
    """The tile's bytes: read on the event loop from a local archive (one indexed lookup, as
    in ``server/fastpath.py``), in the thread pool from anything that may take long (upstream
    fetches, vector tiles built from features)."""
    if isinstance(source, ArchiveTileSource):
        return source.get_tile(tile)
    return await run_in_threadpool(source.get_tile, tile)


async def _tile_response(request: Request, source: TileSource, tile: Tile) -> Response:
    info = source.info
    data = await _read_tile(source, tile)
    etag = etag_of(data)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if info.tile_compression is TileCompression.GZIP:
        headers["Content-Encoding"] = "gzip"
    # a mixed cache's tiles are PNG or JPEG, each served as what its bytes are
    media_type = (
        source.media_type(data) if isinstance(source, TileCache) else info.tile_format.media_type
    )
    return Response(data, media_type=media_type, headers=headers)


def _export_capability(info: TileSourceInfo) -> dict[str, Any]:
    # ArcGIS's names for what an offline map may copy from a tile layer
    return {
        "exportTilesAllowed": info.export_tiles_allowed,
        "maxExportTileCount": info.max_export_tile_count,
    }


def _bounds(info: TileSourceInfo, tms: TileMatrixSet) -> BBox:
    whole = tms.bbox
    if info.bounds is None:
        return BBox(whole.left, whole.bottom, whole.right, whole.top)
    return info.bounds


def _level_limits(tms: TileMatrixSet, bounds: BBox | None, z: int) -> dict[str, Any]:
    matrix = tms.matrix(z)
    rows, cols = (0, matrix.matrixHeight - 1), (0, matrix.matrixWidth - 1)
    if bounds is not None:
        whole = tms.bbox
        west, east = max(bounds.west, whole.left), min(bounds.east, whole.right)
        south, north = max(bounds.south, whole.bottom), min(bounds.north, whole.top)
        if west < east and south < north:
            # Nudge the east and south edges inwards: a box ending on a tile edge does not
            # reach into the next tile.
            eps_x, eps_y = (east - west) * 1e-9, (north - south) * 1e-9
            upper_left = tms.tile(west, north, z)
            lower_right = tms.tile(east - eps_x, south + eps_y, z)
            if bounds.west <= bounds.east:
                cols = (max(0, upper_left.x), min(cols[1], lower_right.x))
            rows = (max(0, upper_left.y), min(rows[1], lower_right.y))
    return {
        "tileMatrix": str(matrix.id),
        "minTileRow": rows[0],
        "maxTileRow": rows[1],
        "minTileCol": cols[0],
        "maxTileCol": cols[1],
    }


def _tileset_document(
    info: TileSourceInfo, tms: TileMatrixSet, base: str, name: str
) -> dict[str, Any]:
    """The OGC API – Tiles tileset metadata of a tile layer."""
    here = f"{base}/collections/{quote(name, safe='')}/tiles/{quote(info.tms_id, safe='')}"
    bounds = _bounds(info, tms)
    document: dict[str, Any] = {
        "title": info.title,
        "description": info.description,
        "dataType": "map" if info.tile_format.is_raster else "vector",
        "crs": tms.crs.srs,
        "tileMatrixSetLimits": [
            _level_limits(tms, info.bounds, z)
            for z in range(info.min_zoom, info.max_zoom + 1)
            if z in range(tms.minzoom, tms.maxzoom + 1)
        ],
        "boundingBox": {
            "lowerLeft": [bounds.west, bounds.south],
            "upperRight": [bounds.east, bounds.north],
            "crs": _CRS84,
        },
        "links": [
            {"rel": "self", "type": _JSON, "href": here},
            {
                "rel": _REL_TILING_SCHEME,
                "type": _JSON,
                "href": f"{base}/tileMatrixSets/{quote(info.tms_id, safe='')}",
            },
            {
                "rel": "item",
                "type": info.tile_format.media_type,
                "href": f"{here}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}",
                "templated": True,
            },
        ],
    }
    if tms.uri:
        document["tileMatrixSetURI"] = str(tms.uri)
    if info.attribution:
        document["attribution"] = info.attribution
    if info.tile_format is TileFormat.MVT:
        document["layers"] = [{"id": layer, "dataType": "vector"} for layer in info.vector_layers]
    document.update(_export_capability(info))
    return document


_routes = APIRouter(tags=["tiles"])


def _tms_for(source: TileSource, tms_id: str) -> TileMatrixSet:
    if tms_id != source.info.tms_id:
        raise UnknownTileMatrixSetError(
            f"tile layer {source.info.name!r} is tiled in {source.info.tms_id}, "
            f"not {tms_id[:64]!r}",
            tms_id=tms_id[:64],
        )
    return source_tms(source)


_TILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The tile",
        "content": {fmt.media_type: {} for fmt in TileFormat},
    },
    304: {"description": "Not modified (If-None-Match)"},
    307: {"description": "With `redirect=presigned`: `Location` is a presigned URL of the tile"},
}


@_routes.get(
    "/tiles/{name}/tilejson.json",
    summary="TileJSON 3.0 of a tile layer",
    response_class=JSONResponse,
)
def tilejson(sources: SourcesDep, name: str, request: Request) -> dict[str, Any]:
    source = _get_source(sources, name)
    info = source.info
    tms = source_tms(source)
    if tms.id != "WebMercatorQuad":
        raise UnsupportedTileMatrixSetError(
            f"tile layer {name!r} is tiled in {info.tms_id}; TileJSON describes "
            "WebMercatorQuad layers only: use /collections/{name}/tiles"
        )
    base = base_url(request)
    bounds = _bounds(info, tms)
    document: dict[str, Any] = {
        "tilejson": "3.0.0",
        "name": info.title,
        "description": info.description,
        "version": "1.0.0",
        "scheme": "xyz",
        "tiles": [
            f"{base}/tiles/{quote(name, safe='')}/{{z}}/{{x}}/{{y}}.{info.tile_format.value}"
        ],
        "minzoom": info.min_zoom,
        "maxzoom": info.max_zoom,
        "bounds": list(bounds),
        "center": [
            (bounds.west + bounds.east) / 2,
            (bounds.south + bounds.north) / 2,
            info.min_zoom,
        ],
    }
    document.update(_export_capability(info))
    if info.attribution:
        document["attribution"] = info.attribution
    if info.tile_format is TileFormat.MVT:
        document["vector_layers"] = [{"id": layer, "fields": {}} for layer in info.vector_layers]
    return document


@_routes.get(
    "/tiles/{name}/{z}/{x}/{y}",
    summary="One tile (XYZ, rows from the top); y may end in the format's extension",
    response_class=Response,
    responses=_TILE_RESPONSES,
)
async def xyz_tile(
    sources: SourcesDep,
    name: str,
    z: str,
    x: str,
    y: str,
    request: Request,
    redirect: Annotated[
        Literal["presigned"] | None,
        Query(
            description="`presigned`: a tile cache answers 307 to a presigned URL of the tile "
            "in its storage (S3's own, or this server's `/storage` for a local folder)"
        ),
    ] = None,
) -> Response:
    source = _get_source(sources, name)
    row, dot, extension = y.partition(".")
    if dot and extension.lower() not in extensions_of(source):
        raise TileNotFoundError(
            f"tile layer {name!r} serves {source.info.tile_format.value} tiles, "
            f"not {extension[:16]!r}"
        )
    tile = Tile(_parse_number(x, "column"), _parse_number(row, "row"), _parse_number(z, "level"))
    if redirect == "presigned" and isinstance(source, TileCache):
        url = await run_in_threadpool(source.presign_tile, tile, DEFAULT_URL_EXPIRY)
        if url is not None:
            return RedirectResponse(absolute_url(request, url.url), status_code=307)
    return await _tile_response(request, source, tile)


@_routes.get("/collections/{name}/tiles", summary="Tilesets of a collection (OGC API – Tiles)")
def tilesets(sources: SourcesDep, name: str, request: Request) -> dict[str, Any]:
    source = _get_source(sources, name)
    info = source.info
    tms = source_tms(source)
    base = base_url(request)
    here = f"{base}/collections/{quote(name, safe='')}/tiles"
    summary: dict[str, Any] = {
        "title": info.title,
        "dataType": "map" if info.tile_format.is_raster else "vector",
        "crs": tms.crs.srs,
        "links": [
            {
                "rel": "self",
                "type": _JSON,
                "href": f"{here}/{quote(info.tms_id, safe='')}",
                "title": f"{info.title} tiled in {info.tms_id}",
            },
            {
                "rel": _REL_TILING_SCHEME,
                "type": _JSON,
                "href": f"{base}/tileMatrixSets/{quote(info.tms_id, safe='')}",
            },
        ],
    }
    if tms.uri:
        summary["tileMatrixSetURI"] = str(tms.uri)
    return {
        "links": [{"rel": "self", "type": _JSON, "href": here}],
        "tilesets": [summary],
    }


@_routes.get(
    "/collections/{name}/tiles/{tileMatrixSetId}",
    summary="Tileset metadata (OGC API – Tiles)",
    response_model=None,
)
def tileset(
    sources: SourcesDep,
    name: str,
    tileMatrixSetId: str,  # noqa: N803 - OGC's name
    request: Request,
) -> dict[str, Any] | Response:
    source = _get_source(sources, name)
    info = source.info
    try:
        tms = _tms_for(source, tileMatrixSetId)
    except UnknownTileMatrixSetError as exc:
        return tms_not_found(exc)
    return _tileset_document(info, tms, base_url(request), name)


@_routes.get(
    "/collections/{name}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
    summary="One tile (OGC API – Tiles)",
    response_class=Response,
    responses=_TILE_RESPONSES,
)
async def ogc_tile(
    sources: SourcesDep,
    name: str,
    tileMatrixSetId: str,  # noqa: N803 - OGC's names
    tileMatrix: str,  # noqa: N803
    tileRow: str,  # noqa: N803
    tileCol: str,  # noqa: N803
    request: Request,
) -> Response:
    source = _get_source(sources, name)
    try:
        _tms_for(source, tileMatrixSetId)
    except UnknownTileMatrixSetError as exc:
        return tms_not_found(exc)
    tile = Tile(
        _parse_number(tileCol, "column"),
        _parse_number(tileRow, "row"),
        _parse_number(tileMatrix, "matrix"),
    )
    return await _tile_response(request, source, tile)


def tiles_router(*, dependencies: Sequence[params.Depends] = ()) -> APIRouter:
    """The tile routes: XYZ, TileJSON 3.0, OGC API – Tiles and tiling schemes, over the
    application's ``state.tile_sources``.

    The OGC routes are limited to ``/collections/{name}/tiles...`` so that feature routes can
    share ``/collections/{name}``.

    Args:
        dependencies: dependencies run before every route (access checks, say).
    """
    router = APIRouter(dependencies=list(dependencies))
    router.include_router(_routes)
    router.include_router(tms_router())
    return router
