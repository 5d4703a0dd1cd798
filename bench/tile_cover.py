"""Tile cover benchmark: offmaps vs supermercado 0.3.0, Natural Earth countries.

For every country of world-atlas' 50m Natural Earth set (Antarctica aside: a pole-circling ring
that supermercado cannot read), and every level where supermercado's raster stays under a size it
can hold (see ``--max-tiles``), both make the covering tiles in this process, like for like:

* tiles: offmaps ``tile_cover(aoi, WebMercatorQuad, [z]).level(z).to_array()`` against
  supermercado's ``burntiles.burn(features, z)`` (the engine of ``supermercado burn``: rasterises
  with GDAL's all-touched rule), both returning an ``(n, 3)`` numpy array of x, y, z. Each timer
  holds the call alone: supermercado's GeoJSON features are built before it, and nothing turns
  tiles into Python objects inside either timer.
* counts: offmaps ``.level(z).count`` (sums row spans, no tile list). supermercado cannot count
  without listing, so its count is the same ``burn`` (timed above); the count row says so.

The two sides alternate which goes first from one pair to the next. Outside the timers the tile
sets are compared (sorted tile keys) and, where they differ, each differing tile is checked
against the exact geometry: supermercado's rasteriser adds tiles that do not touch the polygon
(about 100 m away) and misses some small islands; Russia and Fiji are given to supermercado as our
split parts, or it turns them into world-wide bands. Then offmaps alone counts z0-20 of the
largest countries.

The default scope, levels 0-14, runs in about a minute; ``--full`` is the scope of the first run
(levels 0-16, about 6 minutes, most of it the exactness checks on 197 million tiles).

Run: ``.venv/bin/python bench/tile_cover.py [--full]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import morecantile
import numpy as np
import pyogrio
import shapely
from numpy.typing import NDArray
from shapely.geometry import box
from supermercado import burntiles

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import machine

from offmaps.tiling import AOIRepairedWarning, AreaOfInterest, get_tms, tile_cover, tms_crs
from offmaps.types import Tile, ZoomRange

ROOT = Path(__file__).resolve().parents[1]
TMS = get_tms("WebMercatorQuad")
DEFAULT_MAXZOOM = 14
FULL_MAXZOOM = 16
MAX_TILES = 3_000_000  # supermercado lists and rasterises every tile: skip pairs above this


def countries(data: Path) -> list[tuple[str, shapely.Geometry]]:
    meta, _, geometries, fields = pyogrio.raw.read(
        data / "world-atlas" / "countries-50m.json", layer="countries"
    )
    names = fields[list(meta["fields"]).index("name")]
    return [(str(n), shapely.from_wkb(g)) for n, g in zip(names, geometries, strict=True)]


def features(geometry: shapely.Geometry) -> list[dict[str, Any]]:
    """supermercado's input: one GeoJSON polygon feature per part."""
    return [
        {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(part)}
        for part in shapely.get_parts(geometry)
    ]


