"""Tile services of the map server, and their HTTP routes: XYZ, TileJSON 3.0, OGC API – Tiles.

A :class:`TileSource` answers ``get_tile(Tile)`` and describes itself with a
:class:`TileSourceInfo`. Three kinds ship: tile archives (:class:`ArchiveTileSource`), an upstream
XYZ server behind a SQLite cache (:class:`UpstreamTileSource`), and a function, for vector tiles
built on the fly (:class:`FunctionTileSource`). :func:`tiles_router` serves any mapping of them.

Tile keys from the wire are parsed here, never by FastAPI's validation: a hostile key (not a
number, negative, huge, outside the matrix) is a domain error and so a 400 or 404 problem document.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

import httpx
import morecantile
from fastapi import APIRouter, Request, Response, params
from fastapi.responses import JSONResponse
from morecantile import TileMatrixSet

from offmaps import __version__
from offmaps.containers.base import TileReader, check_tile_in_matrix, detect_tile_format
from offmaps.containers.registry import Location, open_reader, parse_location
from offmaps.errors import (
    ContainerCorruptError,
    ContainerError,
    InvalidTileError,
    InvalidZoomError,
    TileNotFoundError,
    UnknownTileMatrixSetError,
    UnsupportedTileMatrixSetError,
    UpstreamError,
)
from offmaps.server._tilecache import MemoryTileCache, SQLiteTileCache
from offmaps.server.links import base_url
from offmaps.server.problems import problem_response
from offmaps.tiling.tms import get_tms, list_tms
from offmaps.types import BBox, Tile, TileCompression, TileFormat

__all__ = [
    "CACHE_CONTROL",
    "EXTENSIONS",
    "MAX_UPSTREAM_TILE_BYTES",
    "USER_AGENT",
    "ArchiveTileSource",
    "FunctionTileSource",
    "TileSource",
    "TileSourceInfo",
    "UpstreamTileSource",
    "etag_matches",
    "etag_of",
    "tiles_router",
]

_log = logging.getLogger(__name__)

MAX_UPSTREAM_TILE_BYTES = 4 * 1024 * 1024
"""Upstream tiles larger than this (after transfer decoding) are refused."""

USER_AGENT = f"offmaps/{__version__}"
"""The User-Agent of every upstream request."""

CACHE_CONTROL = "public, max-age=3600"
_JSON = "application/json"
_CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
_REL_TILING_SCHEME = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_NUMBER = re.compile(r"^[0-9]{1,9}$")
EXTENSIONS: dict[TileFormat, frozenset[str]] = {
    TileFormat.PNG: frozenset({"png"}),
    TileFormat.JPEG: frozenset({"jpg", "jpeg"}),
    TileFormat.WEBP: frozenset({"webp"}),
    TileFormat.MVT: frozenset({"pbf", "mvt"}),
}
_MVT_LAYER_TAG = 0x1A  # protobuf field 3 (layers), wire type 2: how every non-empty MVT starts


@dataclass(frozen=True)
class TileSourceInfo:
    """What a tile service says about itself (TileJSON, OGC tilesets, offline capabilities).

    Attributes:
        name: the name in URLs (``/tiles/{name}/...``).
        title: a human title.
        tms_id: id of the tile matrix set the tile keys refer to.
        tile_format: encoding of every tile.
        min_zoom: lowest level served.
        max_zoom: highest level served.
        bounds: WGS84 ``(west, south, east, north)`` of the data, or None for the whole matrix.
        attribution: attribution text or HTML, shown with the tiles.
        export_tiles_allowed: whether offline packages may copy these tiles.
        max_export_tile_count: the most tiles one export may take.
        vector_layers: layer names inside each vector tile (MVT only; may be empty).
        tile_compression: transfer compression of the stored bytes (``gzip`` for many MVT
            archives); served as ``Content-Encoding``.
        description: free text.

    Raises:
        InvalidZoomError: when the zoom range is negative or inverted.
    """

    name: str
    title: str
    tms_id: str
    tile_format: TileFormat
    min_zoom: int
    max_zoom: int
    bounds: BBox | None = None
    attribution: str = ""
    export_tiles_allowed: bool = True
    max_export_tile_count: int = 100_000
    vector_layers: Sequence[str] = ()
    tile_compression: TileCompression = TileCompression.NONE
    description: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.min_zoom <= self.max_zoom:
            raise InvalidZoomError(
                f"tile layer {self.name!r}: zoom range {self.min_zoom}-{self.max_zoom} is "
                "negative or inverted",
                zoom=self.min_zoom,
            )
        object.__setattr__(self, "vector_layers", tuple(self.vector_layers))


@runtime_checkable
class TileSource(Protocol):
    """A tile service: its description and its tiles. Implementations are thread-safe."""

    @property
    def info(self) -> TileSourceInfo:
        """What the service says about itself."""
        ...

    def get_tile(self, tile: Tile) -> bytes:
        """The bytes of ``tile``.

        Raises:
            InvalidTileError: when the key is outside the tile matrix set.
            TileNotFoundError: when the tile is absent or outside the service's zoom range.
        """
        ...


@runtime_checkable
class _WithTileMatrixSet(Protocol):
    @property
    def tms(self) -> TileMatrixSet: ...


def _source_tms(source: TileSource) -> TileMatrixSet:
    """The tile matrix set of a source: its own object when it has one (custom ones), else by id."""
    if isinstance(source, _WithTileMatrixSet):
        return source.tms
    return get_tms(source.info.tms_id)


def _check_key(tms: TileMatrixSet, info: TileSourceInfo, tile: Tile) -> None:
    check_tile_in_matrix(tms, tile)
    if not info.min_zoom <= tile.z <= info.max_zoom:
        raise TileNotFoundError(
            f"tile layer {info.name!r} has no level {tile.z} "
            f"(it serves {info.min_zoom}-{info.max_zoom})"
        )


def _where(info: TileSourceInfo, tile: Tile) -> str:
    return f"tile layer {info.name!r}, tile {tile.z}/{tile.x}/{tile.y}"


# --- archives -------------------------------------------------------------------------------


class ArchiveTileSource:
    """Tiles of one container the tile engine reads (MBTiles, GeoPackage, PMTiles, folders...).

    Readers are not thread-safe, so each request borrows one from a small pool and gives it back;
    the pool grows to the number of concurrent requests and keeps at most ``max_idle_readers``.

    Args:
        name: the name in URLs.
        location: the container, as :func:`offmaps.containers.parse_location` reads it.
        title: a human title; the archive's name by default.
        export_tiles_allowed: whether offline packages may copy these tiles.
        max_export_tile_count: the most tiles one export may take.
        max_idle_readers: readers kept open between requests.

    Raises:
        ContainerError: subclasses for missing, corrupt or unknown containers.
    """

    def __init__(
        self,
        name: str,
        location: Location | str | Path,
        *,
        title: str | None = None,
        export_tiles_allowed: bool = True,
        max_export_tile_count: int = 100_000,
        max_idle_readers: int = 8,
    ) -> None:
        self._location = location if isinstance(location, Location) else parse_location(location)
        self._lock = threading.Lock()
        self._max_idle = max(1, max_idle_readers)
        reader = open_reader(self._location)
        try:
            metadata = reader.metadata
        except BaseException:
            reader.close()
            raise
        self._idle: list[TileReader] = [reader]
        self._closed = False
        self.tms: TileMatrixSet = metadata.tms
        layers = [str(layer.get("id", "")) for layer in metadata.vector_layers or ()]
        self._info = TileSourceInfo(
            name=name,
            title=title or (metadata.name if metadata.name != "offmaps" else name),
            tms_id=str(metadata.tms.id),
            tile_format=metadata.tile_format,
            min_zoom=metadata.minzoom if metadata.minzoom is not None else metadata.tms.minzoom,
            max_zoom=metadata.maxzoom if metadata.maxzoom is not None else metadata.tms.maxzoom,
            bounds=metadata.bounds,
            attribution=metadata.attribution,
            export_tiles_allowed=export_tiles_allowed,
            max_export_tile_count=max_export_tile_count,
            vector_layers=[layer for layer in layers if layer],
            tile_compression=metadata.tile_compression,
            description=metadata.description,
        )

    @property
    def info(self) -> TileSourceInfo:
        """What the archive says about itself."""
        return self._info

    @property
    def location(self) -> Location:
        """Where the archive is, as the tile engine reads it."""
        return self._location

    def _acquire(self) -> TileReader:
        with self._lock:
            if self._closed:
                raise ContainerError(f"tile layer {self._info.name!r} is closed")
            if self._idle:
                return self._idle.pop()
        return open_reader(self._location)

    def _release(self, reader: TileReader) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(reader)
                return
        reader.close()

    def get_tile(self, tile: Tile) -> bytes:
        """The bytes of ``tile`` as stored in the archive.

        Raises:
            InvalidTileError: when the key is outside the tile matrix set.
            TileNotFoundError: when the archive does not hold the tile.
            ContainerCorruptError: when the archive is damaged where the tile lies.
        """
        _check_key(self.tms, self._info, tile)
        reader = self._acquire()
        try:
            data = reader.find_tile(tile)
        except ContainerCorruptError as exc:
            # The original names a server path: log it, and say less to the client.
            _log.warning("%s: %s", _where(self._info, tile), exc)
            raise ContainerCorruptError(
                f"{_where(self._info, tile)}: the archive is damaged", tile=(tile.x, tile.y, tile.z)
            ) from exc
        finally:
            self._release(reader)
        if data is None:
            raise TileNotFoundError(f"{_where(self._info, tile)}: no such tile")
        return data

    def close(self) -> None:
        """Close every pooled reader; readers on loan close when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for reader in idle:
            reader.close()


