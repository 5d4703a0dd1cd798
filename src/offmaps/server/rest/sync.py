"""The sync API: replicas, change set uploads, downloads, attachment bytes, the review queue.

Routes (docs/sync.md; all in the OpenAPI document):

- ``GET /api/replicas/{id}``, ``DELETE /api/replicas/{id}`` (unregister).
- ``GET /api/replicas/{id}/updates?since=G`` (what a download would send: rows, bytes, files).
- ``POST /api/replicas/{id}/changes`` (a change set; answers per change, idempotent by id),
  ``GET /api/replicas/{id}/changes?since=G`` (the download stream, NDJSON or GeoJSON texts),
  ``GET /api/replicas/{id}/changes/{change_id}`` (one change's recorded answer).
- ``GET|PUT /api/replicas/{id}/uploads/{sha256}`` (resumable, hash-checked attachment upload),
  ``GET /api/replicas/{id}/blobs/{sha256}`` (attachment bytes, for downloads).
- ``GET /api/conflicts``, ``GET /api/conflicts/{id}``, ``POST /api/conflicts/{id}/resolve``.

The change-set routes speak two forms (docs/sync.md#the-geojson-form): the compact one, and
the GeoJSON one, rows as GeoJSON Features in CRS84. An upload is read in the GeoJSON form when
its ``Content-Type`` is ``application/geo+json``; answers are in the form ``Accept`` prefers
(``application/json`` or ``application/geo+json``), else in the form the body was sent in (the
compact one for reads). A download is a GeoJSON text sequence (RFC 8142) when ``Accept``
prefers ``application/geo+json-seq`` to ``application/x-ndjson``. Negotiated answers say
``Vary: Accept``.

Every route needs a signed-in user with ``offline:sync`` (``features:edit`` includes it),
checked by the write gate before a body is read; a replica is synced by the user who took it
offline (its owner) or an admin (the only ones who may use replicas registered without an
owner); uploads and resolving conflicts need ``features:edit`` too. A ``since`` beyond the
server's generation is a 409 (``GenerationAheadError``), never a silent empty download.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from offmaps.access import Principal, Scope
from offmaps.errors import (
    InvalidChangeSetError,
)
from offmaps.replicas.access import check_can_resolve, replica_for, review_owner
from offmaps.replicas.geojson import (
    GEOJSON_MEDIA_TYPE,
    GEOJSON_SEQ_MEDIA_TYPE,
    GeoJSONChangeResult,
    GeoJSONChanges,
    GeoJSONChangeSet,
    GeoJSONChangeSetResult,
    GeoJSONFeature,
    change_set_error,
    check_crs,
)
from offmaps.schemas.changeset import ChangeResult, ChangeSet, ChangeSetResult
from offmaps.server.auth import GatedRoute, require_scopes
from offmaps.server.downloads import blob_response
from offmaps.server.openapi import request_body
from offmaps.server.rest.deps import PrincipalDep, ServicesDep
from offmaps.services import Services
from offmaps.state.replicas import Replica
from offmaps.state.syncstate import Conflict
from offmaps.sync.collector import collection_paused

__all__ = ["sync_router"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
JSON = "application/json"
NDJSON = "application/x-ndjson"
_VARY = {"Vary": "Accept"}

MAX_GENERATION = 2**63 - 1
"""The largest generation a store can hold (SQLite and PostgreSQL integers are 64-bit)."""

SYNC = require_scopes(Scope.OFFLINE_SYNC, signed_in=True)
"""What every sync route needs: a signed-in user who may take maps offline and sync them."""
EDIT = require_scopes(Scope.OFFLINE_SYNC, Scope.FEATURES_EDIT, signed_in=True)
"""What uploading edits and settling conflicts need besides."""

Generation = Annotated[
    int,
    Query(
        ge=0,
        le=MAX_GENERATION,
        description="The generation the device has (at most the server's current one)",
    ),
]


class ResolveRequest(BaseModel):
    """How to settle a conflict."""

    model_config = ConfigDict(extra="forbid")

    side: Literal["server", "client", "merge"]
    """Keep the server's row, take the device's edit, or merge field by field."""
    values: dict[str, Any] | None = Field(default=None, max_length=500)
    """For ``merge``: values of the conflicting fields (the server's stay for the others)."""
    feature: GeoJSONFeature | None = None
    """For ``merge``, in the GeoJSON form instead of ``values``: a partial Feature (the
    conflicting fields as properties, ``geometry`` when the geometry is among them)."""


def _preferred(request: Request, offers: Sequence[str]) -> str | None:
    """The one of ``offers`` the ``Accept`` header prefers (highest ``q``, then the first
    offered), or ``None`` when it names none of them (no header, only wildcards)."""
    best: tuple[float, int] | None = None
    chosen = None
    for part in request.headers.get("accept", "").split(",")[:64]:
        media, _, parameters = part.partition(";")
        media = media.strip().lower()
        if media not in offers:
            continue
        quality = 1.0
        for parameter in parameters.split(";"):
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if not 0 < quality <= 1:
            continue
        key = (quality, -offers.index(media))
        if best is None or key > best:
            best, chosen = key, media
    return chosen


def _sent_geojson(request: Request) -> bool:
    """Whether the body is in the GeoJSON form (``Content-Type: application/geo+json``); a
    ``Content-Crs`` header (OGC API - Features - Part 2) must then name CRS84."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != GEOJSON_MEDIA_TYPE:
        return False
    content_crs = request.headers.get("content-crs")
    if content_crs is not None:
        check_crs(content_crs, "Content-Crs")
    return True


def _converter(services: Services, service: str) -> GeoJSONChanges:
    return GeoJSONChanges.of_store(services.catalog.feature_service(service))


def _json_response(document: object, media_type: str) -> Response:
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return Response(body, media_type=media_type, headers=_VARY)


def _content(model: type[BaseModel], media_type: str) -> dict[str, Any]:
    """A response's (or body's) ``content`` entry with ``model``'s schema, its definitions for
    the components (moved there by :func:`offmaps.server.openapi.build_openapi`)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    name = schema.get("title", model.__name__)
    definitions[name] = schema
    ref = {"$ref": f"#/components/schemas/{name}", "$defs": definitions}
    return {media_type: {"schema": ref}}


