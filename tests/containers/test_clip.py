"""Tiles clipped to an area: kept byte for byte, left out, or cut at pixel centres."""

from __future__ import annotations

import io
import struct
import zlib

import morecantile
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from offmaps.containers.base import web_mercator_quad
from offmaps.containers.clip import AreaClipper, TileRelation, clip_tile
from offmaps.errors import (
    InvalidAOIError,
    InvalidTileDataError,
    InvalidTileError,
    UnsupportedTileFormatError,
)
from offmaps.tiling import AreaOfInterest
from offmaps.types import Tile, TileFormat
from tests.tilegen import make_tile

WMQ = web_mercator_quad()
TILE = Tile(1, 1, 2)  # x from -10018754 to 0, y from 0 to 10018754 (EPSG:3857)
BOUNDS = WMQ.xy_bounds(morecantile.Tile(*TILE))
RES = (BOUNDS.right - BOUNDS.left) / 256


def image_tile(tile_format: TileFormat, mode: str = "RGB") -> bytes:
    """A 256-pixel tile whose every pixel differs from its neighbours and is not black."""
    rows, cols = np.mgrid[0:256, 0:256]
    pixels = np.stack([rows, cols, 255 - (rows + cols) // 2], axis=-1).astype(np.uint8) | 1
    if mode == "RGBA":
        pixels = np.dstack([pixels, np.full((256, 256), 255, np.uint8)])
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[tile_format])
    return out.getvalue()


def decoded(data: bytes, mode: str = "RGBA") -> NDArray[np.uint8]:
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode))


def east_of(pixel_column: float) -> AreaOfInterest:
    """The area east of a vertical line through the tile, in the tile matrix set's CRS."""
    x = BOUNDS.left + pixel_column * RES
    return AreaOfInterest.from_bbox(x, -1e6, BOUNDS.right + 1e6, BOUNDS.top + 1e6, "EPSG:3857")


@pytest.mark.parametrize(("line", "first_inside"), [(100.3, 100), (100.7, 101), (100.5001, 101)])
def test_pixels_are_inside_when_their_centre_is(line: float, first_inside: int) -> None:
    source = image_tile(TileFormat.PNG)
    clipped = clip_tile(TILE, WMQ, east_of(line), source, TileFormat.PNG)
    assert clipped is not None
    got, want = decoded(clipped), decoded(source)
    # every column left of the line is transparent black, every column right of it untouched
    assert (got[:, :first_inside] == 0).all()
    assert np.array_equal(got[:, first_inside:], want[:, first_inside:])


def test_a_horizontal_boundary_cuts_rows_at_their_centres() -> None:
    y = BOUNDS.top - 50.3 * RES  # the area is north of it: rows 0-49 have their centre inside
    aoi = AreaOfInterest.from_bbox(-1.2e7, y, 1e6, 2e7, "EPSG:3857")
    clipped = clip_tile(TILE, WMQ, aoi, image_tile(TileFormat.PNG), TileFormat.PNG)
    assert clipped is not None
    alpha = decoded(clipped)[:, :, 3]
    assert (alpha[:50] == 255).all()
    assert (alpha[50:] == 0).all()


def test_a_jpeg_tile_is_filled_with_the_background_outside() -> None:
    source = image_tile(TileFormat.JPEG)
    clipped = clip_tile(TILE, WMQ, east_of(128), source, TileFormat.JPEG, background=(0, 90, 200))
    assert clipped is not None
    assert clipped.startswith(b"\xff\xd8\xff")
    got, want = decoded(clipped, "RGB").astype(int), decoded(source, "RGB").astype(int)
    assert np.abs(got[:, :120] - (0, 90, 200)).max() <= 4  # JPEG is lossy, away from the edge
    assert np.abs(got[:, 136:] - want[:, 136:]).max() <= 12


def test_a_webp_tile_keeps_its_format_and_gets_transparency() -> None:
    clipped = clip_tile(TILE, WMQ, east_of(128), image_tile(TileFormat.WEBP), TileFormat.WEBP)
    assert clipped is not None
    assert clipped[8:12] == b"WEBP"
    alpha = decoded(clipped)[:, :, 3]
    assert (alpha[:, :127] == 0).all()
    assert (alpha[:, 129:] == 255).all()


