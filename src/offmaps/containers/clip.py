"""Raster tiles clipped to an area of interest, pixel by pixel.

A tile relates to an area in one of three ways (:class:`TileRelation`): wholly inside (its bytes are
kept as they are, never decoded nor re-encoded), wholly outside (left out), or cut by the area's
boundary. A cut tile is decoded, the pixels outside the area are made fully transparent (PNG, WebP:
colour and alpha set to 0, so nothing of the clipped-out image remains) or filled with a background
colour (JPEG), and the tile is re-encoded in its own format. A cut tile whose pixels all turn out
inside (the boundary passes between pixel centres) keeps its bytes; one whose pixels all turn out
outside is left out.

A pixel is inside when its centre is: the area is rasterised in the tile's own pixel grid (GDAL's
rasteriser through ``rasterio.features.geometry_mask``, with the affine transform from the tile's
bounds in the tile matrix set's CRS to the decoded image's size), so a pixel whose centre lies
exactly on the boundary is decided by GDAL's rule and no pixel is shifted by half.

The area is projected into the tile matrix set's CRS once (areas across the antimeridian are split
into parts on both sides of it, see :meth:`~offmaps.tiling.AreaOfInterest.project`), then clipped
to each tile's bounds before rasterising, so a detailed polygon costs little per tile.

Needs Pillow and rasterio (the ``raster`` extra).
"""

from __future__ import annotations

import io
from enum import StrEnum

import morecantile
import numpy as np
import shapely
from affine import Affine
from morecantile import TileMatrixSet
from numpy.typing import NDArray
from PIL import Image
from rasterio.features import geometry_mask
from shapely.geometry import box

from offmaps.containers._image import check_claimed_format, decode, encode
from offmaps.containers.base import check_tile_in_matrix
from offmaps.tiling.aoi import AreaOfInterest
from offmaps.tiling.tms import tms_crs
from offmaps.types import Tile, TileFormat

__all__ = ["DEFAULT_BACKGROUND", "AreaClipper", "TileRelation", "clip_tile"]

DEFAULT_BACKGROUND = (255, 255, 255)
"""The colour JPEG pixels outside the area are filled with, unless told otherwise."""


class TileRelation(StrEnum):
    """Where a tile lies with respect to an area."""

    INSIDE = "inside"
    OUTSIDE = "outside"
    CUT = "cut"