_STREAM = {"type": "string", "description": "One record per line (see the description)"}
_CONFLICT = {"type": "object", "additionalProperties": True}
_CONFLICT_FORMS: dict[int | str, dict[str, Any]] = {
    200: {"content": {GEOJSON_MEDIA_TYPE: {"schema": _CONFLICT}}, "description": "The conflict"}
}


def _sha256(value: str) -> str:
    if not _SHA256.match(value):
        raise InvalidChangeSetError("an attachment is named by its SHA-256: 64 hex digits")
    return value


_routes = APIRouter(
    prefix="/api", tags=["sync"], dependencies=[Depends(SYNC)], route_class=GatedRoute
)


def _replica_for(
    services: Services, replica_id: str, principal: Principal, scope: Scope
) -> Replica:
    return replica_for(services.replicas, replica_id, principal, scope)


@_routes.get("/replicas/{replica_id}", summary="A replica: service, layers, generation")
def replica_info(services: ServicesDep, replica_id: str, principal: PrincipalDep) -> dict[str, Any]:
    replica = _replica_for(services, replica_id, principal, Scope.OFFLINE_SYNC)
    return services.sync.describe(replica).document()


@_routes.delete("/replicas/{replica_id}", summary="Unregister a replica", status_code=204)
def unregister(services: ServicesDep, replica_id: str, principal: PrincipalDep) -> Response:
    replica = _replica_for(services, replica_id, principal, Scope.OFFLINE_SYNC)
    services.replicas.unregister(replica.id)
    return Response(status_code=204)