def keys(tiles: NDArray[np.int64], z: int) -> NDArray[np.int64]:
    """Sorted unique keys ``y * 2**z + x`` of an ``(n, 3)`` tile array."""
    return np.unique(tiles[:, 1].astype(np.int64) * (1 << z) + tiles[:, 0].astype(np.int64))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument(
        "--maxzoom", type=int, help=f"deepest level compared (default {DEFAULT_MAXZOOM})"
    )
    parser.add_argument(
        "--full", action="store_true", help=f"levels 0-{FULL_MAXZOOM}, the first run's scope"
    )
    parser.add_argument("--max-tiles", type=int, default=MAX_TILES)
    args = parser.parse_args()
    maxzoom = args.maxzoom if args.maxzoom is not None else DEFAULT_MAXZOOM
    if args.full:
        maxzoom = FULL_MAXZOOM
    warnings.simplefilter("ignore", AOIRepairedWarning)
    warnings.simplefilter("ignore", FutureWarning)  # mercantile's, inside supermercado
    print(f"Machine: {machine()}")
    print(f"Scope: levels 0-{maxzoom}, pairs over {args.max_tiles:,} tiles skipped")
    # per level: pairs, tiles, offmaps count s, offmaps array s, supermercado s
    per_level = {z: [0, 0, 0.0, 0.0, 0.0] for z in range(maxzoom + 1)}
    pairs = equal = skipped = 0
    only_theirs_not_touching = only_ours_touching = 0
    total_tiles = 0
    started_all = time.perf_counter()
    for name, geometry in countries(args.data):
        if name == "Antarctica":
            continue
        aoi = AreaOfInterest.from_geometry(geometry)
        projected = aoi.project(tms_crs(TMS))
        parts = features(aoi.geometry)
        for z in range(maxzoom + 1):
            started = time.perf_counter()
            ours_count = tile_cover(aoi, TMS, [z]).level(z).count
            count_time = time.perf_counter() - started
            if ours_count > args.max_tiles:
                skipped += 1
                continue
            # alternate which side goes first, so neither always runs on a warmer cache
            for side in ("ours", "theirs") if pairs % 2 == 0 else ("theirs", "ours"):
                started = time.perf_counter()
                if side == "ours":
                    ours = tile_cover(aoi, TMS, [z]).level(z).to_array()
                    per_level[z][3] += time.perf_counter() - started
                else:
                    theirs = burntiles.burn(parts, z)
                    per_level[z][4] += time.perf_counter() - started
            per_level[z][0] += 1
            per_level[z][1] += ours_count
            per_level[z][2] += count_time
            pairs += 1
            total_tiles += ours_count
            # the checks, outside the timers
            if len(ours) != ours_count:
                print(f"offmaps is wrong: {name} z{z} lists {len(ours)} of {ours_count} tiles")
                return 1
            ours_keys, theirs_keys = keys(ours, z), keys(theirs, z)
            if np.array_equal(ours_keys, theirs_keys):
                equal += 1
                continue
            ours_only = set(np.setdiff1d(ours_keys, theirs_keys).tolist())
            for key in np.setxor1d(ours_keys, theirs_keys).tolist():
                tile = Tile(key % (1 << z), key >> z, z)
                b = TMS.xy_bounds(morecantile.Tile(*tile))
                touches = projected.intersection(box(b.left, b.bottom, b.right, b.top)).area > 0
                if key in ours_only and touches:
                    only_ours_touching += 1
                elif key not in ours_only and not touches:
                    only_theirs_not_touching += 1
                else:
                    print(f"offmaps is wrong: {name} {tile} touches={touches}")
                    return 1
    print(
        f"(country, zoom) pairs compared: {pairs:,} ({total_tiles:,} tiles); "
        f"skipped {skipped} pairs over {args.max_tiles:,} tiles "
        f"(whole run {time.perf_counter() - started_all:.0f} s)"
    )
    print(f"identical tile sets: {equal:,} of {pairs:,}")
    print(
        f"differences, all checked against the exact geometry: {only_theirs_not_touching} tiles "
        f"supermercado adds that do not touch the country, {only_ours_touching} touching tiles "
        "it misses"
    )
    print(
        "\n| levels | pairs | tiles | offmaps count s | offmaps tiles s | supermercado tiles s "
        "| ratio tiles | ratio count |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    groups = [(z, z) for z in range(maxzoom + 1) if z >= 9] + [(0, maxzoom)]
    groups.insert(0, (0, min(8, maxzoom)))
    for lo, hi in groups:
        rows = [per_level[z] for z in range(lo, hi + 1)]
        n, tiles, count_s, tiles_s, theirs_s = (sum(r[i] for r in rows) for i in range(5))
        label = f"**{lo}-{hi}**" if (lo, hi) == (0, maxzoom) else f"{lo}-{hi}" if lo < hi else lo
        print(
            f"| {label} | {n:,} | {tiles:,} | {count_s:.2f} | {tiles_s:.2f} | {theirs_s:.2f} "
            f"| {theirs_s / tiles_s:.2f}x | {theirs_s / count_s:.2f}x |"
        )
    print(
        "ratio = supermercado's seconds / offmaps' (above 1: offmaps faster); supermercado has no "
        "count but len(burn(...)), so both ratios divide the same burn time"
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
