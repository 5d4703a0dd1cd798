"""Raster tiles decoded and encoded with Pillow, for clipping and compositing.

Every failure to decode (garbage, truncated, empty, zero pixels, a decompression bomb, bytes of
another format than claimed) becomes :class:`~offmaps.errors.InvalidTileDataError` naming the tile.
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from offmaps.containers.base import detect_tile_format
from offmaps.errors import InvalidTileDataError, UnsupportedTileFormatError
from offmaps.types import Tile, TileFormat

__all__ = [
    "JPEG_QUALITY",
    "MAX_TILE_PIXELS",
    "WEBP_QUALITY",
    "alpha_of",
    "check_claimed_format",
    "decode",
    "encode",
    "is_opaque",
]

MAX_TILE_PIXELS = 4096 * 4096
"""Larger tile images are refused rather than decoded (a decompression bomb guard)."""
JPEG_QUALITY = 90
"""Quality of re-encoded JPEG tiles."""
WEBP_QUALITY = 90
"""Quality of re-encoded WebP tiles."""

_PIL_FORMATS = {TileFormat.PNG: "PNG", TileFormat.JPEG: "JPEG", TileFormat.WEBP: "WEBP"}


def _name(tile: Tile | None) -> str:
    return "tile" if tile is None else f"tile {tile.z}/{tile.x}/{tile.y}"


def _key(tile: Tile | None) -> tuple[int, int, int] | None:
    return None if tile is None else (tile.x, tile.y, tile.z)


def check_claimed_format(data: bytes, tile_format: TileFormat, tile: Tile | None) -> None:
    """Check that ``data`` starts like a raster tile of ``tile_format`` (magic bytes only).

    Raises:
        UnsupportedTileFormatError: for vector tiles, which have no pixels.
        InvalidTileDataError: for empty bytes or bytes of another format.
    """
    if tile_format not in _PIL_FORMATS:
        raise UnsupportedTileFormatError(
            f"{_name(tile)}: {tile_format.value} tiles have no pixels to clip or composite"
        )
    if not data:
        raise InvalidTileDataError(f"{_name(tile)} is empty: zero bytes", tile=_key(tile))
    found, _ = detect_tile_format(data)
    if found is not tile_format:
        what = "neither PNG, JPEG nor WebP" if found is TileFormat.MVT else found.value
        raise InvalidTileDataError(
            f"{_name(tile)} should be {tile_format.value} but its bytes are {what}",
            tile=_key(tile),
        )


def decode(data: bytes, tile_format: TileFormat, tile: Tile | None = None) -> Image.Image:
    """The decoded image of a raster tile of ``tile_format``.

    Raises:
        UnsupportedTileFormatError: for vector tiles.
        InvalidTileDataError: when the bytes are not a valid image of that format.
    """
    check_claimed_format(data, tile_format, tile)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[tile_format]])
            width, height = image.size
            if width * height > MAX_TILE_PIXELS:
                raise InvalidTileDataError(
                    f"{_name(tile)} is {width}x{height} pixels; tiles larger than "
                    f"{MAX_TILE_PIXELS} pixels are refused",
                    tile=_key(tile),
                )
            image.load()
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        struct.error,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise InvalidTileDataError(
            f"{_name(tile)} is not a valid {tile_format.value} image: {exc}", tile=_key(tile)
        ) from exc
    if image.width == 0 or image.height == 0:
        raise InvalidTileDataError(f"{_name(tile)} has no pixels", tile=_key(tile))
    return image


def encode(image: Image.Image, tile_format: TileFormat) -> bytes:
    """``image`` encoded as ``tile_format``; JPEG drops any alpha band (flattened beforehand)."""
    out = io.BytesIO()
    if tile_format is TileFormat.JPEG:
        image.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY)
    elif tile_format is TileFormat.WEBP:
        image.save(out, "WEBP", quality=WEBP_QUALITY)
    else:
        image.save(out, "PNG")
    return out.getvalue()


def alpha_of(image: Image.Image) -> NDArray[np.uint8] | None:
    """The alpha band of ``image`` as an array, or None when it has none."""
    if image.mode in ("RGBA", "LA", "PA"):
        return np.asarray(image.getchannel("A"))
    if "transparency" in image.info:
        return np.asarray(image.convert("RGBA").getchannel("A"))
    return None


def is_opaque(image: Image.Image) -> bool:
    """Whether every pixel of ``image`` is fully opaque."""
    alpha = alpha_of(image)
    return alpha is None or bool((alpha == 255).all())
