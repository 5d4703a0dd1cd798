"""Tiles of an upstream XYZ server, fetched once and kept in a SQLite cache."""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Collection, Iterable
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import httpx
import urllib3
from morecantile import TileMatrixSet

from offmaps import __version__
from offmaps.containers.base import detect_tile_format
from offmaps.errors import (
    ContainerError,
    TileNotFoundError,
    UpstreamError,
)
from offmaps.sources.base import TileSourceInfo, check_key, describe_tile
from offmaps.sources.cache import SQLiteTileCache
from offmaps.tiling.tms import get_tms
from offmaps.types import BBox, Tile, TileCompression, TileFormat

__all__ = ["MAX_UPSTREAM_TILE_BYTES", "USER_AGENT", "UpstreamFetcher", "UpstreamTileSource"]

_log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

MAX_UPSTREAM_TILE_BYTES = 4 * 1024 * 1024
"""Upstream tiles larger than this (after transfer decoding) are refused."""

USER_AGENT = f"offmaps/{__version__}"
"""The User-Agent of every upstream request."""


_MVT_LAYER_TAG = 0x1A  # protobuf field 3 (layers), wire type 2: how every non-empty MVT starts


def _check_url_template(template: str) -> str:
    parts = urlsplit(template)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ContainerError(f"upstream URL {template[:200]!r} is not an http or https URL")
    missing = [key for key in ("{z}", "{x}", "{y}") if key not in template]
    if missing:
        raise ContainerError(
            f"upstream URL {template[:200]!r} lacks {', '.join(missing)}: "
            "a template such as https://tile.example.org/{z}/{x}/{y}.png is needed"
        )
    return parts.hostname


_POOL_SIZE = 64
"""Keep-alive connections kept per upstream host (a cache's ``concurrency`` is at most 64)."""
_READ_BYTES = 64 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_REDIRECTS_ONLY = urllib3.Retry(total=5, connect=0, read=0, status=0, other=0, redirect=5)
"""No retries (a seed has its own, with backoff), but up to five redirects."""


def _check_status(status: int, declared: str, limit: int, where: str, url: str) -> None:
    if status in (204, 404, 410):
        raise TileNotFoundError(f"{where}: the upstream has no such tile")
    if not 200 <= status < 300:
        raise UpstreamError(f"{where}: the upstream answered HTTP {status}", url=url)
    if declared.isdigit() and int(declared) > limit:
        raise UpstreamError(f"{where}: upstream tile is over {limit} bytes", url=url)