# --- upstream XYZ ---------------------------------------------------------------------------


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


def _gunzip(data: bytes, limit: int, where: str) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise UpstreamError(f"{where}: upstream sent broken gzip ({exc})") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise UpstreamError(f"{where}: upstream tile is over {limit} bytes once decompressed")
    return out


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
        self._host = _check_url_template(url_template)
        self._template = url_template
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
        self._owns_client = client is None
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(10.0, connect=5.0),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=True,
        )
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
        _check_key(self.tms, self._info, tile)
        data = self._cache.find(tile)
        if data is None:
            data = self._fetch(tile)
            self._cache.put(tile, data)
        return data

    def _fetch(self, tile: Tile) -> bytes:
        where = f"{_where(self._info, tile)} from {self._host}"
        url = (
            self._template.replace("{z}", str(tile.z))
            .replace("{x}", str(tile.x))
            .replace("{y}", str(tile.y))
        )
        limit = MAX_UPSTREAM_TILE_BYTES
        try:
            with self._client.stream(
                "GET", url, headers={"User-Agent": USER_AGENT}, follow_redirects=True
            ) as response:
                status = response.status_code
                if status in (204, 404, 410):
                    raise TileNotFoundError(f"{where}: the upstream has no such tile")
                if not 200 <= status < 300:
                    raise UpstreamError(f"{where}: the upstream answered HTTP {status}", url=url)
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise UpstreamError(f"{where}: upstream tile is over {limit} bytes", url=url)
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise UpstreamError(
                            f"{where}: upstream tile is over {limit} bytes", url=url
                        )
                    chunks.append(chunk)
        except httpx.TimeoutException as exc:
            raise UpstreamError(f"{where}: the upstream timed out", url=url) from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"{where}: the upstream request failed ({type(exc).__name__})", url=url
            ) from exc
        return self._check_content(b"".join(chunks), where, url)

    def _check_content(self, data: bytes, where: str, url: str) -> bytes:
        expected = self._info.tile_format
        if not data:
            if expected is TileFormat.MVT:
                return data  # an empty vector tile is a valid, empty tile
            raise UpstreamError(f"{where}: the upstream sent an empty body", url=url)
        found, compression = detect_tile_format(data)
        if found is not expected:
            raise UpstreamError(
                f"{where}: the upstream sent {found.value} content, not {expected.value}", url=url
            )
        if expected is TileFormat.MVT:
            if compression is TileCompression.GZIP:
                data = _gunzip(data, MAX_UPSTREAM_TILE_BYTES, where)
            if data and data[0] != _MVT_LAYER_TAG:
                raise UpstreamError(f"{where}: the upstream sent no Mapbox vector tile", url=url)
        return data

    def close(self) -> None:
        """Close the cache, and the HTTP client when this source made it."""
        self._cache.close()
        if self._owns_client:
            self._client.close()