class AreaClipper:
    """An area of interest made ready to clip the tiles of one tile matrix set.

    Args:
        aoi: the area, in any CRS.
        tms: the tile matrix set of the tiles to clip.
        background: the RGB colour of JPEG pixels outside the area (the cache's background).

    Raises:
        InvalidAOIError: when the area lies outside the tile matrix set or cannot be projected.
    """

    def __init__(
        self,
        aoi: AreaOfInterest,
        tms: TileMatrixSet,
        *,
        background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    ) -> None:
        self.tms = tms
        self.background = background
        extent = tms.bbox
        self.area = aoi.project(
            tms_crs(tms), clip_to=(extent.left, extent.bottom, extent.right, extent.top)
        )
        shapely.prepare(self.area)

    def relation(self, tile: Tile) -> TileRelation:
        """Whether ``tile`` is wholly inside the area, wholly outside it, or cut by it.

        Raises:
            InvalidTileError: when ``tile`` is outside the tile matrix set.
        """
        check_tile_in_matrix(self.tms, tile)
        bounds = self.tms.xy_bounds(morecantile.Tile(tile.x, tile.y, tile.z))
        cell = box(bounds.left, bounds.bottom, bounds.right, bounds.top)
        if self.area.contains(cell):
            return TileRelation.INSIDE
        if not self.area.intersects(cell):
            return TileRelation.OUTSIDE
        return TileRelation.CUT

    def mask(self, tile: Tile, width: int, height: int) -> NDArray[np.bool_]:
        """Which pixels of ``tile``, drawn ``width`` x ``height`` pixels, have their centre in the
        area (rows from the top)."""
        b = self.tms.xy_bounds(morecantile.Tile(tile.x, tile.y, tile.z))
        # a pixel's margin around the tile: the rasteriser sees every edge near the tile
        dx, dy = (b.right - b.left) / width, (b.top - b.bottom) / height
        part = shapely.clip_by_rect(self.area, b.left - dx, b.bottom - dy, b.right + dx, b.top + dy)
        if part.is_empty:
            return np.zeros((height, width), dtype=np.bool_)
        # rasterio's from_bounds would do the same through affine's deprecated `*`
        transform = Affine(dx, 0.0, b.left, 0.0, -dy, b.top)
        inside: NDArray[np.bool_] = geometry_mask(
            [part], out_shape=(height, width), transform=transform, invert=True
        )
        return inside

    def clip(self, tile: Tile, data: bytes, tile_format: TileFormat) -> bytes | None:
        """``data`` clipped to the area: unchanged when wholly inside, None when outside.

        Raises:
            InvalidTileError: when ``tile`` is outside the tile matrix set.
            UnsupportedTileFormatError: for vector tiles.
            InvalidTileDataError: when ``data`` is not a valid image of ``tile_format`` (only
                the magic bytes are checked for tiles wholly inside or outside).
        """
        check_claimed_format(data, tile_format, tile)
        relation = self.relation(tile)
        if relation is TileRelation.INSIDE:
            return data
        if relation is TileRelation.OUTSIDE:
            return None
        return self.clip_cut(tile, data, tile_format)

    def clip_cut(self, tile: Tile, data: bytes, tile_format: TileFormat) -> bytes | None:
        """``data`` clipped to the area, for a tile known to be cut by its boundary (as
        :meth:`relation` says; an exporter that classified its tiles a batch at once does not ask
        again): unchanged when every pixel centre is inside, None when none is.

        Raises:
            UnsupportedTileFormatError: for vector tiles.
            InvalidTileDataError: when ``data`` is not a valid image of ``tile_format``.
        """
        image = decode(data, tile_format, tile)
        inside = self.mask(tile, image.width, image.height)
        if inside.all():
            return data
        if not inside.any():
            return None
        if tile_format is TileFormat.JPEG:
            pixels = np.array(image.convert("RGB"))
            pixels[~inside] = self.background
            return encode(Image.fromarray(pixels), tile_format)
        if tile_format is TileFormat.PNG and image.mode == "P":
            clipped = _clip_palette(image, inside)
            if clipped is not None:
                return clipped
        pixels = np.array(image.convert("RGBA"))
        pixels[~inside] = 0
        return encode(Image.fromarray(pixels), tile_format)


def _clip_palette(image: Image.Image, inside: NDArray[np.bool_]) -> bytes | None:
    """A palette PNG clipped in its own mode: pixels outside point to one more palette entry,
    black and fully transparent (``tRNS``), the others keep their index. Pixel for pixel what
    the RGBA path gives, at a quarter of the bytes to encode (rendered basemaps are mostly
    palette PNGs). None when the palette is full (the caller clips in RGBA)."""
    palette = image.getpalette("RGB")
    if palette is None:
        return None
    entries = len(palette) // 3
    if entries >= 256:
        return None
    transparency = image.info.get("transparency")
    if isinstance(transparency, bytes):
        alphas = list(transparency[:entries]) + [255] * (entries - len(transparency))
    elif isinstance(transparency, int):
        alphas = [0 if i == transparency else 255 for i in range(entries)]
    elif transparency is None:
        alphas = [255] * entries
    else:
        return None
    indices = np.array(image, dtype=np.uint8)
    indices[~inside] = entries
    clipped = Image.fromarray(indices, mode="P")
    clipped.putpalette([*palette, 0, 0, 0], rawmode="RGB")
    out = io.BytesIO()
    clipped.save(out, "PNG", transparency=bytes([*alphas, 0]))
    return out.getvalue()


def clip_tile(
    tile: Tile,
    tms: TileMatrixSet,
    aoi: AreaOfInterest,
    data: bytes,
    tile_format: TileFormat,
    *,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
) -> bytes | None:
    """One tile clipped to ``aoi`` (see :class:`AreaClipper`, which projects the area once for
    many tiles).

    Raises:
        InvalidAOIError: when the area lies outside the tile matrix set.
        InvalidTileError: when ``tile`` is outside the tile matrix set.
        UnsupportedTileFormatError: for vector tiles.
        InvalidTileDataError: when ``data`` is not a valid image of ``tile_format``.
    """
    return AreaClipper(aoi, tms, background=background).clip(tile, data, tile_format)