def _read_limited(chunks: Iterable[bytes], limit: int, where: str, url: str) -> bytes:
    """The body, refused once it grows over ``limit`` bytes (whatever it declared)."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise UpstreamError(f"{where}: upstream tile is over {limit} bytes", url=url)
        parts.append(chunk)
    return b"".join(parts)


def _gunzip(data: bytes, limit: int, where: str) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise UpstreamError(f"{where}: upstream sent broken gzip ({exc})") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise UpstreamError(f"{where}: upstream tile is over {limit} bytes once decompressed")
    return out


class UpstreamFetcher:
    """Fetches tiles of one upstream XYZ URL template over HTTP, with every check a cache needs.

    By default it speaks HTTP with urllib3: a keep-alive connection pool to the template's host
    (redirects, to any host, followed through a pool manager), or the environment's proxy
    (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``) as httpx would take it. A cache's seed
    spends most of its CPU in the HTTP client, and urllib3's pool costs about half of httpx's
    per request (docs/cache.md). Tests (and callers with a client of their own) may pass an
    httpx client instead; both paths make the same checks and raise the same errors.

    Args:
        url_template: an http(s) URL with ``{z}``, ``{x}`` and ``{y}`` (rows from the top).
        tile_format: what the upstream serves; anything else is refused.
        also: other formats the upstream may serve as well (a mixed cache's upstream: JPEG
            beside PNG), each tile checked by its own magic bytes.
        client: an httpx client to use (tests pass one with a mock transport), not closed here;
            by default a urllib3 pool owned and closed by this fetcher.
        timeout_s: the timeout of one request (of the pool made here).
        max_bytes: the largest tile accepted (after transfer decoding).

    Raises:
        ContainerError: when the URL template is unusable.
    """

    def __init__(
        self,
        url_template: str,
        tile_format: TileFormat,
        *,
        also: Collection[TileFormat] = (),
        client: httpx.Client | None = None,
        timeout_s: float = 10.0,
        max_bytes: int = MAX_UPSTREAM_TILE_BYTES,
    ) -> None:
        self._host = _check_url_template(url_template)
        self._template = url_template
        self._format = tile_format
        self._formats = (tile_format, *(f for f in also if f is not tile_format))
        self._max_bytes = max_bytes
        self._client = client
        timeout = urllib3.Timeout(connect=min(5.0, timeout_s), read=timeout_s)
        # compressed answers accepted (and undone) as httpx asks for them: vector tiles shrink
        self._headers = headers = {
            "User-Agent": USER_AGENT,
            **urllib3.util.make_headers(accept_encoding=True),
        }
        parts = urlsplit(url_template)
        # the proxy of the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), as httpx takes it
        proxy = None if proxy_bypass(parts.hostname or "") else getproxies().get(parts.scheme)
        self._manager: urllib3.PoolManager
        if proxy:
            self._manager = urllib3.ProxyManager(
                proxy, headers=headers, maxsize=_POOL_SIZE, timeout=timeout, retries=_REDIRECTS_ONLY
            )
        else:
            self._manager = urllib3.PoolManager(
                headers=headers, maxsize=_POOL_SIZE, timeout=timeout, retries=_REDIRECTS_ONLY
            )
        # without a proxy: one pool for the template's host, redirects (rare) through the manager
        self._pool = None if proxy else self._manager.connection_from_url(url_template)
        self._origin_chars = len(parts.scheme) + len("://") + len(parts.netloc)

    @property
    def host(self) -> str:
        """The upstream's host name."""
        return self._host

    def fetch(self, tile: Tile, what: str | None = None) -> bytes:
        """The upstream's bytes for ``tile``, checked to be a tile of the declared format.

        Args:
            tile: the key (rows from the top).
            what: how errors name the tile (``tile z/x/y`` by default).

        Raises:
            TileNotFoundError: the upstream has no such tile (204, 404, 410).
            UpstreamError: any other failure (5xx, timeout, no connection, oversized or wrong
                content).
        """
        what = what or f"tile {tile.z}/{tile.x}/{tile.y}"
        where = f"{what} from {self._host}"
        url = (
            self._template.replace("{z}", str(tile.z))
            .replace("{x}", str(tile.x))
            .replace("{y}", str(tile.y))
        )
        if self._client is not None:
            data = self._fetch_httpx(self._client, url, where)
        else:
            data = self._fetch_urllib3(url, where)
        return self._check_content(data, where, url)

    def _fetch_urllib3(self, url: str, where: str) -> bytes:
        try:
            if self._pool is None:  # through a proxy
                response = self._manager.request("GET", url, preload_content=False)
            else:
                target = url[self._origin_chars :] or "/"  # the pool's host is the template's
                response = self._pool.urlopen(
                    "GET",
                    target,
                    headers=self._headers,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                )
            if response.status in _REDIRECT_STATUSES and response.get_redirect_location():
                response.drain_conn()  # the connection goes back to the pool ready for more
                response = self._manager.request("GET", url, preload_content=False)
            try:
                declared = response.headers.get("content-length", "")
                _check_status(response.status, declared, self._max_bytes, where, url)
                return _read_limited(response.stream(_READ_BYTES), self._max_bytes, where, url)
            finally:
                response.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
            # a refused connection is a NewConnectionError, which urllib3 derives from its
            # connect timeout for history's sake: it did not time out
            if isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
                reason, urllib3.exceptions.NewConnectionError
            ):
                raise UpstreamError(f"{where}: the upstream timed out", url=url) from exc
            raise UpstreamError(
                f"{where}: the upstream request failed ({type(reason).__name__})", url=url
            ) from exc

    def _fetch_httpx(self, client: httpx.Client, url: str, where: str) -> bytes:
        try:
            with client.stream(
                "GET", url, headers={"User-Agent": USER_AGENT}, follow_redirects=True
            ) as response:
                declared = response.headers.get("content-length", "")
                _check_status(response.status_code, declared, self._max_bytes, where, url)
                return _read_limited(response.iter_bytes(), self._max_bytes, where, url)
        except httpx.TimeoutException as exc:
            raise UpstreamError(f"{where}: the upstream timed out", url=url) from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"{where}: the upstream request failed ({type(exc).__name__})", url=url
            ) from exc

    def _check_content(self, data: bytes, where: str, url: str) -> bytes:
        expected = self._format
        if not data:
            if expected is TileFormat.MVT:
                return data  # an empty vector tile is a valid, empty tile
            raise UpstreamError(f"{where}: the upstream sent an empty body", url=url)
        found, compression = detect_tile_format(data)
        if found not in self._formats:
            wanted = " or ".join(f.value for f in self._formats)
            raise UpstreamError(
                f"{where}: the upstream sent {found.value} content, not {wanted}", url=url
            )
        if expected is TileFormat.MVT:
            if compression is TileCompression.GZIP:
                data = _gunzip(data, self._max_bytes, where)
            if data and data[0] != _MVT_LAYER_TAG:
                raise UpstreamError(f"{where}: the upstream sent no Mapbox vector tile", url=url)
        return data

    def close(self) -> None:
        """Close the connections this fetcher made (a client passed in stays open)."""
        self._manager.clear()


