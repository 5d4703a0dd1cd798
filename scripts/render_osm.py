"""Render real raster map tiles from an OpenStreetMap extract with Mapnik.

The demo and the conversion benchmark need real-looking tiles: this script reads an OSM PBF with
pyogrio (GDAL's OSM driver), keeps land use, water, parks, buildings, roads and railways, projects
them to Web Mercator, styles them like a plain street map and renders 256 px PNG tiles with
Mapnik in several worker processes, writing them with offmaps' container writers.

Usage::

    python scripts/render_osm.py --pbf data/osm/Helsinki.osm.pbf --zooms 12-17 \\
        --out helsinki.mbtiles [--bbox W,S,E,N] [--workers 2]

The OSM data are © OpenStreetMap contributors (ODbL); the attribution is written into the
archive's metadata.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mapnik
import morecantile
import numpy as np
import pyogrio
import pyproj
import shapely

from offmaps.cli.progress import progress_bar
from offmaps.containers import TilesetMetadata, open_writer
from offmaps.tiling import AreaOfInterest, get_tms, tile_cover
from offmaps.types import BBox, Tile, TileFormat, ZoomRange

ATTRIBUTION = "© OpenStreetMap contributors"
TILE_SIZE = 256

# (layer in the PBF, output name, SQL-ish filter on attributes, geometry kind)
ROAD_WIDTHS = {
    "motorway": 6.0,
    "trunk": 5.5,
    "primary": 5.0,
    "secondary": 4.0,
    "tertiary": 3.5,
    "residential": 2.5,
    "unclassified": 2.5,
    "living_street": 2.0,
    "service": 1.5,
    "pedestrian": 2.0,
    "footway": 0.8,
    "cycleway": 0.8,
    "path": 0.7,
    "steps": 0.7,
}
GREEN = {
    "park",
    "garden",
    "grass",
    "forest",
    "meadow",
    "recreation_ground",
    "cemetery",
    "wood",
    "village_green",
    "playground",
    "pitch",
}
WATER = {"water", "basin", "reservoir", "bay"}

STYLE = """<?xml version="1.0" encoding="utf-8"?>
<Map srs="epsg:3857" background-color="#f2efe9">
  <Style name="landuse"><Rule><PolygonSymbolizer fill="#e6e1d8"/></Rule></Style>
  <Style name="green"><Rule><PolygonSymbolizer fill="#c8e6b4"/></Rule></Style>
  <Style name="water">
    <Rule><PolygonSymbolizer fill="#aad3df"/></Rule>
  </Style>
  <Style name="waterways"><Rule><LineSymbolizer stroke="#aad3df" stroke-width="2"/></Rule></Style>
  <Style name="buildings">
    <Rule>
      <PolygonSymbolizer fill="#d9d0c9"/>
      <LineSymbolizer stroke="#bfb3aa" stroke-width="0.5"/>
    </Rule>
  </Style>
  <Style name="rail">
    <Rule><LineSymbolizer stroke="#888888" stroke-width="1.2" stroke-dasharray="4,3"/></Rule>
  </Style>
  <Style name="road-casing">{casing}</Style>
  <Style name="road-fill">{fill}</Style>
  {layers}