@_routes.get(
    "/replicas/{replica_id}/updates",
    summary="What a download would send now: rows, bytes, attachment files",
)
def updates(
    services: ServicesDep,
    replica_id: str,
    principal: PrincipalDep,
    since: Generation,
    layers: Annotated[str | None, Query(max_length=4096)] = None,
) -> dict[str, Any]:
    replica = _replica_for(services, replica_id, principal, Scope.OFFLINE_SYNC)
    names = layers.split(",") if layers else None
    found = services.sync.measure_download(replica, since, names)
    return {
        "generation": found.generation,
        "since": since,
        "changes": found.changes,
        "upserts": found.upserts,
        "deletes": found.deletes,
        "bytes": found.bytes,
        "attachments": [{"sha256": k, "size": v} for k, v in sorted(found.attachments.items())],
    }


def _parse_change_set(body: bytes) -> ChangeSet:
    with collection_paused():
        return ChangeSet.model_validate_json(body)


def _parse_geojson_change_set(converter: GeoJSONChanges, body: bytes) -> ChangeSet:
    with collection_paused():
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidChangeSetError(f"not a change set: not JSON: {str(exc)[:120]}") from None
        except RecursionError:
            raise InvalidChangeSetError("not a change set: nested too deeply") from None
        return converter.change_set(document)


_UPLOAD_BODY = request_body(ChangeSet)
_UPLOAD_BODY["requestBody"]["content"].update(_content(GeoJSONChangeSet, GEOJSON_MEDIA_TYPE))
_UPLOAD_BODY["requestBody"]["description"] = (
    "A change set: compact (`application/json`), or in the GeoJSON form "
    "(`application/geo+json`, rows as Features in CRS84)"
)


@_routes.post(
    "/replicas/{replica_id}/changes",
    dependencies=[Depends(EDIT)],
    summary="Upload a change set; every change is answered (idempotent by change id)",
    description="The answer is in the form `Accept` prefers, else in the body's.",
    response_model=ChangeSetResult,
    responses={200: {"content": _content(GeoJSONChangeSetResult, GEOJSON_MEDIA_TYPE)}},
    openapi_extra=_UPLOAD_BODY,
)
async def upload(
    services: ServicesDep, replica_id: str, request: Request, principal: PrincipalDep
) -> Response:
    replica = _replica_for(services, replica_id, principal, Scope.FEATURES_EDIT)
    geojson = _sent_geojson(request)
    body = await request.body()
    converter = None
    if geojson:
        converter = await run_in_threadpool(_converter, services, replica.service)
        change_set = await run_in_threadpool(_parse_geojson_change_set, converter, body)
    else:
        try:
            # off the event loop: a 5,000-change set takes ~0.25 s to parse, which tiles would wait
            change_set = await run_in_threadpool(_parse_change_set, body)
        except ValidationError as exc:
            raise change_set_error(exc) from None
    result = await run_in_threadpool(services.sync.upload, replica, change_set)
    form = _preferred(request, (JSON, GEOJSON_MEDIA_TYPE))
    if form == GEOJSON_MEDIA_TYPE or (form is None and geojson):
        if converter is None:
            converter = await run_in_threadpool(_converter, services, replica.service)
        document = await run_in_threadpool(converter.change_set_result, result)
        return _json_response(document, GEOJSON_MEDIA_TYPE)
    return Response(result.model_dump_json(), media_type=JSON, headers=_VARY)


_DOWNLOAD_DESCRIPTION = """\
NDJSON (`application/x-ndjson`, the default): a header, one record per row changed since
`since` (a `delete` for rows gone), and an end record with the count of rows and the SHA-256 of
every byte before it.

With `Accept: application/geo+json-seq`, a GeoJSON text sequence (RFC 8142: each record after
an RS byte, 0x1E, and before a line feed): the same header, each upsert the row's GeoJSON
Feature (CRS84) with `layer`, `kind`, `version`, `version_vector` and `attachments` beside
`id`, `geometry` and `properties`, each delete `{"type": "change", "kind": "delete", ...}`, and
an end record whose `sha256` hashes every byte of the sequence before it (RS bytes and line
feeds included)."""


