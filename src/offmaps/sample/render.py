"""Render raster map tiles from an OpenStreetMap extract with Mapnik.

The PBF is read with pyogrio (GDAL's OSM driver); land use, water, parks, buildings, roads and
railways are kept, projected to Web Mercator, styled like a plain street map and rendered as
256 px PNG tiles, in this process or in several worker processes, written with offmaps'
container writers. ``scripts/render_osm.py`` is the command line over :func:`render_tiles`.

Mapnik (the ``offmaps[render]`` extra) is imported only when tiles are rendered, so importing
this module does not need it.

The OSM data are © OpenStreetMap contributors (ODbL); the attribution is written into the
archive's metadata.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import morecantile
import numpy as np
import numpy.typing as npt
import pyproj
import shapely

from offmaps.containers import TilesetMetadata, open_writer
from offmaps.sample._osm import read_osm_layer
from offmaps.tiling import AreaOfInterest, get_tms, tile_cover
from offmaps.types import BBox, Tile, TileFormat, ZoomRange

__all__ = [
    "OSM_ATTRIBUTION",
    "TILE_SIZE",
    "RenderProgress",
    "RenderResult",
    "prepare",
    "render_tiles",
    "tiles_to_render",
]

OSM_ATTRIBUTION = "© OpenStreetMap contributors"
"""The attribution written into rendered archives by default."""

TILE_SIZE = 256
"""Width and height of a rendered tile, in pixels."""

RenderProgress = Callable[[int, int], None]
"""Called with (tiles done, tiles in all): once with 0 before the first tile, then per tile."""

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
_RAIL = {"rail", "tram", "light_rail", "subway"}

_STYLE = """<?xml version="1.0" encoding="utf-8"?>
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


