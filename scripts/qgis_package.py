"""QGIS opens and renders an offline package: run with Debian's python3 (QGIS 3.22).

    /usr/bin/python3 scripts/qgis_package.py PACKAGE_DIR OUT.png

Loads every GeoPackage layer and table and every MBTiles archive of the package's manifest with
QGIS's own providers (ogr, gdal, vector tiles), renders the map layers to a PNG, and prints one
line per layer. Exits non-zero if a layer does not load or the rendering is blank. QGIS 3.22
cannot open PMTiles (its GDAL is 3.6): those are reported and skipped.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
    QgsVectorTileLayer,
)
from qgis.PyQt.QtCore import QSize


def _load(folder: Path, entry: dict) -> object | None:
    path = folder / entry["file"]
    kind = entry["kind"]
    if kind in ("feature", "table"):
        return QgsVectorLayer(f"{path}|layername={entry['layer']}", entry["id"], "ogr")
    if path.suffix == ".pmtiles":
        return None
    if kind == "raster_tile":
        return QgsRasterLayer(str(path), entry["id"], "gdal")
    return QgsVectorTileLayer(f"type=mbtiles&url={path}", entry["id"])


def main(folder: Path, png: Path) -> int:
    manifest = json.loads((folder / "package.json").read_text())
    app = QgsApplication([], False)
    app.initQgis()
    failures = 0
    drawn = []
    try:
        for entry in [*manifest["layers"], *manifest["tables"]]:
            if entry.get("file") is None:
                print(f"skip {entry['id']}: {entry['kind']}, not in the package")
                continue
            layer = _load(folder, entry)
            if layer is None:
                print(f"skip {entry['id']}: PMTiles, which QGIS 3.22 cannot open")
                continue
            if not layer.isValid():
                print(f"FAIL {entry['id']}: QGIS cannot open {entry['file']}")
                failures += 1
                continue
            count = layer.featureCount() if isinstance(layer, QgsVectorLayer) else None
            what = f"{count} features" if count is not None else type(layer).__name__
            print(f"ok   {entry['id']}: {what} from {entry['file']}")
            QgsProject.instance().addMapLayer(layer)
            if entry["kind"] != "table":
                drawn.append(layer)
        settings = QgsMapSettings()
        settings.setLayers(list(reversed(drawn)))  # the manifest lists bottom first
        settings.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
        extent = QgsRectangle()
        for layer in drawn:
            if isinstance(layer, QgsVectorLayer):
                extent.combineExtentWith(settings.layerExtentToOutputExtent(layer, layer.extent()))
        settings.setExtent(extent if not extent.isEmpty() else settings.fullExtent())
        settings.setOutputSize(QSize(512, 512))
        job = QgsMapRendererSequentialJob(settings)
        job.start()
        job.waitForFinished()
        image = job.renderedImage()
        image.save(str(png))
        colours = {image.pixel(x, y) for x in range(0, 512, 8) for y in range(0, 512, 8)}
        print(f"rendered {len(drawn)} layers to {png}: {len(colours)} colours")
        if len(colours) < 3:
            print("FAIL the rendering is blank")
            failures += 1
    finally:
        app.exitQgis()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
