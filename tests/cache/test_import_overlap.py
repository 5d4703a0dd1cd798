"""Collaborative caches: the rule when imported overlays overlap (docs/cache.md, "Import").

Merging, imports composite in the order they ran: the later import's pixels lie on top, its
semi-transparent ones over what the earlier left. Overwriting, the later import's tile replaces
the whole tile, transparency included.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from offmaps.cache.export import CacheTileReader
from offmaps.types import Tile
from tests.cache.test_import import SIZE, TILES, archive, basemap, new_cache, overlay, pixels, run

RED = overlay(slice(0, 16), (255, 0, 0))  # rows 0-15
GREEN = overlay(slice(8, 24), (0, 255, 0))  # rows 8-23: 8-15 overlap red


def imported(tmp_path: Path, *overlays: bytes, overwrite: bool = False) -> dict[Tile, bytes]:
    """The cache's tiles after importing each overlay over the basemap, in this order."""
    index, blobs = new_cache(tmp_path, {tile: basemap(tile) for tile in TILES})
    for number, data in enumerate(overlays):
        source = archive(tmp_path / f"{number}.mbtiles", dict.fromkeys(TILES, data))
        run(index, blobs, source, overwrite=overwrite)
    tiles = dict(CacheTileReader(index, blobs, "c").iter_tiles())
    index.close()
    return tiles


def test_merging_overlapping_overlays_puts_the_later_on_top(tmp_path: Path) -> None:
    (tmp_path / "rg").mkdir()
    (tmp_path / "gr").mkdir()
    red_then_green = imported(tmp_path / "rg", RED, GREEN)
    green_then_red = imported(tmp_path / "gr", GREEN, RED)
    for tile in TILES:
        first, second = pixels(red_then_green[tile]), pixels(green_then_red[tile])
        assert (first[8:16] == (0, 255, 0, 255)).all()  # green, imported later, on top
        assert (second[8:16] == (255, 0, 0, 255)).all()  # red on top
        for got in (first, second):  # outside the overlap the order does not matter
            assert (got[:8] == (255, 0, 0, 255)).all()
            assert (got[16:24] == (0, 255, 0, 255)).all()
            assert (got[24:] == pixels(basemap(tile))[24:]).all()


def test_semi_transparent_overlays_composite_in_import_order(tmp_path: Path) -> None:
    def veil(colour: tuple[int, int, int]) -> bytes:
        rgba = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)
        rgba[:] = (*colour, 128)
        out = io.BytesIO()
        Image.fromarray(rgba).save(out, "PNG")
        return out.getvalue()

    blue, yellow = veil((0, 0, 255)), veil((255, 255, 0))
    tiles = imported(tmp_path, blue, yellow)
    for tile in TILES:
        expected = Image.open(io.BytesIO(basemap(tile))).convert("RGBA")
        for layer in (blue, yellow):  # Porter-Duff "over", in the order imported
            expected = Image.alpha_composite(expected, Image.open(io.BytesIO(layer)))
        assert np.abs(pixels(tiles[tile]).astype(int) - np.asarray(expected)).max() <= 1


def test_overwriting_overlapping_overlays_keeps_the_later_whole(tmp_path: Path) -> None:
    tiles = imported(tmp_path, RED, GREEN, overwrite=True)
    assert tiles == dict.fromkeys(TILES, GREEN)  # byte for byte, transparency included