# --- functions ------------------------------------------------------------------------------


class FunctionTileSource:
    """Tiles made by a function, e.g. vector tiles encoded on the fly from a feature layer.

    Args:
        info: what the service is; ``info.tms_id`` must be a registered tile matrix set.
        fn: makes the bytes of one tile; raises TileNotFoundError when there is none. Called
            from several threads at once.
        cache_bytes: budget of an in-memory LRU cache of made tiles; 0 (the default) for none.

    Raises:
        UnknownTileMatrixSetError: when ``info.tms_id`` is not registered.
    """

    def __init__(
        self, info: TileSourceInfo, fn: Callable[[Tile], bytes], *, cache_bytes: int = 0
    ) -> None:
        self._info = info
        self._fn = fn
        self.tms: TileMatrixSet = get_tms(info.tms_id)
        self._cache = MemoryTileCache(cache_bytes) if cache_bytes > 0 else None

    @property
    def info(self) -> TileSourceInfo:
        """What the service is."""
        return self._info

    def get_tile(self, tile: Tile) -> bytes:
        """The bytes of ``tile``, from the memory cache or the function.

        Raises:
            InvalidTileError: when the key is outside the tile matrix set.
            TileNotFoundError: outside the zoom range, or when the function has no tile.
        """
        _check_key(self.tms, self._info, tile)
        if self._cache is None:
            return self._fn(tile)
        data = self._cache.find(tile)
        if data is None:
            data = self._fn(tile)
            self._cache.put(tile, data)
        return data


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


