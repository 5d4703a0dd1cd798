"""The sample web map's source files, built from a real OpenStreetMap extract.

:func:`build_sample_sources` turns an ``.osm.pbf`` extract (the sample uses Helsinki's) into the
files ``offmaps.sample.webmap`` assembles into a data folder:

- real OSM data: the sites (street furniture nodes), the streets (``highway=*`` ways), the
  buildings vector tiles and the raster basemap rendered from the extract with Mapnik
  (:mod:`offmaps.sample.render`, also behind ``scripts/render_osm.py``);
- synthetic data, made over the real sites with seeded generators: the inspections table, the
  sites' condition and last inspection date, and the site photos.

Map data © OpenStreetMap contributors, ODbL. Mapnik (``offmaps[render]``), pyogrio and Pillow are
imported only when a build runs.
"""

from offmaps.sample.sources import (
    ATTRIBUTION,
    BASEMAP_ZOOMS,
    BUILDINGS_ZOOMS,
    Progress,
    SampleSources,
    build_sample_sources,
)

__all__ = [
    "ATTRIBUTION",
    "BASEMAP_ZOOMS",
    "BUILDINGS_ZOOMS",
    "Progress",
    "SampleSources",
    "build_sample_sources",
]