@_routes.get(
    "/replicas/{replica_id}/changes",
    summary="Download the server's changes since a generation (NDJSON, or GeoJSON texts)",
    description=_DOWNLOAD_DESCRIPTION,
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The records",
            "content": {NDJSON: {"schema": _STREAM}, GEOJSON_SEQ_MEDIA_TYPE: {"schema": _STREAM}},
        }
    },
)
def download(
    services: ServicesDep,
    replica_id: str,
    request: Request,
    principal: PrincipalDep,
    since: Generation,
    layers: Annotated[str | None, Query(max_length=4096)] = None,
) -> StreamingResponse:
    replica = _replica_for(services, replica_id, principal, Scope.OFFLINE_SYNC)
    names = layers.split(",") if layers else None
    form = _preferred(request, (NDJSON, GEOJSON_SEQ_MEDIA_TYPE)) or NDJSON
    lines = services.sync.download(replica, since, names)
    first = next(lines)  # errors (unknown layers) become problems, not broken streams
    services.replicas.synced(replica.id, since)

    def stream() -> Iterator[bytes]:
        yield first
        yield from lines

    if form == GEOJSON_SEQ_MEDIA_TYPE:
        converter = _converter(services, replica.service)
        texts = converter.download_sequence(itertools.chain([first], lines))
        return StreamingResponse(texts, media_type=GEOJSON_SEQ_MEDIA_TYPE, headers=_VARY)
    return StreamingResponse(stream(), media_type=NDJSON, headers=_VARY)


@_routes.get(
    "/replicas/{replica_id}/changes/{change_id}",
    summary="What became of one uploaded change",
    response_model=ChangeResult,
    responses={200: {"content": _content(GeoJSONChangeResult, GEOJSON_MEDIA_TYPE)}},
)
def change_status(
    services: ServicesDep,
    replica_id: str,
    change_id: uuid.UUID,
    request: Request,
    principal: PrincipalDep,
) -> Response:
    replica = _replica_for(services, replica_id, principal, Scope.OFFLINE_SYNC)
    found = services.sync.change_result(replica, change_id)
    if found is None:
        raise InvalidChangeSetError(f"the server has no change {change_id}")
    if _preferred(request, (JSON, GEOJSON_MEDIA_TYPE)) == GEOJSON_MEDIA_TYPE:
        document = _converter(services, replica.service).change_result(found)
        return _json_response(document, GEOJSON_MEDIA_TYPE)
    return Response(found.model_dump_json(), media_type=JSON, headers=_VARY)


@_routes.get(
    "/replicas/{replica_id}/uploads/{sha256}",
    summary="How much of an attachment the server has",
)
def upload_state(
    services: ServicesDep, replica_id: str, sha256: str, principal: PrincipalDep
) -> dict[str, Any]:
    replica = _replica_for(services, replica_id, principal, Scope.FEATURES_EDIT)
    return asdict(services.uploads.state(replica.id, _sha256(sha256)))


