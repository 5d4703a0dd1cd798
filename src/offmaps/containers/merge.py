"""An incoming raster tile composited over the tile a cache already holds.

Merging is what an import does by default: the incoming tile is laid over the existing one with
alpha compositing (Porter-Duff "over", Pillow's ``alpha_composite``) in the tile's pixel space, so
the transparent pixels of an overlay (points, lines) leave the basemap's pixels as they were. The
bytes are reused wherever no compositing is needed:

* an incoming tile with no transparent pixel (every JPEG, an opaque PNG) replaces the existing one
  and is stored as given;
* an incoming tile with no visible pixel leaves the existing bytes as they were.

Otherwise the result is encoded in the receiving cache's format; for a ``MIXED`` cache (ArcGIS's
mixed format), as PNG when any pixel of the result is transparent and as JPEG elsewhere.
:func:`as_png` gives a JPEG tile the alpha channel a clip into a ``MIXED`` cache needs.

:class:`MixedExport` is what an export does with the tiles of a mixed source (a mixed cache, an
Esri cache whose ``conf.xml`` says ``MIXED``): each tile's format told by its bytes, a cut tile
clipped to transparency (as PNG, whatever it was: ArcGIS's MIXED holds PNG where there is
transparency), and into a container of one format (MBTiles, GeoPackage, PMTiles) its JPEG tiles
re-encoded as PNG (the same decoded pixels; larger files).

Compositing is associative but not commutative: over the same existing tile, merging A then B gives
B over A over the existing tile; areas that do not overlap give the same result in any order.

Needs Pillow (the ``raster`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
from PIL import Image

from offmaps.containers._image import alpha_of, decode, encode, is_opaque
from offmaps.containers.base import detect_tile_format
from offmaps.errors import InvalidTileDataError, UnsupportedTileFormatError
from offmaps.types import Tile, TileFormat

if TYPE_CHECKING:
    from offmaps.containers.clip import AreaClipper

__all__ = ["MIXED", "CacheTileFormat", "MixedExport", "as_png", "merge_tiles", "mixed_tile_format"]

MIXED: Final = "mixed"
"""The format of a cache holding PNG tiles where there is transparency, JPEG elsewhere."""

CacheTileFormat = TileFormat | Literal["mixed"]
"""The tile format of a receiving cache: one raster format, or :data:`MIXED`."""


def merge_tiles(
    existing: bytes,
    incoming: bytes,
    *,
    cache_format: CacheTileFormat,
    tile: Tile | None = None,
) -> bytes:
    """The bytes to store when ``incoming`` is merged over ``existing``.

    Args:
        existing: the tile the cache holds.
        incoming: the tile being imported, in ``cache_format`` (PNG or JPEG for a MIXED cache).
        cache_format: the receiving cache's tile format, or :data:`MIXED`.
        tile: the tile's key, named in errors.

    Raises:
        UnsupportedTileFormatError: for vector tiles, or an incoming tile of another format than
            the cache's.
        InvalidTileDataError: when a tile is not a valid image of its format, or the two tiles
            have different pixel sizes.
    """
    incoming_format = _raster_format(incoming, tile)
    allowed = (TileFormat.PNG, TileFormat.JPEG) if cache_format == MIXED else (cache_format,)
    if incoming_format not in allowed:
        raise UnsupportedTileFormatError(
            f"{_name(tile)}: the incoming tile is {incoming_format.value}, the cache holds "
            f"{cache_format if cache_format == MIXED else TileFormat(cache_format).value} tiles"
        )
    top = decode(incoming, incoming_format, tile)
    if is_opaque(top):
        return incoming
    alpha = alpha_of(top)
    if alpha is not None and not alpha.any():
        return existing
    bottom = decode(existing, _raster_format(existing, tile), tile)
    if bottom.size != top.size:
        raise InvalidTileDataError(
            f"{_name(tile)}: the incoming tile is {top.width}x{top.height} pixels, the existing "
            f"one {bottom.width}x{bottom.height}",
            tile=None if tile is None else (tile.x, tile.y, tile.z),
        )
    result = Image.alpha_composite(bottom.convert("RGBA"), top.convert("RGBA"))
    opaque = is_opaque(result)
    if cache_format == MIXED:
        out_format = TileFormat.JPEG if opaque else TileFormat.PNG
    else:
        out_format = TileFormat(cache_format)
    return encode(result.convert("RGB") if opaque else result, out_format)


def as_png(data: bytes, tile: Tile | None = None) -> bytes:
    """A raster tile re-encoded as PNG, the same pixels: for a ``MIXED`` cache, a JPEG tile
    that is about to be clipped gets an alpha channel to make the pixels outside transparent.

    Raises:
        InvalidTileDataError: when ``data`` is not a valid PNG, JPEG or WebP image.
    """
    image = decode(data, _raster_format(data, tile), tile)
    return encode(image, TileFormat.PNG)


def _raster_format(data: bytes, tile: Tile | None) -> TileFormat:
    if not data:
        raise InvalidTileDataError(
            f"{_name(tile)} is empty: zero bytes",
            tile=None if tile is None else (tile.x, tile.y, tile.z),
        )
    found, _ = detect_tile_format(data)
    if found is TileFormat.MVT:  # no raster magic: garbage, or a vector tile
        raise InvalidTileDataError(
            f"{_name(tile)} is neither PNG, JPEG nor WebP: only raster tiles are composited",
            tile=None if tile is None else (tile.x, tile.y, tile.z),
        )
    return found


def _name(tile: Tile | None) -> str:
    return "tile" if tile is None else f"tile {tile.z}/{tile.x}/{tile.y}"


def mixed_tile_format(data: bytes, tile: Tile | None = None) -> TileFormat:
    """The format of a mixed tile set's tile, PNG or JPEG, by its bytes.

    Raises:
        InvalidTileDataError: for empty bytes, or bytes of any other format.
    """
    found = _raster_format(data, tile)
    if found not in (TileFormat.PNG, TileFormat.JPEG):
        raise InvalidTileDataError(
            f"{_name(tile)} is {found.value}: a mixed tile set holds PNG and JPEG tiles",
            tile=None if tile is None else (tile.x, tile.y, tile.z),
        )
    return found


@dataclass(frozen=True)
class MixedExport:
    """How an export writes the tiles of a mixed source (PNG and JPEG tiles).

    Attributes:
        keep: the destination holds a mixed tile set (a folder: Esri compact or exploded, XYZ,
            TMS), so each tile keeps its bytes; else (MBTiles, GeoPackage, PMTiles) its JPEG
            tiles are re-encoded as PNG.
    """

    keep: bool

    def copy(self, tile: Tile, data: bytes) -> bytes:
        """The bytes to write of a tile wholly inside the area: ``data`` itself, or with
        ``keep`` false, a JPEG tile re-encoded as PNG.

        Raises:
            InvalidTileDataError: for bytes that are neither PNG nor JPEG (by their magic bytes;
                a JPEG tile to re-encode must decode too).
        """
        if mixed_tile_format(data, tile) is TileFormat.JPEG and not self.keep:
            return as_png(data, tile)
        return data

    def clip(self, clipper: AreaClipper, tile: Tile, data: bytes) -> bytes | None:
        """A tile cut by the area's boundary, clipped: ``data`` itself when every pixel centre
        is inside, None when none is, else PNG with the pixels outside transparent (a JPEG tile
        too, rather than filled with a background colour).

        Raises:
            InvalidTileDataError: for bytes that are not a valid PNG or JPEG image.
        """
        if mixed_tile_format(data, tile) is TileFormat.PNG:
            return clipper.clip_cut(tile, data, TileFormat.PNG)
        image = decode(data, TileFormat.JPEG, tile)
        inside = clipper.mask(tile, image.width, image.height)
        if inside.all():
            return data
        if not inside.any():
            return None
        pixels = np.array(image.convert("RGBA"))
        pixels[~inside] = 0
        return encode(Image.fromarray(pixels), TileFormat.PNG)
