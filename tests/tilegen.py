"""Real tiles for tests: images drawn with Pillow, vector tiles encoded with mapbox-vector-tile."""

from __future__ import annotations

import gzip
import io

import mapbox_vector_tile
from PIL import Image, ImageDraw

from offmaps.types import Tile, TileCompression, TileFormat

__all__ = ["make_tile", "sample_tiles"]

_PIL_FORMATS = {TileFormat.PNG: "PNG", TileFormat.JPEG: "JPEG", TileFormat.WEBP: "WEBP"}


def make_tile(
    tile: Tile,
    tile_format: TileFormat,
    compression: TileCompression = TileCompression.NONE,
    *,
    size: int = 64,
) -> bytes:
    """A small tile whose content depends on its key, so that a misplaced tile is noticed."""
    if tile_format is TileFormat.MVT:
        data: bytes = mapbox_vector_tile.encode(
            [
                {
                    "name": "points",
                    "features": [
                        {
                            "geometry": f"POINT({tile.x % 4096} {tile.y % 4096})",
                            "properties": {"z": tile.z, "x": tile.x, "y": tile.y},
                        }
                    ],
                }
            ]
        )
        return gzip.compress(data, mtime=0) if compression is TileCompression.GZIP else data
    image = Image.new("RGB", (size, size), ((tile.x * 37) % 256, (tile.y * 59) % 256, tile.z * 11))
    draw = ImageDraw.Draw(image)
    draw.text((2, 2), f"{tile.z}/{tile.x}/{tile.y}", fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format=_PIL_FORMATS[tile_format])
    return out.getvalue()


def sample_tiles(
    tile_format: TileFormat,
    compression: TileCompression = TileCompression.NONE,
    *,
    maxzoom: int = 3,
    duplicate: bool = True,
) -> dict[Tile, bytes]:
    """Every tile of levels 0..maxzoom over a small area, with a few byte-identical duplicates."""
    tiles: dict[Tile, bytes] = {}
    for z in range(maxzoom + 1):
        n = 2**z
        for x in range(min(n, 3)):
            for y in range(min(n, 3)):
                tiles[Tile(x, y, z)] = make_tile(Tile(x, y, z), tile_format, compression)
    if duplicate and maxzoom >= 2:
        blank = make_tile(Tile(0, 0, 0), tile_format, compression)
        tiles[Tile(3, 3, 2)] = blank
        tiles[Tile(3, 2, 2)] = blank
    return tiles
