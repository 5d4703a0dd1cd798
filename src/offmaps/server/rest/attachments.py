"""Attachments of features: ``/collections/{collection_id}/items/{feature_id}/attachments``.

List, add (multipart upload, streamed into the blob store), download (streamed) and delete the
files attached to a row; reading follows the collection's access, writing needs an edit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from offmaps.catalog import EditOperation
from offmaps.errors import FeatureNotFoundError
from offmaps.features.store import FeatureStore
from offmaps.server.auth import GatedRoute
from offmaps.server.downloads import blob_response
from offmaps.server.links import base_url
from offmaps.server.rest.deps import EDIT_FEATURES, CatalogDep, PrincipalDep, parse_uuid

__all__ = ["attachments_router"]

_ATTACHMENT_CHUNK = 256 * 1024


_routes = APIRouter(tags=["features"], dependencies=[EDIT_FEATURES], route_class=GatedRoute)


_PREFIX = "/collections/{collection_id}/items/{feature_id}/attachments"


@_routes.get(_PREFIX, summary="Attachments of a feature")
def attachments(
    collection_id: str,
    feature_id: str,
    request: Request,
    catalog: CatalogDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    service, schema = catalog.check_read(principal, collection_id)
    listed = catalog.feature_service(service).list_attachments(schema.name, parse_uuid(feature_id))
    base = f"{base_url(request)}/collections/{collection_id}/items/{feature_id}/attachments"
    return {
        "attachments": [
            {
                "id": str(a.attachment_id),
                "name": a.name,
                "contentType": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
                "created": a.created_at.isoformat().replace("+00:00", "Z"),
                "href": f"{base}/{a.attachment_id}",
            }
            for a in listed
        ]
    }


@_routes.post(_PREFIX, summary="Attach a file to a feature", status_code=201)
async def add_attachment(
    collection_id: str,
    feature_id: str,
    file: UploadFile,
    request: Request,
    catalog: CatalogDep,
    principal: PrincipalDep,
) -> JSONResponse:
    service, schema = catalog.check_edit(principal, collection_id, EditOperation.UPDATE)
    store = catalog.feature_service(service)
    global_id = parse_uuid(feature_id)
    await run_in_threadpool(store.get_feature, schema.name, global_id)
    name = _attachment_name(file.filename)
    content_type = (file.content_type or "application/octet-stream")[:127]

    def chunks() -> Iterator[bytes]:
        while chunk := file.file.read(_ATTACHMENT_CHUNK):
            yield chunk

    ref = await run_in_threadpool(
        catalog.blobs.put_stream, chunks(), max_size=catalog.max_attachment_bytes
    )
    attachment = await run_in_threadpool(
        lambda: store.add_attachment(
            schema.name,
            global_id,
            name=name,
            content_type=content_type,
            size=ref.size,
            sha256=ref.sha256,
        )
    )
    href = f"{base_url(request)}{request.url.path}/{attachment.attachment_id}"
    return JSONResponse(
        {"id": str(attachment.attachment_id), "sha256": ref.sha256, "size": ref.size},
        status_code=201,
        headers={"Location": href},
    )


@_routes.get(_PREFIX + "/{attachment_id}", summary="The bytes of one attachment")
def attachment(
    collection_id: str,
    feature_id: str,
    attachment_id: str,
    catalog: CatalogDep,
    principal: PrincipalDep,
) -> StreamingResponse:
    service, schema = catalog.check_read(principal, collection_id)
    store = catalog.feature_service(service)
    found = store.get_attachment(schema.name, parse_uuid(attachment_id, "attachment"))
    if str(found.global_id) != str(parse_uuid(feature_id)):
        raise FeatureNotFoundError("this attachment belongs to another feature")
    disposition = f"inline; filename*=UTF-8''{quote(found.name)}"
    return blob_response(
        catalog.blobs,
        found.sha256,
        media_type=found.content_type,
        headers={"Content-Disposition": disposition},
    )


@_routes.delete(_PREFIX + "/{attachment_id}", summary="Remove an attachment", status_code=204)
def delete_attachment(
    collection_id: str,
    feature_id: str,
    attachment_id: str,
    catalog: CatalogDep,
    principal: PrincipalDep,
) -> Response:
    service, schema = catalog.check_edit(principal, collection_id, EditOperation.UPDATE)
    store: FeatureStore = catalog.feature_service(service)
    found = store.get_attachment(schema.name, parse_uuid(attachment_id, "attachment"))
    if str(found.global_id) != str(parse_uuid(feature_id)):
        raise FeatureNotFoundError("this attachment belongs to another feature")
    store.delete_attachment(schema.name, found.attachment_id)
    return Response(status_code=204)


def attachments_router() -> APIRouter:
    """The attachment routes of feature collections."""
    return _routes


def _attachment_name(filename: str | None) -> str:
    name = (filename or "attachment").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())[:255]
    return name or "attachment"
