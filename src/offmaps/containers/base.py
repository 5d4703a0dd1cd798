"""The reader and writer protocols every tile container implements, and the metadata they share."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

import morecantile
from morecantile import TileMatrixSet

from offmaps.errors import InvalidTileError, OffmapsWarning, UnsupportedTileFormatError
from offmaps.tiling.tms import find_incompatibility
from offmaps.types import BBox, Tile, TileCompression, TileFormat

if TYPE_CHECKING:
    from offmaps.tiling import TileCover

__all__ = [
    "EntriesSkippedWarning",
    "LeftoversWarning",
    "MIXED_FORMAT",
    "TileReader",
    "TileWriter",
    "TilesetMetadata",
    "check_tile_in_matrix",
    "detect_tile_format",
    "web_mercator_quad",
]

_WEB_MERCATOR_QUAD: TileMatrixSet | None = None

MIXED_FORMAT = "mixed"
"""The name of a mixed tile set's format (:attr:`TilesetMetadata.mixed`) in JSON and messages."""


class EntriesSkippedWarning(OffmapsWarning):
    """A folder reader went through entries that are not tiles (symbolic links, FIFOs, foreign
    files, names outside the layout) and skipped them; the message gives their count and the first
    few names.

    Attributes:
        entries: every skipped entry, relative to the folder, as ``(path, why)`` pairs.
    """

    def __init__(self, message: str, *, entries: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.entries = entries


class LeftoversWarning(OffmapsWarning):
    """Leftovers of an interrupted write (hidden ``.NAME.*.partial`` or ``.old`` entries) were
    kept because offmaps cannot tell whether their writer is gone; the message names them and the
    command that removes them."""


def web_mercator_quad() -> TileMatrixSet:
    """The OGC WebMercatorQuad tile matrix set (the XYZ / MBTiles / PMTiles grid)."""
    global _WEB_MERCATOR_QUAD  # noqa: PLW0603 - cache of an immutable value
    if _WEB_MERCATOR_QUAD is None:
        _WEB_MERCATOR_QUAD = morecantile.tms.get("WebMercatorQuad")
    return _WEB_MERCATOR_QUAD


@dataclass(frozen=True)
class TilesetMetadata:
    """What a reader knows about its tiles and a writer needs to record.

    A ``mixed`` tile set (ArcGIS's MIXED format) holds PNG tiles where there is transparency and
    JPEG tiles elsewhere: each tile's format is told by its bytes (:func:`detect_tile_format`), and
    ``tile_format`` is PNG, the format it is announced as where one is needed (as for a mixed
    cache's :class:`~offmaps.cache.model.CacheDefinition`). Only folder containers record it
    (``"format": "mixed"`` in ``metadata.json``, ``MIXED`` in an Esri cache's ``conf.xml``); see
    :func:`~offmaps.containers.registry.open_writer`.

    Attributes:
        tile_format: encoding of every tile; PNG for a mixed tile set.
        tms: the tile matrix set the tile keys refer to.
        name: a short human name of the tile set.
        tile_compression: transfer compression of the tile bytes (``gzip`` for most MVT archives).
        bounds: WGS84 ``(west, south, east, north)`` of the data, if known.
        minzoom: lowest level holding tiles, if known.
        maxzoom: highest level holding tiles, if known.
        center: ``(lon, lat, zoom)`` to open a map at, if known.
        description: free text.
        attribution: attribution HTML or text, shown with the tiles.
        vector_layers: the ``vector_layers`` list of TileJSON, for MVT tile sets.
        extra: other key/value metadata carried through conversions untouched.
        mixed: each tile PNG or JPEG (ArcGIS's MIXED); ``tile_format`` is then PNG.
    """

    tile_format: TileFormat
    tms: TileMatrixSet = field(default_factory=web_mercator_quad)
    name: str = "offmaps"
    tile_compression: TileCompression = TileCompression.NONE
    bounds: BBox | None = None
    minzoom: int | None = None
    maxzoom: int | None = None
    center: tuple[float, float, int] | None = None
    description: str = ""
    attribution: str = ""
    vector_layers: list[dict[str, Any]] | None = None
    extra: dict[str, str] = field(default_factory=dict)
    mixed: bool = False

    def __post_init__(self) -> None:
        if self.mixed and self.tile_format is not TileFormat.PNG:
            raise ValueError(
                f"a mixed tile set holds PNG and JPEG tiles: its tile_format is png, not "
                f"{self.tile_format.value}"
            )

    @property
    def tile_formats(self) -> frozenset[TileFormat]:
        """The formats the tiles may be in: PNG and JPEG for a mixed tile set, else its one."""
        if self.mixed:
            return frozenset({TileFormat.PNG, TileFormat.JPEG})
        return frozenset({self.tile_format})

    @property
    def format_name(self) -> str:
        """``mixed``, or the tile format's name (``png``, ``jpg``...): for messages and JSON."""
        return MIXED_FORMAT if self.mixed else self.tile_format.value

    def with_zooms(self, minzoom: int, maxzoom: int) -> TilesetMetadata:
        """A copy restricted to a zoom range (used after filtering a conversion)."""
        return replace(self, minzoom=minzoom, maxzoom=maxzoom)

    @property
    def tms_json(self) -> str:
        """The tile matrix set as OGC TileMatrixSet JSON."""
        return tms_to_json(self.tms)


def tms_to_json(tms: TileMatrixSet) -> str:
    """Serialise a tile matrix set as OGC TileMatrixSet JSON (2.0)."""
    return tms.model_dump_json(exclude_none=True, by_alias=True, indent=2)


def is_web_mercator_quad(tms: TileMatrixSet) -> bool:
    """Whether ``tms`` is the WebMercatorQuad grid (by id, or by identical matrices)."""
    if tms.id == "WebMercatorQuad":
        return True
    return find_incompatibility(tms, web_mercator_quad()) is None


_PNG = b"\x89PNG\r\n\x1a\n"


def detect_tile_format(data: bytes) -> tuple[TileFormat, TileCompression]:
    """Tell a tile's format from its leading bytes.

    Anything that is not PNG, JPEG, WebP or gzip is taken to be an uncompressed Mapbox vector tile,
    since MVT (protobuf) has no magic number; gzip is taken to be a gzipped MVT.

    Raises:
        UnsupportedTileFormatError: for empty tiles.
    """
    if not data:
        raise UnsupportedTileFormatError("empty tile: zero bytes")
    if data.startswith(_PNG):
        return TileFormat.PNG, TileCompression.NONE
    if data.startswith(b"\xff\xd8\xff"):
        return TileFormat.JPEG, TileCompression.NONE
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return TileFormat.WEBP, TileCompression.NONE
    if data.startswith(b"\x1f\x8b"):
        return TileFormat.MVT, TileCompression.GZIP
    return TileFormat.MVT, TileCompression.NONE


_SIZES: OrderedDict[int, tuple[TileMatrixSet, dict[int, tuple[int, int]]]] = OrderedDict()
_SIZES_KEPT = 64


def _matrix_sizes(tms: TileMatrixSet) -> dict[int, tuple[int, int]]:
    """Matrix width and height per level, cached: morecantile's ``matrix()`` is slow per tile.

    Keyed by object id; the cache holds the object, so the id cannot be reused while cached.
    """
    entry = _SIZES.get(id(tms))
    if entry is None or entry[0] is not tms:
        sizes = {}
        for z in range(tms.minzoom, tms.maxzoom + 1):
            matrix = tms.matrix(z)
            sizes[z] = (matrix.matrixWidth, matrix.matrixHeight)
        entry = (tms, sizes)
        _SIZES[id(tms)] = entry
        if len(_SIZES) > _SIZES_KEPT:
            _SIZES.popitem(last=False)
    else:
        _SIZES.move_to_end(id(tms))
    return entry[1]


def check_tile_in_matrix(tms: TileMatrixSet, tile: Tile) -> None:
    """Refuse tile keys that are not inside ``tms`` (negative, past the matrix, unknown level).

    Raises:
        InvalidTileError: naming the tile and the valid range.
    """
    if not all(isinstance(v, int) for v in tile):
        raise InvalidTileError(f"tile key {tuple(tile)} is not made of integers")
    size = _matrix_sizes(tms).get(tile.z)
    if size is None:
        raise InvalidTileError(
            f"tile {tile.z}/{tile.x}/{tile.y}: level {tile.z} is outside {tms.id} "
            f"({tms.minzoom}-{tms.maxzoom})"
        )
    width, height = size
    if not (0 <= tile.x < width and 0 <= tile.y < height):
        raise InvalidTileError(
            f"tile {tile.z}/{tile.x}/{tile.y} is outside the level's matrix ({width}x{height})"
        )


_NUMBER = re.compile(r"^[0-9]{1,10}$")


def parse_key_part(text: str) -> int | None:
    """A decimal folder or file name as an int, or None if it is not one (``..``, ``-1``)."""
    return int(text) if _NUMBER.match(text) else None


@runtime_checkable
class TileReader(Protocol):
    """Reads tiles from one container. Use as a context manager; readers are not thread-safe."""

    @property
    def metadata(self) -> TilesetMetadata:
        """The tile set's metadata."""
        ...

    def find_tile(self, tile: Tile) -> bytes | None:
        """The bytes of ``tile``, or None if the container does not hold it."""
        ...

    def get_tile(self, tile: Tile) -> bytes:
        """The bytes of ``tile``; raises TileNotFoundError if missing."""
        ...

    def iter_tiles(self, zooms: Iterable[int] | None = None) -> Iterator[tuple[Tile, bytes]]:
        """Every tile with its bytes, optionally only for some levels, in a container's cheapest
        order."""
        ...

    def iter_cover(self, cover: TileCover) -> Iterator[tuple[Tile, bytes]]:
        """The tiles of ``cover`` (a tile cover in this container's tile matrix set) that the
        container holds, with their bytes; folders and archives with a key index read only
        those, not every tile of the cover's levels."""
        ...

    def count_tiles(self) -> int:
        """How many tiles the container holds."""
        ...

    def check(self) -> list[str]:
        """Problems with the container's structure, found without reading every tile (SQLite's
        integrity check, which reads each page of the file once); empty when none found.
        """
        ...

    def verify(self) -> list[str]:
        """Problems found by a full check of the container; empty when well formed."""
        ...

    def close(self) -> None:
        """Release files and connections."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class TileWriter(Protocol):
    """Writes tiles into a new container, atomically.

    Tiles go to a temporary file or folder beside the destination; ``commit`` moves it into place;
    ``abort`` (or leaving the ``with`` block by an exception) removes it, so a failed or interrupted
    write leaves nothing at the destination.
    """

    def write_tile(self, tile: Tile, data: bytes) -> None:
        """Store ``data`` as ``tile``; a second write of the same tile replaces the first."""
        ...

    def commit(self) -> None:
        """Finish the container and move it to its destination."""
        ...

    def abort(self) -> None:
        """Drop everything written so far."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
