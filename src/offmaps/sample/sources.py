"""Build the source files of the sample web map from an OpenStreetMap extract.

Real OpenStreetMap data: the sites (street furniture nodes: benches, waste baskets, fire
hydrants, street lamps...), the streets (ways tagged ``highway=*``), the buildings of the vector
tile layer and everything drawn on the raster basemap. Synthetic, made for the sample over the
real sites with seeded generators so that every build is the same: the inspections table, the
sites' ``condition`` and ``last_inspected`` (taken from those inspections) and the site photos.

Map data © OpenStreetMap contributors, ODbL.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from offmaps.errors import DestinationExistsError, ImportFeaturesError
from offmaps.sample._buildings import write_building_tiles
from offmaps.sample._features import (
    SITES_LAYER,
    find_sites,
    write_sites,
    write_streets,
)
from offmaps.sample._osm import read_osm_layer
from offmaps.sample._photos import write_photos
from offmaps.sample.render import render_tiles
from offmaps.types import ZoomRange

__all__ = [
    "ATTRIBUTION",
    "BASEMAP_ZOOMS",
    "BUILDINGS_ZOOMS",
    "Progress",
    "SampleSources",
    "build_sample_sources",
]

ATTRIBUTION = "© OpenStreetMap contributors, ODbL"
"""The attribution of every file built from the extract."""

BASEMAP_ZOOMS = ZoomRange(12, 15)
"""Levels of the rendered raster basemap."""

BUILDINGS_ZOOMS = ZoomRange(13, 16)
"""Levels of the buildings vector tiles."""

Progress = Callable[[float, str], None]
"""Called with (fraction done from 0 to 1, what is being done)."""


@dataclass(frozen=True, slots=True)
class SampleSources:
    """The files :func:`build_sample_sources` made.

    Attributes:
        sites: a GeoPackage 1.2 with the point layer ``sites_layer`` (``osm_id``, ``kind``,
            ``name``, ``condition``, ``last_inspected``) and the table ``inspections``
            (``site_osm_id``, ``inspected_on``, ``inspector``, ``result``, ``notes``).
        sites_layer: the name of the sites layer in ``sites``.
        streets: a GeoPackage 1.2 with the line layer ``streets`` (``osm_id``, ``name``,
            ``highway``).
        photos_csv: a CSV with columns ``osm_id`` and ``file``, the JPEG photos beside it.
        basemap: an MBTiles archive of PNG tiles rendered with Mapnik, zooms 12 to 15.
        buildings: a PMTiles archive of gzipped Mapbox vector tiles, layer ``buildings``
            (``osm_id``, ``building``, ``name``), zooms 13 to 16.
    """

    sites: Path
    sites_layer: str
    streets: Path
    photos_csv: Path
    basemap: Path
    buildings: Path


def build_sample_sources(
    osm_path: Path, out_dir: Path, *, progress: Progress | None = None
) -> SampleSources:
    """Build the sample's sources from the OSM extract ``osm_path`` into ``out_dir``.

    Args:
        osm_path: an ``.osm.pbf`` extract (the sample uses Helsinki's).
        out_dir: where the files go; created, and it must be empty if it exists.
        progress: called with fractions from 0 to 1 as the steps go.

    Raises:
        ImportFeaturesError: when ``osm_path`` is missing, not OSM data GDAL can read, or has no
            sites.
        DestinationExistsError: when ``out_dir`` exists and is not empty.
        ImportError: when Mapnik (``offmaps[render]``) or Pillow is not installed.

    On any failure what was written is removed again (``out_dir`` too, if it was created here).
    """
    report = progress or (lambda fraction, message: None)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DestinationExistsError(f"{out_dir} exists and is not empty", path=out_dir)
    if not osm_path.is_file():
        raise ImportFeaturesError(f"{osm_path}: no such OpenStreetMap extract")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        sources = _build(osm_path, out_dir, report)
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        else:
            for entry in list(out_dir.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        raise
    report(1.0, "sample sources ready")
    return sources


def _build(osm_path: Path, out_dir: Path, report: Progress) -> SampleSources:
    report(0.0, "reading the OpenStreetMap extract")
    points = read_osm_layer(osm_path, "points")
    sites = find_sites(points)
    if not sites:
        raise ImportFeaturesError(f"{osm_path}: has no street furniture nodes to use as sites")
    report(0.05, f"writing {len(sites)} sites and their inspections")
    sites_path = out_dir / "sites.gpkg"
    write_sites(sites_path, sites)
    report(0.1, "writing streets")
    streets_path = out_dir / "streets.gpkg"
    write_streets(streets_path, read_osm_layer(osm_path, "lines"))
    report(0.15, "drawing site photos")
    photos_csv = write_photos(out_dir / "photos", sites)
    report(0.2, "rendering the basemap")
    basemap = out_dir / "basemap.mbtiles"

    def rendered(done: int, total: int) -> None:
        report(0.2 + 0.6 * done / max(total, 1), f"rendering the basemap ({done}/{total} tiles)")

    # one process: a fork from a server or test process that may run threads is not safe
    render_tiles(
        osm_path,
        basemap,
        BASEMAP_ZOOMS,
        workers=1,
        name="OpenStreetMap (sample)",
        attribution=ATTRIBUTION,
        progress=rendered,
    )
    report(0.8, "making the buildings vector tiles")
    buildings = out_dir / "buildings.pmtiles"
    areas = read_osm_layer(osm_path, "multipolygons")
    if not write_building_tiles(buildings, areas, BUILDINGS_ZOOMS, attribution=ATTRIBUTION):
        raise ImportFeaturesError(f"{osm_path}: has no buildings")
    return SampleSources(
        sites=sites_path,
        sites_layer=SITES_LAYER,
        streets=streets_path,
        photos_csv=photos_csv,
        basemap=basemap,
        buildings=buildings,
    )
