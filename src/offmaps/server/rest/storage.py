"""Presigned URLs of the local stores (``/storage/{key}``): what S3 does for its own URLs.

An S3-compatible store checks its presigned URLs itself. The data folder's stores sign theirs
with an HMAC token (:class:`~offmaps.storage.URLSigner`) naming the method, the key and the
expiry, and this route checks it before anything else, the body included:

- ``GET /storage/tile-blobs/{sha256}?token=...``: a tile cache's blob (presigned download);
- ``PUT /storage/tile-blobs/{sha256}?token=...``: upload a tile's bytes for an upload grant;
  stored only when they hash to the SHA-256 the URL names (``422`` otherwise);
- ``GET``/``PUT /storage/{key}?token=...``: an object of the object store (jobs' files).

The token is the credential: no bearer token is asked for, and a tampered, foreign, wrong-method
or expired URL is refused with ``403`` before the body is read.
"""

from __future__ import annotations

import hashlib
from http import HTTPMethod

from fastapi import APIRouter, Request, Response

from offmaps.containers.base import detect_tile_format
from offmaps.errors import (
    BlobIntegrityError,
    ObjectNotFoundError,
    UnsupportedTileFormatError,
)
from offmaps.server.downloads import object_response
from offmaps.server.rest.deps import ServicesDep
from offmaps.services import TILE_BLOBS
from offmaps.storage import BlobStore, LocalObjectStore, SignedBlobURLs

__all__ = ["get_stored", "put_stored", "storage_router"]


def _verified(request: Request, services: ServicesDep, method: HTTPMethod) -> str:
    """The key the request's presigned URL allows ``method`` on."""
    objects = services.objects
    if not isinstance(objects, LocalObjectStore):
        raise ObjectNotFoundError("this server's stores hand out their own URLs", key="")
    return objects.verify_presigned(str(request.url), method)


def _tile_blobs(services: ServicesDep, key: str) -> tuple[BlobStore, str] | None:
    prefix = f"{TILE_BLOBS}/"
    blobs = services.caches.blobs
    if not key.startswith(prefix):
        return None
    if not isinstance(blobs, SignedBlobURLs):
        raise ObjectNotFoundError(f"no object {key!r}", key=key)
    return blobs, key.removeprefix(prefix)


def get_stored(key: str, request: Request, services: ServicesDep) -> Response:
    """The bytes a presigned GET URL allows."""
    allowed = _verified(request, services, HTTPMethod.GET)
    blob = _tile_blobs(services, allowed)
    if blob is None:
        return object_response(services.objects, allowed, request)
    store, sha256 = blob
    data = store.get(sha256)
    try:
        media_type = detect_tile_format(data)[0].media_type
    except UnsupportedTileFormatError:
        media_type = "application/octet-stream"
    return Response(data, media_type=media_type, headers={"ETag": f'"{sha256}"'})


async def put_stored(key: str, request: Request, services: ServicesDep) -> Response:
    """Store the body where a presigned PUT URL allows; a tile blob only if its bytes hash to
    the URL's SHA-256."""
    allowed = _verified(request, services, HTTPMethod.PUT)  # before the body is read
    blob = _tile_blobs(services, allowed)
    body = await request.body()
    if blob is None:
        services.objects.put(allowed, body)
        return Response(status_code=201)
    store, sha256 = blob
    if hashlib.sha256(body).hexdigest() != sha256:
        raise BlobIntegrityError(f"the uploaded bytes do not hash to {sha256}")
    store.put(body)
    return Response(status_code=201)


def storage_router() -> APIRouter:
    """The route of the local stores' presigned URLs."""
    router = APIRouter(tags=["storage"])
    responses: dict[int | str, dict[str, str]] = {
        403: {
            "description": "The URL is malformed, tampered with, foreign, expired or for "
            "another method"
        },
    }
    router.add_api_route(
        "/storage/{key:path}",
        get_stored,
        methods=["GET"],
        summary="Bytes through a presigned URL",
        response_class=Response,
        responses=responses,
    )
    router.add_api_route(
        "/storage/{key:path}",
        put_stored,
        methods=["PUT"],
        summary="Upload through a presigned URL",
        status_code=201,
        response_class=Response,
        responses=responses,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    return router
