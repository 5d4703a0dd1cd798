"""Tile cover benchmark: offmaps vs supermercado 0.3.0, Natural Earth countries, z0-16.

For every country of world-atlas' 50m Natural Earth set (Antarctica aside: a pole-circling ring
that supermercado cannot read), and every level 0-16 where supermercado's raster stays under a
size it can hold (see ``MAX_TILES``), both count the covering tiles in this process:

* offmaps: ``tile_cover(aoi, WebMercatorQuad, [z]).level(z).count`` (spans, no tile list);
* supermercado: ``burntiles.burn(features, z)``, the engine of ``supermercado burn`` (rasterises
  with GDAL's all-touched rule and lists every tile).

It prints whether the counts agree and, where they differ, checks each differing tile against the
exact geometry: supermercado's rasteriser adds tiles that do not touch the polygon (about 100 m
away) and misses some small islands; Russia and Fiji are given to supermercado as our split parts,
or it turns them into world-wide bands. Then it times offmaps alone on z0-20 of the largest
countries.

Run: ``.venv/bin/python bench/tile_cover.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import morecantile
import pyogrio
import shapely
from shapely.geometry import box
from supermercado import burntiles

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import machine

from offmaps.tiling import AOIRepairedWarning, AreaOfInterest, get_tms, tile_cover, tms_crs
from offmaps.types import Tile, ZoomRange

ROOT = Path(__file__).resolve().parents[1]
TMS = get_tms("WebMercatorQuad")
MAX_TILES = 3_000_000  # supermercado lists and rasterises every tile: skip pairs above this


def countries(data: Path) -> list[tuple[str, shapely.Geometry]]:
    meta, _, geometries, fields = pyogrio.raw.read(
        data / "world-atlas" / "countries-50m.json", layer="countries"
    )
    names = fields[list(meta["fields"]).index("name")]
    return [(str(n), shapely.from_wkb(g)) for n, g in zip(names, geometries, strict=True)]


def burn(geometry: shapely.Geometry, z: int) -> set[Tile]:
    features = [
        {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(part)}
        for part in shapely.get_parts(geometry)
    ]
    return {Tile(int(x), int(y), int(zz)) for x, y, zz in burntiles.burn(features, z)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--maxzoom", type=int, default=16)
    args = parser.parse_args()
    warnings.simplefilter("ignore", AOIRepairedWarning)
    warnings.simplefilter("ignore", FutureWarning)  # mercantile's, inside supermercado
    print(f"Machine: {machine()}")
    ours_s = theirs_s = 0.0
    pairs = equal = skipped = 0
    only_theirs_not_touching = only_ours_touching = 0
    total_tiles = 0
    for name, geometry in countries(args.data):
        if name == "Antarctica":
            continue
        aoi = AreaOfInterest.from_geometry(geometry)
        projected = aoi.project(tms_crs(TMS))
        for z in range(args.maxzoom + 1):
            started = time.perf_counter()
            ours_count = tile_cover(aoi, TMS, [z]).level(z).count
            ours_time = time.perf_counter() - started
            if ours_count > MAX_TILES:
                skipped += 1
                continue
            started = time.perf_counter()
            theirs = burn(aoi.geometry, z)
            theirs_s += time.perf_counter() - started
            ours_s += ours_time
            pairs += 1
            total_tiles += ours_count
            if ours_count == len(theirs):
                ours_set = set(tile_cover(aoi, TMS, [z]))
                if ours_set == theirs:
                    equal += 1
                    continue
            ours_set = set(tile_cover(aoi, TMS, [z]))
            for tile in ours_set ^ theirs:
                b = TMS.xy_bounds(morecantile.Tile(*tile))
                touches = projected.intersection(box(b.left, b.bottom, b.right, b.top)).area > 0
                if tile in ours_set and touches:
                    only_ours_touching += 1
                elif tile in theirs and not touches:
                    only_theirs_not_touching += 1
                else:
                    print(f"offmaps is wrong: {name} {tile} touches={touches}")
                    return 1
    print(
        f"(country, zoom) pairs compared: {pairs:,} ({total_tiles:,} tiles); "
        f"skipped {skipped} pairs over {MAX_TILES:,} tiles"
    )
    print(f"identical tile sets: {equal:,} of {pairs:,}")
    print(
        f"differences, all checked against the exact geometry: {only_theirs_not_touching} tiles "
        f"supermercado adds that do not touch the country, {only_ours_touching} touching tiles "
        "it misses"
    )
    print(
        f"time: offmaps {ours_s:.2f} s, supermercado {theirs_s:.2f} s, "
        f"offmaps is {theirs_s / ours_s:.1f}x faster"
    )
    print("\noffmaps alone, z0-20 (counting without listing):")
    named = dict(countries(args.data))
    for name in ("Russia", "Canada", "United States of America", "Finland", "Fiji"):
        started = time.perf_counter()
        total = tile_cover(AreaOfInterest.from_geometry(named[name]), TMS, ZoomRange(0, 20)).total
        print(f"  {name}: {total:,} tiles in {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
