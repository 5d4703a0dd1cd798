"""Render real raster map tiles from an OpenStreetMap extract with Mapnik.

The demo and the conversion benchmark need real-looking tiles: this script reads an OSM PBF with
pyogrio (GDAL's OSM driver), keeps land use, water, parks, buildings, roads and railways, projects
them to Web Mercator, styles them like a plain street map and renders 256 px PNG tiles with
Mapnik in several worker processes, writing them with offmaps' container writers. The work is
done by :func:`offmaps.sample.render.render_tiles`; this is its command line.

Usage::

    python scripts/render_osm.py --pbf data/osm/Helsinki.osm.pbf --zooms 12-17 \\
        --out helsinki.mbtiles [--bbox W,S,E,N] [--workers 2]

The OSM data are © OpenStreetMap contributors (ODbL); the attribution is written into the
archive's metadata.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from contextlib import ExitStack
from pathlib import Path

from offmaps.cli.progress import Advance, progress_bar
from offmaps.errors import OffmapsError
from offmaps.sample.render import OSM_ATTRIBUTION, render_tiles
from offmaps.types import BBox, ZoomRange


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pbf", type=Path, required=True, help="OSM PBF extract")
    parser.add_argument("--zooms", required=True, help="zoom range A-B")
    parser.add_argument("--out", required=True, help="destination container (any offmaps kind)")
    parser.add_argument("--bbox", help="W,S,E,N to render (default: the data's extent)")
    parser.add_argument("--workers", type=int, default=max(1, multiprocessing.cpu_count()))
    parser.add_argument("--name", default="OpenStreetMap")
    args = parser.parse_args(argv)
    low, _, high = args.zooms.partition("-")
    zooms = ZoomRange(int(low), int(high or low))
    if not args.pbf.is_file():
        print(f"render_osm: {args.pbf} does not exist (run `make data`)", file=sys.stderr)
        return 1
    bbox = BBox(*map(float, args.bbox.split(","))) if args.bbox else None
    with ExitStack() as stack:
        bar: list[Advance] = []

        def progress(done: int, total: int) -> None:
            if not bar:
                bar.append(stack.enter_context(progress_bar(f"rendering {total:,} tiles", total)))
            if done:
                bar[0](1)

        try:
            result = render_tiles(
                args.pbf,
                args.out,
                zooms,
                bbox=bbox,
                workers=args.workers,
                name=args.name,
                attribution=OSM_ATTRIBUTION,
                progress=progress,
            )
        except OffmapsError as exc:
            print(f"render_osm: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    elapsed = max(result.seconds, 1e-9)
    print(
        f"rendered {result.tiles:,} tiles to {args.out} in {elapsed:.1f} s "
        f"({result.tiles / elapsed:,.0f} tiles/s, {args.workers} workers)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