@dataclass(frozen=True, slots=True)
class RenderResult:
    """What :func:`render_tiles` made.

    Attributes:
        tiles: the number of tiles written.
        seconds: the time spent rendering and writing them (preparing the data excluded).
        bounds: the WGS84 area rendered.
    """

    tiles: int
    seconds: float
    bounds: BBox


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
    """Split the PBF into styled layers as Web Mercator GeoJSON files in ``work``.

    Returns:
        The Mapnik XML style over those files, and the data's WGS84 bounds.

    Raises:
        ImportFeaturesError: when ``pbf`` is missing or not an OSM file GDAL can read.
    """
    to_mercator = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)
    layers: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("landuse", "green", "water", "waterways", "buildings", "rail", "roads")
    }
    bounds = [180.0, 90.0, -180.0, -90.0]

    def project(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x, y = to_mercator.transform(xy[:, 0], xy[:, 1])
        return np.column_stack((x, y))

    def add(kind: str, wkb: bytes, properties: dict[str, Any]) -> None:
        # the extract is not referentially complete: drop what does not make a valid shape
        geometry = shapely.from_wkb(wkb, on_invalid="ignore")
        if geometry is None or geometry.is_empty:
            return
        b = geometry.bounds
        bounds[0], bounds[1] = min(bounds[0], b[0]), min(bounds[1], b[1])
        bounds[2], bounds[3] = max(bounds[2], b[2]), max(bounds[3], b[3])
        layers[kind].append(
            {
                "type": "Feature",
                "properties": properties,
                "geometry": json.loads(shapely.to_geojson(shapely.transform(geometry, project))),
            }
        )

    areas = read_osm_layer(pbf, "multipolygons")
    for i, wkb in enumerate(areas.geometries):
        if wkb is None:
            continue
        natural, landuse = areas.value("natural", i), areas.value("landuse", i)
        leisure, building = areas.value("leisure", i), areas.value("building", i)
        if natural in WATER or landuse in WATER:
            add("water", wkb, {})
        elif building:
            add("buildings", wkb, {})
        elif leisure in GREEN or landuse in GREEN or natural in GREEN:
            add("green", wkb, {})
        elif landuse:
            add("landuse", wkb, {})
    lines = read_osm_layer(pbf, "lines")
    for i, wkb in enumerate(lines.geometries):
        if wkb is None:
            continue
        highway = lines.value("highway", i)
        if highway in ROAD_WIDTHS:
            add("roads", wkb, {"highway": highway})
        elif lines.value("railway", i) in _RAIL:
            add("rail", wkb, {})
        elif lines.value("waterway", i):
            add("waterways", wkb, {})
    paths = {}
    for kind, features in layers.items():
        path = work / f"{kind}.geojson"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        paths[kind] = path
    xml = _STYLE.format(
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


def tiles_to_render(bounds: BBox, zooms: ZoomRange) -> Iterator[Tile]:
    """Every WebMercatorQuad tile covering the WGS84 ``bounds`` at ``zooms``."""
    aoi = AreaOfInterest.from_bbox(*bounds)
    yield from tile_cover(aoi, get_tms("WebMercatorQuad"), zooms)


_MAPNIK_ENVIRONMENT = ("PROJ_LIB", "GDAL_DATA")


class _Renderer:
    """One Mapnik map loaded from the style, rendering tiles one at a time."""

    def __init__(self, xml: str) -> None:
        # the mapnik wheel points PROJ_LIB and GDAL_DATA at its own copies when imported; they
        # would leak into this process's GDAL/PROJ users and every tool it starts (GDAL 3.6's
        # ogr2ogr then fails: "proj_create: no database context specified")
        saved = {name: os.environ.get(name) for name in _MAPNIK_ENVIRONMENT}
        import mapnik  # noqa: PLC0415 - optional: the render extra

        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._mapnik: Any = mapnik
        self._map: Any = mapnik.Map(TILE_SIZE, TILE_SIZE)
        mapnik.load_map_from_string(self._map, xml)
        self._tms = get_tms("WebMercatorQuad")

    def render(self, tile: Tile) -> bytes:
        b = self._tms.xy_bounds(morecantile.Tile(tile.x, tile.y, tile.z))
        self._map.zoom_to_box(self._mapnik.Box2d(b.left, b.bottom, b.right, b.top))
        image = self._mapnik.Image(TILE_SIZE, TILE_SIZE)
        self._mapnik.render(self._map, image)
        data: bytes = image.to_string("png8:z=9")
        return data


_WORKER: _Renderer | None = None


def _init_worker(xml: str) -> None:
    global _WORKER  # noqa: PLW0603 - one map per worker process
    _WORKER = _Renderer(xml)


def _render_in_worker(tile: Tile) -> tuple[Tile, bytes]:
    """Render one tile in a worker process started with :func:`_init_worker`."""
    if _WORKER is None:
        raise RuntimeError("_render_in_worker runs in a worker started with _init_worker")
    return tile, _WORKER.render(tile)


def render_tiles(
    pbf: Path,
    out: str | Path,
    zooms: ZoomRange,
    *,
    bbox: BBox | None = None,
    workers: int = 1,
    name: str = "OpenStreetMap",
    attribution: str = OSM_ATTRIBUTION,
    progress: RenderProgress | None = None,
) -> RenderResult:
    """Render the PBF's map as PNG tiles into a new container at ``out``.

    Args:
        pbf: the OSM extract.
        out: the destination container, any location :func:`offmaps.containers.open_writer`
            takes (``helsinki.mbtiles``, ``tiles.pmtiles``, ``xyz:folder`` ...).
        zooms: the levels to render.
        bbox: the WGS84 area to render (default: the data's extent).
        workers: processes rendering in parallel; 1 renders in this process.
        name: the tile set's name.
        attribution: the attribution recorded in the container.
        progress: called with (tiles done, tiles in all).

    Raises:
        ImportFeaturesError: when ``pbf`` is missing or not an OSM file GDAL can read.
        ImportError: when Mapnik is not installed (``offmaps[render]``).
        ContainerError: when ``out`` cannot be written; nothing is left behind.
    """
    with TemporaryDirectory(prefix="render-osm-") as work:
        xml, data_bounds = prepare(pbf, Path(work))
        bounds = bbox or data_bounds
        tiles = list(tiles_to_render(bounds, zooms))
        meta = TilesetMetadata(
            tile_format=TileFormat.PNG,
            name=name,
            attribution=attribution,
            description="Rendered with Mapnik from an OpenStreetMap extract",
            bounds=bounds,
        )
        report = progress or (lambda done, total: None)
        started = time.perf_counter()
        report(0, len(tiles))
        with open_writer(out, meta) as writer:
            for done, (tile, data) in enumerate(_render(xml, tiles, workers), start=1):
                writer.write_tile(tile, data)
                report(done, len(tiles))
        elapsed = time.perf_counter() - started
    return RenderResult(len(tiles), elapsed, bounds)


def _render(xml: str, tiles: list[Tile], workers: int) -> Iterator[tuple[Tile, bytes]]:
    if workers <= 1:
        renderer = _Renderer(xml)
        for tile in tiles:
            yield tile, renderer.render(tile)
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(xml,)) as pool:
        yield from pool.imap_unordered(_render_in_worker, tiles, chunksize=16)