</Map>
"""


def _road_rules(casing: bool) -> str:
    rules = []
    for kind, width in ROAD_WIDTHS.items():
        major = width >= 3.5
        color = "#9a8f86" if casing else ("#fcd6a4" if major else "#ffffff")
        w = width + 1.2 if casing else width
        rules.append(
            f"<Rule><Filter>[highway] = '{kind}'</Filter>"
            f'<LineSymbolizer stroke="{color}" stroke-width="{w}" stroke-linecap="round" '
            f'stroke-linejoin="round"/></Rule>'
        )
    return "".join(rules)


def _layer(name: str, styles: list[str], path: Path) -> str:
    style_refs = "".join(f"<StyleName>{s}</StyleName>" for s in styles)
    return (
        f'<Layer name="{name}" srs="epsg:3857">{style_refs}<Datasource>'
        f'<Parameter name="type">geojson</Parameter>'
        f'<Parameter name="file">{path}</Parameter></Datasource></Layer>'
    )


def prepare(pbf: Path, work: Path) -> tuple[str, BBox]:
    """Read the PBF, split it into styled layers as Web Mercator GeoJSON, return the Mapnik XML
    and the data's WGS84 bounds."""
    to_mercator = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)
    layers: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("landuse", "green", "water", "waterways", "buildings", "rail", "roads")
    }
    bounds = [180.0, 90.0, -180.0, -90.0]

    def add(kind: str, wkb: bytes, properties: dict[str, Any]) -> None:
        # the extract is not referentially complete: drop what does not make a valid shape
        geometry = shapely.from_wkb(wkb, on_invalid="ignore")
        if geometry is None or geometry.is_empty:
            return
        b = geometry.bounds
        bounds[0], bounds[1] = min(bounds[0], b[0]), min(bounds[1], b[1])
        bounds[2], bounds[3] = max(bounds[2], b[2]), max(bounds[3], b[3])
        projected = shapely.transform(
            geometry, lambda xy: np.column_stack(to_mercator.transform(xy[:, 0], xy[:, 1]))
        )
        layers[kind].append(
            {
                "type": "Feature",
                "properties": properties,
                "geometry": json.loads(shapely.to_geojson(projected)),
            }
        )

    with warnings.catch_warnings():
        # GDAL's OSM driver complains about relations whose members are missing from the extract
        warnings.simplefilter("ignore", RuntimeWarning)
        meta, _, geometries, fields = pyogrio.raw.read(pbf, layer="multipolygons")
    names = list(meta["fields"])
    column = {name: fields[i] for i, name in enumerate(names)}
    for i, wkb in enumerate(geometries):
        if wkb is None:
            continue
        natural, landuse = column["natural"][i], column["landuse"][i]
        leisure, building = column["leisure"][i], column["building"][i]
        if natural in WATER or landuse in WATER:
            add("water", wkb, {})
        elif building:
            add("buildings", wkb, {})
        elif leisure in GREEN or landuse in GREEN or natural in GREEN:
            add("green", wkb, {})
        elif landuse:
            add("landuse", wkb, {})
    meta, _, geometries, fields = pyogrio.raw.read(pbf, layer="lines")
    names = list(meta["fields"])
    column = {name: fields[i] for i, name in enumerate(names)}
    for i, wkb in enumerate(geometries):
        if wkb is None:
            continue
        highway, railway, waterway = (
            column["highway"][i],
            column["railway"][i],
            column["waterway"][i],
        )
        if highway in ROAD_WIDTHS:
            add("roads", wkb, {"highway": highway})
        elif railway in {"rail", "tram", "light_rail", "subway"}:
            add("rail", wkb, {})
        elif waterway:
            add("waterways", wkb, {})
    paths = {}
    for kind, features in layers.items():
        path = work / f"{kind}.geojson"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        paths[kind] = path
    xml = STYLE.format(
        casing=_road_rules(casing=True),
        fill=_road_rules(casing=False),
        layers="".join(
            [
                _layer("landuse", ["landuse"], paths["landuse"]),
                _layer("green", ["green"], paths["green"]),
                _layer("water", ["water"], paths["water"]),
                _layer("waterways", ["waterways"], paths["waterways"]),
                _layer("rail", ["rail"], paths["rail"]),
                _layer("road-casing", ["road-casing"], paths["roads"]),
                _layer("road-fill", ["road-fill"], paths["roads"]),
                _layer("buildings", ["buildings"], paths["buildings"]),
            ]
        ),
    )
    return xml, BBox(*bounds)


_MAP: Any = None
_TMS: morecantile.TileMatrixSet | None = None


def _init_worker(xml: str) -> None:
    global _MAP, _TMS  # noqa: PLW0603 - one map per worker process
    _MAP = mapnik.Map(TILE_SIZE, TILE_SIZE)
    mapnik.load_map_from_string(_MAP, xml)
    _TMS = get_tms("WebMercatorQuad")


def render_tile(tile: Tile) -> tuple[Tile, bytes]:
    """Render one tile in a worker process (after :func:`_init_worker`)."""
    if _TMS is None:
        raise RuntimeError("render_tile runs in a worker started with _init_worker")
    b = _TMS.xy_bounds(morecantile.Tile(tile.x, tile.y, tile.z))
    _MAP.zoom_to_box(mapnik.Box2d(b.left, b.bottom, b.right, b.top))
    image = mapnik.Image(TILE_SIZE, TILE_SIZE)
    mapnik.render(_MAP, image)
    data: bytes = image.to_string("png8:z=9")
    return tile, data


def tiles_to_render(bounds: BBox, zooms: ZoomRange) -> Iterator[Tile]:
    """Every tile covering ``bounds`` at ``zooms``."""
    aoi = AreaOfInterest.from_bbox(*bounds)
    yield from tile_cover(aoi, get_tms("WebMercatorQuad"), zooms)


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
    with tempfile.TemporaryDirectory(prefix="render-osm-") as work:
        xml, data_bounds = prepare(args.pbf, Path(work))
        bounds = BBox(*map(float, args.bbox.split(","))) if args.bbox else data_bounds
        tiles = list(tiles_to_render(bounds, zooms))
        meta = TilesetMetadata(
            tile_format=TileFormat.PNG,
            name=args.name,
            attribution=ATTRIBUTION,
            description="Rendered with Mapnik from an OpenStreetMap extract",
            bounds=bounds,
        )
        started = time.perf_counter()
        ctx = multiprocessing.get_context("fork")
        with (
            ctx.Pool(args.workers, initializer=_init_worker, initargs=(xml,)) as pool,
            open_writer(args.out, meta) as writer,
            progress_bar(f"rendering {len(tiles):,} tiles", len(tiles)) as advance,
        ):
            for tile, data in pool.imap_unordered(render_tile, tiles, chunksize=16):
                writer.write_tile(tile, data)
                advance(1)
        elapsed = time.perf_counter() - started
    print(
        f"rendered {len(tiles):,} tiles to {args.out} in {elapsed:.1f} s "
        f"({len(tiles) / elapsed:,.0f} tiles/s, {args.workers} workers)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