@_routes.put(
    "/replicas/{replica_id}/uploads/{sha256}",
    dependencies=[Depends(EDIT)],
    summary="Upload (part of) an attachment's bytes, from an offset",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_bytes(
    services: ServicesDep,
    replica_id: str,
    sha256: str,
    request: Request,
    principal: PrincipalDep,
    offset: Annotated[int, Query(ge=0)],
    total: Annotated[int, Query(ge=0)],
) -> dict[str, Any]:
    replica = _replica_for(services, replica_id, principal, Scope.FEATURES_EDIT)
    with services.uploads.open_part(
        replica.id, _sha256(sha256), offset=offset, total=total
    ) as part:
        async for chunk in request.stream():
            part.write(chunk)
        return asdict(await run_in_threadpool(part.finish))


@_routes.get(
    "/replicas/{replica_id}/blobs/{sha256}",
    summary="An attachment's bytes, by SHA-256",
    response_class=FileResponse,
)
def blob(services: ServicesDep, replica_id: str, sha256: str, principal: PrincipalDep) -> Response:
    _replica_for(services, replica_id, principal, Scope.OFFLINE_SYNC)
    return blob_response(services.catalog.blobs, _sha256(sha256))


def _conflicts(services: Services, found: Sequence[Conflict], form: str) -> list[dict[str, Any]]:
    """Conflicts as documents, in the compact form or (``form``) the GeoJSON one."""
    if form != GEOJSON_MEDIA_TYPE:
        return [conflict.document() for conflict in found]
    converters: dict[str, GeoJSONChanges] = {}
    documents = []
    for conflict in found:
        if conflict.service not in converters:
            converters[conflict.service] = _converter(services, conflict.service)
        documents.append(converters[conflict.service].conflict(conflict))
    return documents


@_routes.get(
    "/conflicts",
    summary="The review queue",
    tags=["sync"],
    response_model=dict[str, Any],
    responses={
        200: {
            "content": {
                GEOJSON_MEDIA_TYPE: {
                    "schema": {
                        "type": "object",
                        "properties": {"conflicts": {"type": "array", "items": _CONFLICT}},
                    }
                }
            }
        }
    },
)
def conflicts(
    services: ServicesDep,
    request: Request,
    principal: PrincipalDep,
    status: Annotated[Literal["open", "resolved", "all"], Query()] = "open",
    replica: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    owner = review_owner(principal)
    found = services.sync.list_conflicts(
        owner=owner, status=None if status == "all" else status, replica_id=replica,
        limit=limit,
    )  # fmt: skip
    form = _preferred(request, (JSON, GEOJSON_MEDIA_TYPE)) or JSON
    return _json_response({"conflicts": _conflicts(services, found, form)}, form)


@_routes.get(
    "/conflicts/{conflict_id}",
    summary="One conflict: base, device and server",
    response_model=dict[str, Any],
    responses=_CONFLICT_FORMS,
)
def conflict(
    services: ServicesDep, conflict_id: str, request: Request, principal: PrincipalDep
) -> Response:
    found = services.sync.get_conflict(conflict_id, owner=review_owner(principal))
    form = _preferred(request, (JSON, GEOJSON_MEDIA_TYPE)) or JSON
    return _json_response(_conflicts(services, [found], form)[0], form)


@_routes.post(
    "/conflicts/{conflict_id}/resolve",
    summary="Settle a conflict",
    description="A merge's values are `values` (compact) or `feature` (a partial GeoJSON "
    "Feature); the answer is in the form `Accept` prefers, else in the body's.",
    dependencies=[Depends(EDIT)],
    response_model=dict[str, Any],
    responses=_CONFLICT_FORMS,
    openapi_extra={
        "requestBody": {
            "content": {
                GEOJSON_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ResolveRequest"}}
            }
        }
    },
)
def resolve(
    services: ServicesDep,
    conflict_id: str,
    body: ResolveRequest,
    request: Request,
    principal: PrincipalDep,
) -> Response:
    owner = review_owner(principal)
    check_can_resolve(principal, conflict_id)
    values = body.values
    if body.feature is not None:
        if values is not None:
            raise InvalidChangeSetError('give a merge\'s values as "values" or as "feature"')
        found = services.sync.get_conflict(conflict_id, owner=owner, refresh=False)
        feature = body.feature.model_dump(mode="json", exclude_unset=True)
        values = _converter(services, found.service).values(found.layer, feature, partial=True)[1]
    settled = services.sync.resolve_conflict(
        conflict_id, owner=owner, side=body.side, values=values,
        resolved_by=principal.subject,
    )  # fmt: skip
    form = _preferred(request, (JSON, GEOJSON_MEDIA_TYPE))
    form = form or (GEOJSON_MEDIA_TYPE if _sent_geojson(request) else JSON)
    return _json_response(_conflicts(services, [settled], form)[0], form)


def sync_router() -> APIRouter:
    """The sync API over the application's services (sync, replicas, attachment uploads)."""
    return _routes
