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

Compositing is associative but not commutative: over the same existing tile, merging A then B gives
B over A over the existing tile; areas that do not overlap give the same result in any order.

Needs Pillow (the ``raster`` extra).
"""

from __future__ import annotations

from typing import Final, Literal

from PIL import Image

from offmaps.containers._image import alpha_of, decode, encode, is_opaque
from offmaps.containers.base import detect_tile_format
from offmaps.errors import InvalidTileDataError, UnsupportedTileFormatError
from offmaps.types import Tile, TileFormat

__all__ = ["MIXED", "CacheTileFormat", "as_png", "merge_tiles"]

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
