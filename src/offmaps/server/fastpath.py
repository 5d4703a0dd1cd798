"""A plain-ASGI fast path for XYZ tiles of local archives and tile caches, in front of FastAPI's
routing.

``GET /tiles/{name}/{z}/{x}/{y}[.ext]`` for an :class:`ArchiveTileSource` is the hot path
of a tile server: a lookup in a local SQLite or PMTiles archive, measured in microseconds. Going
through FastAPI's router, its parameter handling and the thread pool a sync endpoint runs in costs
several times that (bench/serve_tiles.py). This middleware answers those requests itself, with
the same bytes and headers as the route, and hands *everything else* to the application
unchanged: other paths, other methods, other kinds of tile source (upstream XYZ fetches and
vector tiles built on demand may take long and belong in the thread pool), and every request that
would end in an error, so that errors keep coming from one place as problem documents.

The archive read runs on the event loop: it is a local, indexed lookup of one row or one byte
range, like the reads a static file server makes. A :class:`TileCache` answers here only what
it holds (:meth:`TileCache.find_tile`: an index lookup and a blob read, which may be a request
to S3, so in the thread pool); a tile it lacks, which would be fetched from upstream, and any
request with a query (``?redirect=presigned``) go to the route. FastAPI's routing was about a
quarter of the server's busy time on a cache hit read from S3 (a py-spy profile under
bench/cache_serve.py's load).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Mapping

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from offmaps.cache import TileCache
from offmaps.errors import OffmapsError
from offmaps.server.rest.tiles import CACHE_CONTROL, etag_matches, etag_of, extensions_of
from offmaps.sources import ArchiveTileSource, TileSource
from offmaps.types import Tile, TileCompression

__all__ = ["TileFastPath"]

_PATH = re.compile(
    r"^/tiles/([A-Za-z0-9][A-Za-z0-9_-]{0,63})/([0-9]{1,2})/([0-9]{1,9})/([0-9]{1,9})(?:\.([A-Za-z0-9]{1,8}))?$"
)


class TileFastPath:
    """Serve archive tiles before routing; pass every other request to ``app``.

    Only tile layers anyone may read are answered here, and only to requests without an
    ``Authorization`` header: access checks and token errors stay with the route.

    Args:
        app: the application behind.
        sources: the server's tile sources by name (read at each request: sources may be added).
        public: the names of the tile layers anyone may read, asked at each request.
    """

    def __init__(
        self,
        app: ASGIApp,
        sources: Mapping[str, TileSource],
        public: Callable[[], Container[str]],
    ) -> None:
        self.app = app
        self.sources = sources
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            answer = await self._tile(scope)
            if answer is not None:
                await _send(send, *answer)
                return
        await self.app(scope, receive, send)

    async def _tile(self, scope: Scope) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
        match = _PATH.match(scope["path"])
        if match is None:
            return None
        name, z, x, y, extension = match.groups()
        source = self.sources.get(name)
        if not isinstance(source, ArchiveTileSource | TileCache) or name not in self.public():
            return None
        if _header(scope, b"authorization") is not None:
            return None
        info = source.info
        if extension is not None and extension.lower() not in extensions_of(source):
            return None
        tile = Tile(int(x), int(y), int(z))
        try:
            if isinstance(source, ArchiveTileSource):
                data = source.get_tile(tile)
            elif scope.get("query_string"):  # ?redirect=presigned: the route's
                return None
            else:
                found = await run_in_threadpool(source.find_tile, tile)
                if found is None:  # the route fetches it from upstream
                    return None
                data = found
        except OffmapsError:
            return None  # the route says why, as a problem document
        etag = etag_of(data)
        headers = [(b"etag", etag.encode()), (b"cache-control", CACHE_CONTROL.encode())]
        if_none_match = _header(scope, b"if-none-match")
        if if_none_match is not None and etag_matches(if_none_match.decode("latin-1"), etag):
            return 304, b"", headers
        if info.tile_compression is TileCompression.GZIP:
            headers.append((b"content-encoding", b"gzip"))
        media_type = (
            source.media_type(data)
            if isinstance(source, TileCache)
            else info.tile_format.media_type
        )
        headers.append((b"content-type", media_type.encode()))
        return 200, data, headers


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _send(send: Send, status: int, data: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    if status == 200:
        headers.append((b"content-length", str(len(data)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send(
        {
            "type": "http.response.body",
            "body": data,
        }
    )