class UpstreamTileSource:
    """Tiles of an upstream XYZ server, fetched once and served from a SQLite cache afterwards.

    The cache is ``cache_dir/<name>.cache.sqlite``. Only well-formed tiles of the declared format
    are cached; an upstream 404 is :class:`TileNotFoundError`, every other failure (5xx, timeout,
    no connection, oversized or wrong content) is :class:`UpstreamError`.

    Args:
        name: the name in URLs and of the cache file: letters, digits, ``_`` and ``-``.
        url_template: an http(s) URL with ``{z}``, ``{x}`` and ``{y}`` (rows from the top).
        cache_dir: the folder of the cache file.
        tms: id of the upstream's tile matrix set.
        tile_format: what the upstream serves; anything else is refused.
        min_zoom: lowest level served.
        max_zoom: highest level served.
        client: the HTTP client to use (tests pass one with a mock transport); by default one
            with timeouts, owned and closed by this source.
        title: a human title; the name by default.
        bounds: WGS84 bounds of the data, if known.
        attribution: attribution the upstream asks for.
        export_tiles_allowed: whether offline packages may copy these tiles (off by default:
            most public tile servers forbid bulk downloads).
        max_export_tile_count: the most tiles one export may take.

    Raises:
        ContainerError: when the name or URL template is unusable.
        ContainerCorruptError: when the cache file exists and is not a tile cache.
        UnknownTileMatrixSetError: when ``tms`` is not a registered tile matrix set.
    """

    def __init__(
        self,
        name: str,
        url_template: str,
        cache_dir: Path | str,
        *,
        tms: str = "WebMercatorQuad",
        tile_format: TileFormat,
        min_zoom: int,
        max_zoom: int,
        client: httpx.Client | None = None,
        title: str | None = None,
        bounds: BBox | None = None,
        attribution: str = "",
        export_tiles_allowed: bool = False,
        max_export_tile_count: int = 10_000,
    ) -> None:
        if not _NAME.match(name):
            raise ContainerError(
                f"an upstream tile layer name is letters, digits, _ or -: not {name[:64]!r}"
            )
        self.tms: TileMatrixSet = get_tms(tms)
        self._info = TileSourceInfo(
            name=name,
            title=title or name,
            tms_id=tms,
            tile_format=tile_format,
            min_zoom=min_zoom,
            max_zoom=max_zoom,
            bounds=bounds,
            attribution=attribution,
            export_tiles_allowed=export_tiles_allowed,
            max_export_tile_count=max_export_tile_count,
        )
        self._fetcher = UpstreamFetcher(url_template, tile_format, client=client)
        self._cache = SQLiteTileCache(
            Path(cache_dir) / f"{name}.cache.sqlite", source=f"{tms} {url_template}"
        )

    @property
    def info(self) -> TileSourceInfo:
        """What the upstream service is declared to be."""
        return self._info

    @property
    def cached_tile_count(self) -> int:
        """How many tiles the cache holds."""
        return self._cache.count()

    def get_tile(self, tile: Tile) -> bytes:
        """The bytes of ``tile``: from the cache, else fetched upstream and cached.

        Raises:
            InvalidTileError: when the key is outside the tile matrix set.
            TileNotFoundError: outside the zoom range, or when the upstream has no such tile.
            UpstreamError: when the upstream fails or sends something that is not a tile.
        """
        check_key(self.tms, self._info, tile)
        data = self._cache.find(tile)
        if data is None:
            data = self._fetcher.fetch(tile, describe_tile(self._info, tile))
            self._cache.put(tile, data)
        return data

    def close(self) -> None:
        """Close the cache, and the HTTP client when this source made it."""
        self._cache.close()
        self._fetcher.close()
