"""The sync API: replicas, change set uploads, downloads, attachment bytes, the review queue.

Routes (docs/sync.md; all in the OpenAPI document):

- ``GET /api/replicas/{id}``, ``DELETE /api/replicas/{id}`` (unregister).
- ``GET /api/replicas/{id}/updates?since=G`` (what a download would send: rows, bytes, files).
- ``POST /api/replicas/{id}/changes`` (a change set; answers per change, idempotent by id),
  ``GET /api/replicas/{id}/changes?since=G`` (the download stream, NDJSON),
  ``GET /api/replicas/{id}/changes/{change_id}`` (one change's recorded answer).
- ``GET|PUT /api/replicas/{id}/uploads/{sha256}`` (resumable, hash-checked attachment upload),
  ``GET /api/replicas/{id}/blobs/{sha256}`` (attachment bytes, for downloads).
- ``GET /api/conflicts``, ``GET /api/conflicts/{id}``, ``POST /api/conflicts/{id}/resolve``.

Every route needs a signed-in user with ``offline:sync`` (``features:edit`` includes it),
checked by the write gate before a body is read; a replica is synced by the user who took it
offline (its owner) or an admin (the only ones who may use replicas registered without an
owner); uploads and resolving conflicts need ``features:edit`` too. A ``since`` beyond the
server's generation is a 409 (``GenerationAheadError``), never a silent empty download.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
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
from offmaps.schemas.changeset import ChangeResult, ChangeSet, ChangeSetResult
from offmaps.server.auth import GatedRoute, require_scopes
from offmaps.server.downloads import blob_response
from offmaps.server.openapi import request_body
from offmaps.server.rest.deps import PrincipalDep, ServicesDep
from offmaps.services import Services
from offmaps.state.replicas import Replica
from offmaps.sync.collector import collection_paused

__all__ = ["sync_router"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

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


@_routes.post(
    "/replicas/{replica_id}/changes",
    dependencies=[Depends(EDIT)],
    summary="Upload a change set; every change is answered (idempotent by change id)",
    response_model=ChangeSetResult,
    openapi_extra=request_body(ChangeSet),
)
async def upload(
    services: ServicesDep, replica_id: str, request: Request, principal: PrincipalDep
) -> Response:
    replica = _replica_for(services, replica_id, principal, Scope.FEATURES_EDIT)
    body = await request.body()
    try:
        # off the event loop: a 5,000-change set takes ~0.25 s to parse, which tiles would wait
        change_set = await run_in_threadpool(_parse_change_set, body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidChangeSetError(f"not a change set: {where}: {first['msg']}"[:300]) from None
    result = await run_in_threadpool(services.sync.upload, replica, change_set)
    return Response(result.model_dump_json(), media_type="application/json")


@_routes.get(
    "/replicas/{replica_id}/changes",
    summary="Download the server's changes since a generation (NDJSON)",
    response_class=StreamingResponse,
)
def download(
    services: ServicesDep,
    replica_id: str,
    principal: PrincipalDep,
    since: Generation,
    layers: Annotated[str | None, Query(max_length=4096)] = None,
) -> StreamingResponse:
    replica = _replica_for(services, replica_id, principal, Scope.OFFLINE_SYNC)
    names = layers.split(",") if layers else None
    lines = services.sync.download(replica, since, names)
    first = next(lines)  # errors (unknown layers) become problems, not broken streams
    services.replicas.synced(replica.id, since)

    def stream() -> Iterator[bytes]:
        yield first
        yield from lines

    return StreamingResponse(stream(), media_type="application/x-ndjson")


@_routes.get(
    "/replicas/{replica_id}/changes/{change_id}",
    summary="What became of one uploaded change",
    response_model=ChangeResult,
)
def change_status(
    services: ServicesDep, replica_id: str, change_id: uuid.UUID, principal: PrincipalDep
) -> Response:
    replica = _replica_for(services, replica_id, principal, Scope.OFFLINE_SYNC)
    found = services.sync.change_result(replica, change_id)
    if found is None:
        raise InvalidChangeSetError(f"the server has no change {change_id}")
    return Response(found.model_dump_json(), media_type="application/json")


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


@_routes.get("/conflicts", summary="The review queue", tags=["sync"])
def conflicts(
    services: ServicesDep,
    principal: PrincipalDep,
    status: Annotated[Literal["open", "resolved", "all"], Query()] = "open",
    replica: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    owner = review_owner(principal)
    found = services.sync.list_conflicts(
        owner=owner, status=None if status == "all" else status, replica_id=replica,
        limit=limit,
    )  # fmt: skip
    return {"conflicts": [conflict.document() for conflict in found]}


@_routes.get("/conflicts/{conflict_id}", summary="One conflict: base, device and server")
def conflict(services: ServicesDep, conflict_id: str, principal: PrincipalDep) -> dict[str, Any]:
    found = services.sync.get_conflict(conflict_id, owner=review_owner(principal))
    return found.document()


@_routes.post(
    "/conflicts/{conflict_id}/resolve", summary="Settle a conflict", dependencies=[Depends(EDIT)]
)
def resolve(
    services: ServicesDep, conflict_id: str, body: ResolveRequest, principal: PrincipalDep
) -> dict[str, Any]:
    owner = review_owner(principal)
    check_can_resolve(principal, conflict_id)
    found = services.sync.resolve_conflict(
        conflict_id, owner=owner, side=body.side, values=body.values,
        resolved_by=principal.subject,
    )  # fmt: skip
    return found.document()


def sync_router() -> APIRouter:
    """The sync API over the application's services (sync, replicas, attachment uploads)."""
    return _routes
