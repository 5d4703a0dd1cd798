"""QGIS as a real client of a running offmaps server: run with Debian's python3 (QGIS 3.22).

    /usr/bin/python3 scripts/qgis_check.py http://127.0.0.1:8000

Opens every feature collection with QGIS's OAPIF provider and reads all its features, and opens
each raster and vector tile layer with QGIS's XYZ providers. Prints one line per layer and exits
non-zero if QGIS cannot open or read one. ``scripts/qgis_check.sh`` installs QGIS and starts a
server with the sample map first.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (
    QgsApplication,
    QgsRasterLayer,
    QgsVectorLayer,
    QgsVectorTileLayer,
    QgsWkbTypes,
)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def main(base: str) -> int:
    app = QgsApplication([], False)
    app.initQgis()
    failures = 0
    try:
        collections = [c["id"] for c in _get(f"{base}/collections")["collections"]]
        for cid in collections:
            layer = QgsVectorLayer(f"url='{base}' typename='{cid}'", cid, "OAPIF")
            if not layer.isValid():
                print(f"FAIL {cid}: QGIS's OAPIF provider cannot open it")
                failures += 1
                continue
            read = sum(1 for _ in layer.getFeatures())
            geometry = QgsWkbTypes.displayString(layer.wkbType())
            fields = ", ".join(layer.fields().names()[:6])
            print(f"ok   {cid}: {read} features read, {geometry}, fields {fields}")
            failures += read == 0
        for name, fmt, zmin, zmax in _tile_layers(base):
            url = f"{base}/tiles/{name}/{{z}}/{{x}}/{{y}}"
            source = f"type=xyz&url={url}&zmin={zmin}&zmax={zmax}"
            if fmt == "mvt":
                layer = QgsVectorTileLayer(source, name)
            else:
                layer = QgsRasterLayer(source, name, "wms")
            state = "ok  " if layer.isValid() else "FAIL"
            failures += not layer.isValid()
            print(f"{state} {name}: {fmt} tiles, z{zmin}-{zmax}, {type(layer).__name__}")
    finally:
        app.exitQgis()
    return 1 if failures else 0


def _tile_layers(base: str) -> list[tuple[str, str, int, int]]:
    # the sample map's tile layers
    found = []
    for name in ("basemap", "buildings", "helsinki-vt"):
        doc = _get(f"{base}/tiles/{name}/tilejson.json")
        fmt = "mvt" if doc.get("vector_layers") is not None else "png"
        found.append((name, fmt, int(doc["minzoom"]), int(doc["maxzoom"])))
    return found


if __name__ == "__main__":
    sys.exit(main(sys.argv[1].rstrip("/")))
