"""Stored bytes as HTTP downloads: objects of an object store, whole (200) or one byte range
(206, 416), and blobs of a blob store, whole.

Whatever the store (a local folder, memory, S3 later), the bytes are streamed in chunks from
the store, never loaded whole, and the answer carries ``Accept-Ranges``, ``Content-Length``, a
strong ``ETag`` and ``Last-Modified``, so that clients can resume with ``Range`` (and
``If-Range``): see :mod:`offmaps.server.ranges` for what a ``Range`` header gets.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator, Mapping
from datetime import timedelta
from email.utils import format_datetime
from typing import BinaryIO
from urllib.parse import quote

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from offmaps.server.links import absolute_url
from offmaps.server.problems import problem_response
from offmaps.server.ranges import ByteRange, Unsatisfiable, if_range_allows, parse_range
from offmaps.storage import BlobStore, ObjectStore

__all__ = ["CHUNK_BYTES", "blob_response", "object_response"]

CHUNK_BYTES = 1024 * 1024
"""Bytes read from the store and sent at a time."""


def object_response(
    store: ObjectStore,
    key: str,
    request: Request,
    *,
    filename: str | None = None,
    redirect_s: int = 0,
) -> Response:
    """The object ``key`` of ``store`` as the answer to ``request``: the whole of it, or the one
    range its ``Range`` header asks for; with ``redirect_s``, a ``307`` to a URL of the store
    presigned for that long instead (the client's ``Range`` goes there with it).

    Args:
        store: the store holding the object.
        key: the object's key.
        request: the request, for its ``Range`` and ``If-Range`` headers.
        filename: the name to save it as (``Content-Disposition``), which also gives its media
            type; by default the key's.
        redirect_s: seconds a presigned URL handed out instead of the bytes stays valid; 0
            streams the bytes.

    Raises:
        ObjectNotFoundError: there is no such object.
    """
    info = store.head(key)
    if redirect_s > 0:
        presigned = store.presign_get(key, timedelta(seconds=redirect_s))
        if not presigned.headers:  # a plain GET of the URL gets the bytes
            location = absolute_url(request, presigned.url)
            return Response(
                status_code=307, headers={"Location": location, "Cache-Control": "no-store"}
            )
    etag = '"{}"'.format(info.etag.replace('"', ""))
    last_modified = format_datetime(info.modified, usegmt=True)
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Last-Modified": last_modified}
    wanted = None
    if if_range_allows(request.headers.get("if-range"), etag=etag, last_modified=last_modified):
        wanted = parse_range(request.headers.get("range"), info.size)
    if isinstance(wanted, Unsatisfiable):
        detail = f"the range asked for is outside the {info.size:,} bytes of the file"
        return problem_response(
            416, detail, headers={**headers, "Content-Range": wanted.content_range()}
        )
    name = filename or key.rsplit("/", 1)[-1]
    headers["Content-Disposition"] = _content_disposition(name)
    span = wanted if wanted is not None else ByteRange(0, info.size - 1)
    headers["Content-Length"] = str(max(span.length, 0))
    status = 200
    if wanted is not None:
        status = 206
        headers["Content-Range"] = wanted.content_range(info.size)
    stream = store.open(key)
    return StreamingResponse(
        _chunks(store, key, stream, span.start, span.length),
        status_code=status,
        headers=headers,
        media_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
        background=BackgroundTask(stream.close),  # also when the client goes away midway
    )


def blob_response(
    blobs: BlobStore,
    sha256: str,
    *,
    media_type: str = "application/octet-stream",
    headers: Mapping[str, str] | None = None,
) -> StreamingResponse:
    """Blob ``sha256`` of ``blobs``, streamed whole, with its length and its SHA-256 as strong
    ``ETag``; ``headers`` are added.

    Raises:
        BlobNotFoundError: there is no such blob.
    """
    size = blobs.size(sha256)
    stream = blobs.open(sha256)
    return StreamingResponse(
        _whole(stream),
        media_type=media_type,
        headers={"Content-Length": str(size), "ETag": f'"{sha256}"', **(headers or {})},
        background=BackgroundTask(stream.close),  # also when the client goes away midway
    )


def _whole(stream: BinaryIO) -> Iterator[bytes]:
    with stream:
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk


def _chunks(
    store: ObjectStore, key: str, stream: BinaryIO, start: int, length: int
) -> Iterator[bytes]:
    """``length`` bytes of the object from ``start``, in chunks."""
    with stream:
        if start and not stream.seekable():
            # a store whose files cannot seek: ranged reads instead
            for offset in range(start, start + length, CHUNK_BYTES):
                yield store.get_range(key, offset, min(CHUNK_BYTES, start + length - offset))
            return
        if start:
            stream.seek(start)
        left = length
        while left > 0:
            chunk = stream.read(min(CHUNK_BYTES, left))
            if not chunk:
                return  # the object shrank since its size was read
            left -= len(chunk)
            yield chunk


def _content_disposition(filename: str) -> str:
    quoted = quote(filename)
    if quoted != filename:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{filename}"'