def _tile_response(request: Request, source: TileSource, tile: Tile) -> Response:
    info = source.info
    data = source.get_tile(tile)
    etag = etag_of(data)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if info.tile_compression is TileCompression.GZIP:
        headers["Content-Encoding"] = "gzip"
    return Response(data, media_type=info.tile_format.media_type, headers=headers)


def _tms_not_found(exc: UnknownTileMatrixSetError) -> JSONResponse:
    # UnknownTileMatrixSetError is a 400 elsewhere (a bad TMS document); as a path it is a 404.
    return problem_response(
        404,
        str(exc),
        type_="https://offmaps.dev/problems/UnknownTileMatrixSetError",
        title="UnknownTileMatrixSetError",
        extra={"tms_id": exc.tms_id},
    )


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


@cache
def _registered_tms_summaries() -> tuple[tuple[str, str | None, str | None], ...]:
    summaries = []
    for tms_id in list_tms():
        tms = morecantile.tms.get(tms_id)
        summaries.append((tms_id, tms.title, str(tms.uri) if tms.uri else None))
    return tuple(summaries)


def tiles_router(
    sources: Mapping[str, TileSource], *, dependencies: Sequence[params.Depends] = ()
) -> APIRouter:
    """The tile routes over ``sources``: XYZ, TileJSON 3.0, OGC API – Tiles and tiling schemes.

    ``sources`` is looked up on every request, so layers added to it later are served. The OGC
    routes are limited to ``/collections/{name}/tiles...`` so that feature routes can share
    ``/collections/{name}``.

    Args:
        sources: the tile services by name.
        dependencies: dependencies run before every route (authentication, say).
    """
    router = APIRouter(dependencies=list(dependencies), tags=["tiles"])

    def custom_tms() -> dict[str, TileMatrixSet]:
        found: dict[str, TileMatrixSet] = {}
        registered = set(list_tms())
        for source in list(sources.values()):
            tms_id = source.info.tms_id
            if tms_id not in registered and isinstance(source, _WithTileMatrixSet):
                found[tms_id] = source.tms
        return found

    def source_tms(source: TileSource, tms_id: str) -> TileMatrixSet:
        if tms_id != source.info.tms_id:
            raise UnknownTileMatrixSetError(
                f"tile layer {source.info.name!r} is tiled in {source.info.tms_id}, "
                f"not {tms_id[:64]!r}",
                tms_id=tms_id[:64],
            )
        return _source_tms(source)

    tile_responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "The tile",
            "content": {fmt.media_type: {} for fmt in TileFormat},
        },
        304: {"description": "Not modified (If-None-Match)"},
    }

    @router.get(
        "/tiles/{name}/tilejson.json",
        summary="TileJSON 3.0 of a tile layer",
        response_class=JSONResponse,
    )
    def tilejson(name: str, request: Request) -> dict[str, Any]:
        source = _get_source(sources, name)
        info = source.info
        tms = _source_tms(source)
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
            document["vector_layers"] = [
                {"id": layer, "fields": {}} for layer in info.vector_layers
            ]
        return document

    @router.get(
        "/tiles/{name}/{z}/{x}/{y}",
        summary="One tile (XYZ, rows from the top); y may end in the format's extension",
        response_class=Response,
        responses=tile_responses,
    )
    def xyz_tile(name: str, z: str, x: str, y: str, request: Request) -> Response:
        source = _get_source(sources, name)
        row, dot, extension = y.partition(".")
        if dot and extension.lower() not in EXTENSIONS[source.info.tile_format]:
            raise TileNotFoundError(
                f"tile layer {name!r} serves {source.info.tile_format.value} tiles, "
                f"not {extension[:16]!r}"
            )
        tile = Tile(
            _parse_number(x, "column"), _parse_number(row, "row"), _parse_number(z, "level")
        )
        return _tile_response(request, source, tile)

    @router.get("/collections/{name}/tiles", summary="Tilesets of a collection (OGC API – Tiles)")
    def tilesets(name: str, request: Request) -> dict[str, Any]:
        source = _get_source(sources, name)
        info = source.info
        tms = _source_tms(source)
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

    @router.get(
        "/collections/{name}/tiles/{tileMatrixSetId}",
        summary="Tileset metadata (OGC API – Tiles)",
        response_model=None,
    )
    def tileset(
        name: str,
        tileMatrixSetId: str,  # noqa: N803 - OGC's name
        request: Request,
    ) -> dict[str, Any] | Response:
        source = _get_source(sources, name)
        info = source.info
        try:
            tms = source_tms(source, tileMatrixSetId)
        except UnknownTileMatrixSetError as exc:
            return _tms_not_found(exc)
        base = base_url(request)
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
            document["layers"] = [
                {"id": layer, "dataType": "vector"} for layer in info.vector_layers
            ]
        document.update(_export_capability(info))
        return document

    @router.get(
        "/collections/{name}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
        summary="One tile (OGC API – Tiles)",
        response_class=Response,
        responses=tile_responses,
    )
    def ogc_tile(
        name: str,
        tileMatrixSetId: str,  # noqa: N803 - OGC's names
        tileMatrix: str,  # noqa: N803
        tileRow: str,  # noqa: N803
        tileCol: str,  # noqa: N803
        request: Request,
    ) -> Response:
        source = _get_source(sources, name)
        try:
            source_tms(source, tileMatrixSetId)
        except UnknownTileMatrixSetError as exc:
            return _tms_not_found(exc)
        tile = Tile(
            _parse_number(tileCol, "column"),
            _parse_number(tileRow, "row"),
            _parse_number(tileMatrix, "matrix"),
        )
        return _tile_response(request, source, tile)

    @router.get("/tileMatrixSets", summary="Tiling schemes (OGC API – Tiles)")
    def tile_matrix_sets(request: Request) -> dict[str, Any]:
        base = base_url(request)
        entries = list(_registered_tms_summaries())
        entries += [
            (tms_id, tms.title, str(tms.uri) if tms.uri else None)
            for tms_id, tms in sorted(custom_tms().items())
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

    @router.get(
        "/tileMatrixSets/{tileMatrixSetId}",
        summary="One tiling scheme as OGC TileMatrixSet JSON",
        response_model=None,
    )
    def tile_matrix_set(tileMatrixSetId: str) -> dict[str, Any] | Response:  # noqa: N803
        tms = custom_tms().get(tileMatrixSetId)
        if tms is None:
            if tileMatrixSetId not in list_tms():
                return _tms_not_found(
                    UnknownTileMatrixSetError(
                        f"unknown tile matrix set {tileMatrixSetId[:64]!r}: see /tileMatrixSets",
                        tms_id=tileMatrixSetId[:64],
                    )
                )
            tms = get_tms(tileMatrixSetId)
        document: dict[str, Any] = tms.model_dump(mode="json", exclude_none=True, by_alias=True)
        return document

    return router
