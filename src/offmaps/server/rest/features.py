"""OGC API – Features for layers and tables (Part 1 core; Part 3 queryables; Part 4 create,
replace, update, delete; Part 5 schemas).

Collections are ``{service}.{layer}``: a layer or table of a feature service. Items are GeoJSON
Features whose ``id`` is the row's global id; their ``ETag`` is the row version, and ``If-Match``
on ``PUT``/``PATCH``/``DELETE`` makes the edit fail with 409 when the row changed since.
Attachments are under ``/collections/{collection_id}/items/{feature_id}/attachments``.

Each collection publishes its schema (``/schema``, JSON Schema, Part 5), the fields a ``filter``
may name (``/queryables``, Part 3) and, for GDAL's OAPIF driver, which reads field types only from
an XML Schema linked as ``describedBy``, the same fields as a GML application schema
(``/schema.xsd``): without it GDAL guesses the types from the first page of features and cuts
64-bit integers to 2147483647 (docs/server.md).

``datetime`` on ``/items`` (Part 1) filters on the collection's primary temporal property (its
only date or date-time field, ``x-ogc-role: primary-instant`` in ``/schema``, its range in the
collection's ``extent.temporal``); on a collection without one it matches every feature, as
Part 1 asks for features without temporal information (docs/server.md).
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from offmaps.access import Principal
from offmaps.catalog import Catalog, EditOperation
from offmaps.errors import InvalidFeatureError
from offmaps.features.describe import feature_schema, gml_application_schema, queryables_schema
from offmaps.features.geojson import (
    CRS84_NAMES,
    check_crs84,
    feature_to_geojson,
    parse_feature_body,
)
from offmaps.features.model import Delete, FeatureQuery, Insert, Update
from offmaps.features.store import MAX_PAGE_SIZE
from offmaps.features.temporal import (
    DATETIME_PATTERN,
    MAX_DATETIME_LENGTH,
    TimeInterval,
    parse_datetime_interval,
)
from offmaps.server.auth import GatedRoute
from offmaps.server.links import base_url
from offmaps.server.rest.deps import EDIT_FEATURES, CatalogDep, PrincipalDep, parse_uuid
from offmaps.types import BBox

__all__ = ["GEOJSON", "JSON_SCHEMA", "features_router"]

GEOJSON = "application/geo+json"
JSON_SCHEMA = "application/schema+json"
_XML = "application/xml"
_REL_SCHEMA = "http://www.opengis.net/def/rel/ogc/1.0/schema"
_REL_QUERYABLES = "http://www.opengis.net/def/rel/ogc/1.0/queryables"
# GDAL 3.6 matches "describedBy" exactly (later versions ignore case; RFC 8288 relation types
# are case-insensitive, so this spelling is right for every reader)
_REL_DESCRIBED_BY = "describedBy"
_BODY_TYPES = frozenset({GEOJSON, "application/json", "application/merge-patch+json"})
_ITEMS_PARAMS = frozenset(
    {"limit", "offset", "bbox", "bbox-crs", "datetime", "filter", "filter-lang", "f"}
)
_CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
_GREGORIAN = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"
_DATETIME_DESCRIPTION = (
    "Only features whose primary temporal property (`x-ogc-role: primary-instant` in the "
    "collection's schema) intersects this instant or interval (OGC API - Features Part 1): "
    "an RFC 3339 date (`2024-01-31`, the whole day in UTC) or date-time with a time zone "
    "(`2024-01-31T10:00:00Z`), or two of them separated by `/`, one of which may be `..` or "
    "empty for an open end. Features whose property is null are not selected; on a collection "
    "without a primary temporal property every feature is. An interval ending before it "
    "starts selects none."
)
_NUMBER = r"-?[0-9]+(\.[0-9]+)?"
_BBOX = rf"^{_NUMBER}(,{_NUMBER}){{3}}(,{_NUMBER},{_NUMBER})?$"
_CRS84_NAME = "^(" + "|".join(re.escape(name) for name in sorted(CRS84_NAMES)) + ")$"
# the document's description of a feature body; the collection's own schema is checked after
_FEATURE = {
    "type": "object",
    "properties": {
        "type": {"const": "Feature"},
        "geometry": {"type": ["object", "null"]},
        "properties": {"type": ["object", "null"]},
    },
}
_FEATURE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            GEOJSON: {"schema": {**_FEATURE, "required": ["type"]}},
            "application/json": {"schema": {**_FEATURE, "required": ["type"]}},
        },
    }
}
_PATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": _FEATURE}
            for media in ("application/merge-patch+json", GEOJSON, "application/json")
        },
    }
}
_UNSUPPORTED: dict[int | str, dict[str, Any]] = {415: {"description": "The body is not GeoJSON"}}


def _parse_bbox(text: str) -> BBox:
    parts = text.split(",")
    if len(parts) not in (4, 6):
        msg = "bbox must be 4 numbers (minLon,minLat,maxLon,maxLat) or 6 with heights"
        raise InvalidFeatureError(msg)
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise InvalidFeatureError(f"bbox has a value that is not a number: {text[:80]!r}") from None
    if not all(math.isfinite(n) for n in numbers):
        raise InvalidFeatureError("bbox values must be finite numbers")
    if len(numbers) == 6:
        numbers = [numbers[0], numbers[1], numbers[3], numbers[4]]
    west, south, east, north = numbers
    if not (-90 <= south <= north <= 90) or not (-180 <= west <= 180 and -180 <= east <= 180):
        msg = "bbox must be in CRS84: -180 <= lon <= 180, -90 <= minLat <= maxLat <= 90"
        raise InvalidFeatureError(msg)
    return BBox(west, south, east, north)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _etag(version: int) -> str:
    return f'"{version}"'


def _if_match(request: Request) -> int | None:
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    value = header.strip().removeprefix("W/").strip('"')
    if not value.isdigit() or len(value) > 18:
        raise InvalidFeatureError(f"If-Match must be an ETag from this server, not {header[:40]!r}")
    return int(value)


async def _json_body(request: Request) -> object:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in _BODY_TYPES:
        raise _unsupported_media_type(media_type)
    content_crs = request.headers.get("content-crs")
    if content_crs is not None:  # OGC API - Features - Part 2
        check_crs84(content_crs, "Content-Crs")
    raw = await request.body()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidFeatureError(f"the body is not valid JSON: {str(exc)[:120]}") from None
    except RecursionError:
        raise InvalidFeatureError("the body is nested too deeply") from None


def _unsupported_media_type(media_type: str) -> HTTPException:
    detail = f"send the feature as {GEOJSON} (or application/json), not {media_type[:60]!r}"
    return HTTPException(415, detail)


def _collection(catalog: Catalog, cid: str, request: Request) -> dict[str, Any]:
    service, schema = catalog.get_layer(cid)
    base = base_url(request)
    store = catalog.feature_service(service)
    collection: dict[str, Any] = {
        "id": cid,
        "title": schema.title or schema.name,
        "itemType": "feature" if not schema.is_table else "record",
        "crs": [_CRS84],
        "links": [
            {"rel": "self", "type": "application/json", "href": f"{base}/collections/{cid}"},
            {
                "rel": "items",
                "type": GEOJSON,
                "title": "Items",
                "href": f"{base}/collections/{cid}/items",
            },
            {
                "rel": _REL_SCHEMA,
                "type": JSON_SCHEMA,
                "title": "Schema of the features",
                "href": f"{base}/collections/{cid}/schema",
            },
            {
                "rel": _REL_QUERYABLES,
                "type": JSON_SCHEMA,
                "title": "Properties a filter may name",
                "href": f"{base}/collections/{cid}/queryables",
            },
            {
                "rel": _REL_DESCRIBED_BY,
                "type": _XML,
                "title": "Schema of the features as a GML application schema (XML Schema)",
                "href": f"{base}/collections/{cid}/schema.xsd",
            },
        ],
    }
    extent: dict[str, Any] = {}
    if not schema.is_table:
        envelope = store.extent(schema.name)
        if envelope is not None:
            box = catalog.extent_crs84(envelope, schema)
            extent["spatial"] = {"bbox": [list(box)], "crs": _CRS84}
    interval = store.time_extent(schema.name)
    if interval is not None:
        extent["temporal"] = {"interval": [_rfc3339_interval(interval)], "trs": _GREGORIAN}
    if extent:
        collection["extent"] = extent
    return collection


def _rfc3339_interval(interval: TimeInterval) -> list[str | None]:
    """The interval as RFC 3339 date-times in UTC, to the millisecond (a date from its first
    to its last instant)."""

    def text(bound: date | datetime | None, *, end: bool) -> str | None:
        if bound is None:
            return None
        if not isinstance(bound, datetime):
            clock = time(23, 59, 59, 999_000) if end else time()
            bound = datetime.combine(bound, clock, tzinfo=UTC)
        stamp = bound.astimezone(UTC).isoformat(timespec="milliseconds")
        return stamp.replace("+00:00", "Z")

    return [text(interval.start, end=False), text(interval.end, end=True)]


_routes = APIRouter(tags=["features"], dependencies=[EDIT_FEATURES], route_class=GatedRoute)


@_routes.get("/collections", summary="Feature collections and tile layers")
def collections(request: Request, catalog: CatalogDep, principal: PrincipalDep) -> dict[str, Any]:
    base = base_url(request)
    listed = [_collection(catalog, cid, request) for cid in catalog.readable_collections(principal)]
    return {
        "links": [
            {"rel": "self", "type": "application/json", "href": f"{base}/collections"},
        ],
        "collections": listed,
    }


@_routes.get("/collections/{collection_id}", summary="One feature collection")
def collection(
    collection_id: str, request: Request, catalog: CatalogDep, principal: PrincipalDep
) -> dict[str, Any]:
    catalog.check_read(principal, collection_id)
    return _collection(catalog, collection_id, request)


@_routes.get(
    "/collections/{collection_id}/schema",
    summary="Schema of a collection's features (OGC API – Features Part 5)",
    response_class=JSONResponse,
    responses={200: {"content": {JSON_SCHEMA: {}}}},
)
def schema(
    collection_id: str, request: Request, catalog: CatalogDep, principal: PrincipalDep
) -> JSONResponse:
    _, layer = catalog.check_read(principal, collection_id)
    url = f"{base_url(request)}/collections/{collection_id}/schema"
    return JSONResponse(feature_schema(layer, schema_id=url), media_type=JSON_SCHEMA)


@_routes.get(
    "/collections/{collection_id}/queryables",
    summary="Properties a filter may name (OGC API – Features Part 3)",
    response_class=JSONResponse,
    responses={200: {"content": {JSON_SCHEMA: {}}}},
)
def queryables(
    collection_id: str, request: Request, catalog: CatalogDep, principal: PrincipalDep
) -> JSONResponse:
    _, layer = catalog.check_read(principal, collection_id)
    url = f"{base_url(request)}/collections/{collection_id}/queryables"
    return JSONResponse(queryables_schema(layer, schema_id=url), media_type=JSON_SCHEMA)


@_routes.get(
    "/collections/{collection_id}/schema.xsd",
    summary="Schema of a collection's features as a GML application schema, for GDAL",
    response_class=Response,
    responses={200: {"content": {_XML: {}}}},
)
def xml_schema(
    collection_id: str, request: Request, catalog: CatalogDep, principal: PrincipalDep
) -> Response:
    _, layer = catalog.check_read(principal, collection_id)
    namespace = f"{base_url(request)}/collections/{collection_id}"
    document = gml_application_schema(layer, target_namespace=namespace)
    return Response(document, media_type=_XML)


@_routes.get(
    "/collections/{collection_id}/items",
    summary="Features of a collection",
    response_class=JSONResponse,
    responses={200: {"content": {GEOJSON: {}}}},
)
def items(
    collection_id: str,
    request: Request,
    catalog: CatalogDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1_000_000)] = 10,
    offset: Annotated[int, Query(ge=0, le=10**12)] = 0,
    # the patterns and enum are documented, not enforced by FastAPI: the handler refuses a bad
    # value with 400, as OGC API - Features asks
    bbox: Annotated[str | None, Query(max_length=400, json_schema_extra={"pattern": _BBOX})] = None,
    filter: Annotated[str | None, Query(max_length=10_000)] = None,
    filter_lang: Annotated[
        str | None, Query(alias="filter-lang", json_schema_extra={"enum": ["cql2-text"]})
    ] = None,
    bbox_crs: Annotated[
        str | None, Query(alias="bbox-crs", json_schema_extra={"pattern": _CRS84_NAME})
    ] = None,
    # parsed here rather than by the pattern, for a 400 that says what is wrong; the OpenAPI
    # description still carries the pattern: every value it matches is accepted
    datetime: Annotated[
        str | None,
        Query(
            description=_DATETIME_DESCRIPTION,
            json_schema_extra={"pattern": DATETIME_PATTERN, "maxLength": MAX_DATETIME_LENGTH},
            openapi_examples={
                "day": {"value": "2024-01-31"},
                "instant": {"value": "2024-01-31T10:00:00Z"},
                "interval": {"value": "2024-01-01/2024-01-31"},
                "since": {"value": "2024-01-01T00:00:00+02:00/.."},
            },
        ),
    ] = None,
) -> JSONResponse:
    unknown = sorted(set(request.query_params) - _ITEMS_PARAMS)
    if unknown:
        raise InvalidFeatureError(f"unknown query parameter {unknown[0][:40]!r}")
    if filter_lang not in (None, "cql2-text"):
        raise InvalidFeatureError("filter-lang must be cql2-text")
    if bbox_crs is not None:
        check_crs84(bbox_crs, "bbox-crs")
    service, schema = catalog.check_read(principal, collection_id)
    store = catalog.feature_service(service)
    limit = min(limit, MAX_PAGE_SIZE)
    filters = (filter,) if filter is not None else ()
    box = catalog.bbox_to_layer(_parse_bbox(bbox), schema) if bbox is not None else None
    interval = parse_datetime_interval(datetime) if datetime is not None else None
    query = FeatureQuery(bbox=box, filters=filters, limit=limit, offset=offset, time=interval)
    page = store.query(schema.name, query)
    features = [feature_to_geojson(f, schema) for f in page.features]
    returned = len(features)
    links = _page_links(request, collection_id, limit, offset, returned, page.number_matched)
    body = {
        "type": "FeatureCollection",
        "timeStamp": _now(),
        "numberMatched": page.number_matched,
        "numberReturned": returned,
        "features": features,
        "links": links,
    }
    return JSONResponse(body, media_type=GEOJSON)


@_routes.get(
    "/collections/{collection_id}/items/{feature_id}",
    summary="One feature",
    response_class=JSONResponse,
    responses={200: {"content": {GEOJSON: {}}}},
)
def item(
    collection_id: str,
    feature_id: str,
    request: Request,
    catalog: CatalogDep,
    principal: PrincipalDep,
) -> JSONResponse:
    service, schema = catalog.check_read(principal, collection_id)
    store = catalog.feature_service(service)
    feature = store.get_feature(schema.name, parse_uuid(feature_id))
    body = feature_to_geojson(feature, schema)
    base = base_url(request)
    body["links"] = [
        {
            "rel": "self",
            "type": GEOJSON,
            "href": f"{base}/collections/{collection_id}/items/{feature_id}",
        },
        {
            "rel": "collection",
            "type": "application/json",
            "href": f"{base}/collections/{collection_id}",
        },
    ]
    return JSONResponse(body, media_type=GEOJSON, headers={"ETag": _etag(feature.version)})


@_routes.post(
    "/collections/{collection_id}/items",
    summary="Create a feature (OGC API – Features Part 4)",
    status_code=201,
    response_class=Response,  # no body: Location names the new feature
    responses={201: {"description": "Created; Location names the new feature"}, **_UNSUPPORTED},
    openapi_extra=_FEATURE_BODY,
)
async def create_item(
    collection_id: str, request: Request, catalog: CatalogDep, principal: PrincipalDep
) -> Response:
    service, schema = catalog.check_edit(principal, collection_id, EditOperation.CREATE)
    body = parse_feature_body(await _json_body(request), schema)
    catalog.check_editable_fields(principal, collection_id, body.properties)
    edit = Insert(schema.name, body.properties, body.geometry)
    store = catalog.feature_service(service)
    (created,) = await run_in_threadpool(store.apply_edits, [edit])
    if created is None:  # pragma: no cover - inserts always return the row
        raise InvalidFeatureError("the store did not return the created row")
    location = f"{base_url(request)}/collections/{collection_id}/items/{created.global_id}"
    return Response(
        status_code=201,
        headers={"Location": location, "ETag": _etag(created.version)},
    )


async def _update(
    collection_id: str,
    feature_id: str,
    request: Request,
    catalog: Catalog,
    principal: Principal,
    *,
    replace: bool,
) -> Response:
    service, schema = catalog.check_edit(principal, collection_id, EditOperation.UPDATE)
    body = parse_feature_body(await _json_body(request), schema, partial=not replace)
    catalog.check_editable_fields(principal, collection_id, body.properties)
    edit = Update(
        schema.name,
        parse_uuid(feature_id),
        properties=body.properties,
        geometry=body.geometry,
        set_geometry=body.has_geometry or replace,
        base_version=_if_match(request),
        replace=replace,
    )
    store = catalog.feature_service(service)
    (updated,) = await run_in_threadpool(store.apply_edits, [edit])
    version = updated.version if updated is not None else 0
    return Response(status_code=204, headers={"ETag": _etag(version)})


@_routes.put(
    "/collections/{collection_id}/items/{feature_id}",
    summary="Replace a feature",
    status_code=204,
    responses=_UNSUPPORTED,
    openapi_extra=_FEATURE_BODY,
)
async def replace_item(
    collection_id: str,
    feature_id: str,
    request: Request,
    catalog: CatalogDep,
    principal: PrincipalDep,
) -> Response:
    return await _update(collection_id, feature_id, request, catalog, principal, replace=True)


@_routes.patch(
    "/collections/{collection_id}/items/{feature_id}",
    summary="Update some properties or the geometry of a feature",
    status_code=204,
    responses=_UNSUPPORTED,
    openapi_extra=_PATCH_BODY,
)
async def update_item(
    collection_id: str,
    feature_id: str,
    request: Request,
    catalog: CatalogDep,
    principal: PrincipalDep,
) -> Response:
    return await _update(collection_id, feature_id, request, catalog, principal, replace=False)


@_routes.delete(
    "/collections/{collection_id}/items/{feature_id}",
    summary="Delete a feature",
    status_code=204,
)
def delete_item(
    collection_id: str,
    feature_id: str,
    request: Request,
    catalog: CatalogDep,
    principal: PrincipalDep,
) -> Response:
    service, schema = catalog.check_edit(principal, collection_id, EditOperation.DELETE)
    edit = Delete(schema.name, parse_uuid(feature_id), base_version=_if_match(request))
    catalog.feature_service(service).apply_edits([edit])
    return Response(status_code=204)


def features_router() -> APIRouter:
    """The OGC API – Features routes (landing page and conformance are in ``app``)."""
    return _routes


def _page_links(
    request: Request, cid: str, limit: int, offset: int, returned: int, matched: int
) -> list[dict[str, str]]:
    href = f"{base_url(request)}/collections/{cid}/items"
    params = {k: v for k, v in request.query_params.items() if k not in ("limit", "offset")}

    def url(at: int) -> str:
        query = "&".join(
            f"{k}={_quote(v)}"
            for k, v in {**params, "limit": str(limit), "offset": str(at)}.items()
        )
        return f"{href}?{query}"

    links = [{"rel": "self", "type": GEOJSON, "href": url(offset)}]
    if offset + returned < matched and returned > 0:
        links.append({"rel": "next", "type": GEOJSON, "href": url(offset + returned)})
    if offset > 0:
        links.append({"rel": "prev", "type": GEOJSON, "href": url(max(0, offset - limit))})
    return links


def _quote(value: str) -> str:
    from urllib.parse import quote  # noqa: PLC0415 - only needed for paging links

    return quote(value, safe="")
