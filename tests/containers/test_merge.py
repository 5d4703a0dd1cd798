"""An incoming tile composited over an existing one: alpha over, bytes reused, MIXED format."""

from __future__ import annotations

import io

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from offmaps.containers.merge import MIXED, merge_tiles
from offmaps.errors import InvalidTileDataError, UnsupportedTileFormatError
from offmaps.types import Tile, TileFormat

BASE_COLOUR = (30, 120, 60)


def encoded(image: Image.Image, kind: str) -> bytes:
    out = io.BytesIO()
    image.save(out, kind)
    return out.getvalue()


def basemap(kind: str = "PNG", size: int = 64) -> bytes:
    return encoded(Image.new("RGB", (size, size), BASE_COLOUR), kind)


def overlay(*squares: tuple[int, int, tuple[int, int, int, int]], size: int = 64) -> bytes:
    """A transparent tile with 8x8 squares of colour (r, g, b, a) at (column, row)."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    for col, row, colour in squares:
        image.paste(colour, (col, row, col + 8, row + 8))
    return encoded(image, "PNG")


def pixels(data: bytes) -> NDArray[np.uint8]:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def test_transparent_pixels_of_the_incoming_tile_leave_the_existing_ones() -> None:
    top = overlay((8, 8, (255, 0, 0, 255)), (32, 32, (0, 0, 255, 128)))
    merged = merge_tiles(basemap(), top, cache_format=TileFormat.PNG)
    got = pixels(merged)
    assert tuple(got[0, 0]) == (*BASE_COLOUR, 255)
    assert tuple(got[10, 10]) == (255, 0, 0, 255)
    blended = Image.alpha_composite(
        Image.new("RGBA", (1, 1), (*BASE_COLOUR, 255)), Image.new("RGBA", (1, 1), (0, 0, 255, 128))
    ).getpixel((0, 0))
    assert tuple(got[36, 36]) == blended


def test_an_opaque_incoming_tile_is_stored_as_given() -> None:
    incoming = basemap("JPEG")
    assert merge_tiles(basemap("JPEG"), incoming, cache_format=TileFormat.JPEG) is incoming
    opaque_png = overlay(
        *((c, r, (9, 9, 9, 255)) for c in range(0, 64, 8) for r in range(0, 64, 8))
    )
    assert merge_tiles(basemap(), opaque_png, cache_format=TileFormat.PNG) is opaque_png


def test_a_wholly_transparent_incoming_tile_leaves_the_existing_bytes() -> None:
    existing = basemap()
    assert merge_tiles(existing, overlay(), cache_format=TileFormat.PNG) is existing


def test_a_jpeg_cache_gets_jpeg() -> None:
    top = overlay((8, 8, (255, 0, 0, 255)))
    with pytest.raises(UnsupportedTileFormatError, match="incoming tile is png"):
        merge_tiles(basemap("JPEG"), top, cache_format=TileFormat.JPEG)


def test_a_mixed_cache_gets_jpeg_where_opaque_and_png_where_transparent() -> None:
    top = overlay((8, 8, (255, 0, 0, 255)))
    over_jpeg = merge_tiles(basemap("JPEG"), top, cache_format=MIXED)
    assert over_jpeg.startswith(b"\xff\xd8\xff")
    assert np.abs(pixels(over_jpeg)[12, 12, :3].astype(int) - (255, 0, 0)).max() <= 8
    half = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    half.paste((*BASE_COLOUR, 255), (0, 0, 32, 64))
    over_half = merge_tiles(encoded(half, "PNG"), top, cache_format=MIXED)
    assert over_half.startswith(b"\x89PNG")
    assert pixels(over_half)[40, 40, 3] == 0


def test_overlays_that_do_not_overlap_merge_the_same_in_any_order() -> None:
    a, b = overlay((0, 0, (255, 0, 0, 200))), overlay((40, 40, (0, 0, 255, 90)))

    def png(existing: bytes, incoming: bytes) -> bytes:
        return merge_tiles(existing, incoming, cache_format=TileFormat.PNG)

    assert np.array_equal(pixels(png(png(basemap(), a), b)), pixels(png(png(basemap(), b), a)))


@pytest.mark.parametrize(
    ("existing", "incoming", "match"),
    [
        (basemap(), b"", "empty"),
        (basemap(), b"not an image at all", "neither PNG"),
        (b"\x89PNG\r\n\x1a\ntruncated", overlay((0, 0, (1, 2, 3, 100))), "not a valid png"),
        (basemap(size=32), overlay((0, 0, (1, 2, 3, 100))), "64x64 pixels, the existing one 32x32"),
    ],
    ids=["empty", "garbage", "corrupt-existing", "sizes"],
)
def test_bad_tiles_raise_invalid_tile_data(existing: bytes, incoming: bytes, match: str) -> None:
    with pytest.raises(InvalidTileDataError, match=match) as caught:
        merge_tiles(existing, incoming, cache_format=TileFormat.PNG, tile=Tile(3, 4, 5))
    assert caught.value.tile == (3, 4, 5)
