"""Palette PNG tiles (what rendered basemaps mostly are) are clipped in their own mode."""

from __future__ import annotations

import io

import morecantile
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from offmaps.containers.base import web_mercator_quad
from offmaps.containers.clip import clip_tile
from offmaps.tiling import AreaOfInterest
from offmaps.types import Tile, TileFormat

WMQ = web_mercator_quad()
TILE = Tile(1, 1, 2)
BOUNDS = WMQ.xy_bounds(morecantile.Tile(*TILE))
RES = (BOUNDS.right - BOUNDS.left) / 256


def palette_tile(colours: int, transparency: int | bytes | None = None) -> bytes:
    """A 256-pixel palette PNG using ``colours`` palette entries in stripes."""
    rows, cols = np.mgrid[0:256, 0:256]
    indices = ((rows + cols) % colours).astype(np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([v for i in range(colours) for v in (i, 255 - i, (7 * i) % 256)])
    out = io.BytesIO()
    if transparency is None:
        image.save(out, "PNG")
    else:
        image.save(out, "PNG", transparency=transparency)
    return out.getvalue()


def rgba(data: bytes) -> NDArray[np.uint8]:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def east_of(pixel_column: float) -> AreaOfInterest:
    x = BOUNDS.left + pixel_column * RES
    return AreaOfInterest.from_bbox(x, -1e6, BOUNDS.right + 1e6, BOUNDS.top + 1e6, "EPSG:3857")


@pytest.mark.parametrize(
    ("colours", "transparency", "mode"),
    [
        (5, None, "P"),
        (40, 3, "P"),  # one transparent entry (tRNS with an index)
        (40, bytes([255, 128, 0, 255]), "P"),  # alphas of the first entries
        (256, None, "RGBA"),  # a full palette: clipped in RGBA
    ],
)
def test_a_palette_tile_clips_to_the_same_pixels_as_rgba(
    colours: int, transparency: int | bytes | None, mode: str
) -> None:
    source = palette_tile(colours, transparency)
    clipped = clip_tile(TILE, WMQ, east_of(100.3), source, TileFormat.PNG)
    assert clipped is not None
    assert Image.open(io.BytesIO(clipped)).mode == mode
    got, want = rgba(clipped), rgba(source)
    assert (got[:, :100] == 0).all()  # colour and alpha 0 outside
    assert np.array_equal(got[:, 100:], want[:, 100:])