def test_tiles_wholly_inside_are_kept_byte_for_byte_and_outside_left_out() -> None:
    aoi = AreaOfInterest.from_bbox(-100.0, 10.0, -80.0, 30.0)
    clipper = AreaClipper(aoi, WMQ)
    inside, outside = Tile(30, 54, 7), Tile(0, 0, 7)
    assert clipper.relation(inside) is TileRelation.INSIDE
    assert clipper.relation(outside) is TileRelation.OUTSIDE
    assert clipper.relation(TILE) is TileRelation.CUT
    data = image_tile(TileFormat.PNG)
    assert clipper.clip(inside, data, TileFormat.PNG) is data
    assert clipper.clip(outside, data, TileFormat.PNG) is None


def test_a_cut_tile_whose_pixels_are_all_inside_keeps_its_bytes() -> None:
    data = image_tile(TileFormat.PNG)
    clipper = AreaClipper(east_of(0.3), WMQ)  # the line passes left of every pixel centre
    assert clipper.relation(TILE) is TileRelation.CUT
    assert clipper.clip(TILE, data, TileFormat.PNG) is data
    assert clip_tile(TILE, WMQ, east_of(255.7), data, TileFormat.PNG) is None


def test_an_area_across_the_antimeridian_clips_both_edges_of_the_world() -> None:
    clipper = AreaClipper(AreaOfInterest.from_bbox(170.0, -60.0, -170.0, 60.0), WMQ)
    data = image_tile(TileFormat.PNG)
    west, east = Tile(0, 1, 2), Tile(3, 1, 2)  # longitudes -180..-90 and 90..180
    assert clipper.clip(Tile(1, 1, 2), data, TileFormat.PNG) is None
    assert clipper.clip(Tile(2, 1, 2), data, TileFormat.PNG) is None
    west_clip, east_clip = (clipper.clip(t, data, TileFormat.PNG) for t in (west, east))
    assert west_clip is not None
    assert east_clip is not None
    # -170 degrees is column 256 * 10 / 90 = 28.4 of the west tile, 170 column 227.6 of the east
    west_alpha, east_alpha = decoded(west_clip)[255, :, 3], decoded(east_clip)[255, :, 3]
    assert (west_alpha[:28] == 255).all()
    assert (west_alpha[28:] == 0).all()
    assert (east_alpha[:228] == 0).all()
    assert (east_alpha[228:] == 255).all()


def test_a_larger_image_is_clipped_in_its_own_pixel_grid() -> None:
    out = io.BytesIO()
    Image.new("RGB", (512, 512), (10, 200, 30)).save(out, "PNG")
    clipped = clip_tile(TILE, WMQ, east_of(100.3), out.getvalue(), TileFormat.PNG)
    assert clipped is not None
    alpha = decoded(clipped)[:, :, 3]
    assert (alpha[:, :201] == 0).all()  # the line is at column 200.6 of 512
    assert (alpha[:, 201:] == 255).all()


def png_of_size(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b""))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "tile_format", "error", "match"),
    [
        (b"", TileFormat.PNG, InvalidTileDataError, "empty"),
        (b"<html>not found</html>", TileFormat.PNG, InvalidTileDataError, "neither PNG"),
        (make_tile(TILE, TileFormat.JPEG), TileFormat.PNG, InvalidTileDataError, "are jpg"),
        (make_tile(TILE, TileFormat.PNG)[:60], TileFormat.PNG, InvalidTileDataError, "not a valid"),
        (b"\xff\xd8\xff\xe0garbage", TileFormat.JPEG, InvalidTileDataError, "not a valid"),
        (png_of_size(0, 256), TileFormat.PNG, InvalidTileDataError, "not a valid"),
        (make_tile(TILE, TileFormat.MVT), TileFormat.MVT, UnsupportedTileFormatError, "pixels"),
    ],
    ids=["empty", "garbage", "wrong-format", "truncated", "bad-jpeg", "zero-width", "vector"],
)
def test_bad_tiles_raise_the_containers_errors(
    data: bytes, tile_format: TileFormat, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as caught:
        clip_tile(TILE, WMQ, east_of(100), data, tile_format)
    if isinstance(caught.value, InvalidTileDataError):
        assert caught.value.tile == (1, 1, 2)
        assert "tile 2/1/1" in str(caught.value)


def test_a_tile_outside_the_matrix_or_an_area_outside_the_grid_is_refused() -> None:
    clipper = AreaClipper(east_of(100), WMQ)
    with pytest.raises(InvalidTileError):
        clipper.relation(Tile(4, 0, 2))
    with pytest.raises(InvalidAOIError):
        AreaClipper(AreaOfInterest.from_bbox(0.0, 86.0, 10.0, 89.0), WMQ)
