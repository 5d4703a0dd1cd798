"""Feature paging benchmark: offmaps vs pygeoapi (OGC API Features), same rows, same run.

1. Writes the points, lines and multipolygons of the OpenStreetMap extract of central Helsinki
   to a GeoPackage with pyogrio (once, kept in bench/out/; multipolygons whose rings GDAL cannot
   close, 11 of 1,095, are left out), and imports its three layers into a fresh offmaps data
   folder with ``offmaps import features`` (service ``helsinki``).
2. Serves them on loopback with ``offmaps serve --workers 2`` (uvicorn), and the source
   GeoPackage with pygeoapi 0.21 (its SQLiteGPKG provider, Flask under gunicorn, 2 sync workers).
   That provider needs SQLite's SpatiaLite extension (Debian ``libsqlite3-mod-spatialite``), and
   this venv's sqlite3 module cannot load extensions, so pygeoapi runs on ``pysqlite3``.
3. One client pages through each whole collection with httpx (``limit=1000``, following ``next``
   links, GeoJSON), checks that both servers return the same features (count and OSM ids), then
   times alternating passes and prints features/s, pages/s and the ratio; and, as a ceiling
   without HTTP or JSON, how fast pyogrio reads the same layer from offmaps' GeoPackage.

Run: ``.venv/bin/python bench/serve_features.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyogrio.raw
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _http import free_port, publish_map, serving
from _measure import machine

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
WORK = OUT / "serve-features"
BIN = Path(sys.executable).parent
LAYERS = {"points": "Point", "lines": "LineString", "multipolygons": "MultiPolygon"}
SERVICE = "helsinki"
PAGE = 1000
GEOJSON = {"Accept": "application/geo+json"}

PYGEOAPI_YAML = """\
server:
  bind: {{host: 127.0.0.1, port: {port}}}
  url: http://127.0.0.1:{port}
  mimetype: application/json; charset=UTF-8
  encoding: utf-8
  languages: [en-US]
  limits: {{default_items: 10, max_items: 10000}}
  map: {{url: "https://tile.openstreetmap.org/{{z}}/{{x}}/{{y}}.png", attribution: OpenStreetMap}}
logging: {{level: ERROR}}
metadata:
  identification:
    title: offmaps bench
    description: OpenStreetMap, central Helsinki
    keywords: [osm]
    url: http://127.0.0.1
    terms_of_service: https://opendatacommons.org/licenses/odbl/
  license: {{name: ODbL, url: "https://opendatacommons.org/licenses/odbl/"}}
  provider: {{name: offmaps bench, url: "http://127.0.0.1"}}
  contact: {{name: offmaps bench}}
resources:
{resources}"""

PYGEOAPI_RESOURCE = """\
  {layer}:
    type: collection
    title: {layer}
    description: OpenStreetMap {layer}
    keywords: [osm]
    extents:
      spatial: {{bbox: [24.92, 60.16, 24.96, 60.18], crs: "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}}
    providers:
      - type: feature
        name: SQLiteGPKG
        data: {data}
        id_field: fid
        table: {layer}
"""

# pygeoapi's SQLiteGPKG provider loads SpatiaLite; this interpreter's sqlite3 cannot load
# extensions, pysqlite3 (same DB-API) can
SQLITE_SHIM = """\
import sys

import pysqlite3
import pysqlite3.dbapi2

sys.modules["sqlite3"] = pysqlite3
sys.modules["sqlite3.dbapi2"] = pysqlite3.dbapi2
"""

PYGEOAPI_APP = SQLITE_SHIM + "\nfrom pygeoapi.flask_app import APP as application  # noqa: E402\n"

PYGEOAPI_OPENAPI = (
    SQLITE_SHIM
    + "\nfrom pygeoapi import cli  # noqa: E402\n\n"
    + "sys.argv = ['pygeoapi', 'openapi', 'generate', sys.argv[1], '--output-file', sys.argv[2]]\n"
    + "cli()\n"
)


@dataclass(frozen=True)
class Pass:
    """One walk through a whole collection."""

    features: int
    pages: int
    seconds: float
    osm_ids: frozenset[str]


def source_geopackage(data: Path) -> Path:
    """The GeoPackage of the OSM extract's three layers (written the first time)."""
    target = WORK / "helsinki-osm.gpkg"
    if target.exists():
        return target
    WORK.mkdir(parents=True, exist_ok=True)
    partial = target.with_name("partial.gpkg")
    partial.unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # GDAL on the extract's open rings
        for layer, geometry_type in LAYERS.items():
            meta, _, wkb, fields = pyogrio.raw.read(data / "osm" / "Helsinki.osm.pbf", layer=layer)
            shapes = shapely.from_wkb(wkb, on_invalid="ignore")
            keep = np.array([s is not None and not s.is_empty for s in shapes], dtype=bool)
            pyogrio.raw.write(
                partial,
                wkb[keep],
                [column[keep] for column in fields],
                meta["fields"],
                layer=layer,
                driver="GPKG",
                crs=meta["crs"],
                geometry_type=geometry_type,
                append=partial.exists(),
                layer_options=None if partial.exists() else {"VERSION": "1.2"},
            )
    partial.rename(target)
    return target


def offmaps_data(source: Path) -> tuple[Path, dict[str, str]]:
    """A fresh offmaps data folder with the three layers imported; collection id per layer."""
    folder = WORK / "offmaps-data"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    collections = {}
    for layer in LAYERS:
        done = subprocess.run(
            [
                *(BIN / "offmaps", "import", "features", source, "--layer", layer),
                *("--service", SERVICE, "--data", folder, "--json"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"offmaps import of {layer} failed:\n{done.stdout}\n{done.stderr}")
        collections[layer] = json.loads(done.stdout.strip().splitlines()[-1])["collection"]
    publish_map(
        folder,
        layers=[
            {
                "type": "feature",
                "id": layer,
                "title": layer,
                "service": SERVICE,
                "layer": collection.partition(".")[2],
            }
            for layer, collection in collections.items()
        ],
    )
    return folder, collections


def pygeoapi_app(source: Path, port: int) -> Path:
    """Write pygeoapi's configuration, OpenAPI document and WSGI module; return their folder."""
    where = WORK / "pygeoapi"
    where.mkdir(parents=True, exist_ok=True)
    resources = "".join(PYGEOAPI_RESOURCE.format(layer=layer, data=source) for layer in LAYERS)
    config = where / "pygeoapi.yml"
    config.write_text(PYGEOAPI_YAML.format(port=port, resources=resources))
    (where / "pygeoapi_app.py").write_text(PYGEOAPI_APP)
    (where / "openapi_generate.py").write_text(PYGEOAPI_OPENAPI)
    subprocess.run(
        [sys.executable, where / "openapi_generate.py", config, where / "openapi.yml"],
        check=True,
        capture_output=True,
    )
    return where


def page_through(client: httpx.Client, url: str) -> Pass:
    """Follow ``next`` links from ``url`` to the end of the collection."""
    started = time.perf_counter()
    features = pages = 0
    ids: set[str] = set()
    next_url: str | None = url
    while next_url is not None:
        response = client.get(next_url)
        if response.status_code != 200:
            raise RuntimeError(f"{next_url}: {response.status_code} {response.text[:300]}")
        body: dict[str, Any] = response.json()
        pages += 1
        features += len(body["features"])
        ids.update(str(f["properties"]["osm_id"]) for f in body["features"])
        next_url = next((link["href"] for link in body["links"] if link["rel"] == "next"), None)
    return Pass(features, pages, time.perf_counter() - started, frozenset(ids))


def ceiling(gpkg: Path, layer: str, repeat: int) -> float:
    """Features per second pyogrio reads from ``layer`` of ``gpkg`` (best of ``repeat``)."""
    best = float("inf")
    count = 0
    for _ in range(repeat):
        started = time.perf_counter()
        _, _, wkb, _ = pyogrio.raw.read(gpkg, layer=layer)
        best = min(best, time.perf_counter() - started)
        count = len(wkb)
    return count / best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--quick", action="store_true", help="1 measured pass: a smoke run")
    parser.add_argument("--passes", type=int, default=5, help="measured passes per collection")
    parser.add_argument("--peer-only", action="store_true", help="measure pygeoapi alone")
    args = parser.parse_args()
    passes = 1 if args.quick else args.passes
    names = ["pygeoapi"] if args.peer_only else ["offmaps", "pygeoapi"]
    print(f"Machine: {machine()}")

    source = source_geopackage(args.data)
    served, collections = (
        (source, {layer: layer for layer in LAYERS}) if args.peer_only else offmaps_data(source)
    )
    ports = {"offmaps": free_port(), "pygeoapi": free_port()}
    bases = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    pygeoapi_dir = pygeoapi_app(source, ports["pygeoapi"])
    items = {
        "offmaps": {
            layer: f"{bases['offmaps']}/collections/{cid}/items?limit={PAGE}"
            for layer, cid in collections.items()
        },
        "pygeoapi": {
            layer: f"{bases['pygeoapi']}/collections/{layer}/items?limit={PAGE}" for layer in LAYERS
        },
    }
    commands: dict[str, list[str | Path]] = {
        "offmaps": [
            *(BIN / "offmaps", "serve", "--data", served, "--port", str(ports["offmaps"])),
            *("--workers", "2"),
        ],
        "pygeoapi": [
            *(BIN / "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{ports['pygeoapi']}"),
            *("--chdir", pygeoapi_dir, "--log-level", "warning", "pygeoapi_app:application"),
        ],
    }
    env = {
        "PYGEOAPI_CONFIG": str(pygeoapi_dir / "pygeoapi.yml"),
        "PYGEOAPI_OPENAPI": str(pygeoapi_dir / "openapi.yml"),
    }
    timings: dict[tuple[str, str], list[Pass]] = {}
    with contextlib.ExitStack() as stack:
        for name in names:
            ready = items[name]["points"].replace(f"limit={PAGE}", "limit=1")
            stack.enter_context(serving(commands[name], ready, log=WORK / f"{name}.log", env=env))
        client = stack.enter_context(httpx.Client(headers=GEOJSON, timeout=60.0))
        for layer in LAYERS:
            # the warm-up pass of each also checks that both serve the same features
            warm = {name: page_through(client, items[name][layer]) for name in names}
            first = warm[names[0]]
            for name, other in warm.items():
                if other.features != first.features or other.osm_ids != first.osm_ids:
                    raise RuntimeError(
                        f"{layer}: {names[0]} {first.features} features, {name} "
                        f"{other.features}; OSM ids in one only: "
                        f"{len(first.osm_ids ^ other.osm_ids)}"
                    )
            print(f"{layer}: {first.features:,} features, same OSM ids from {' and '.join(names)}")
            for _ in range(passes):
                for name in names:
                    timings.setdefault((name, layer), []).append(
                        page_through(client, items[name][layer])
                    )

    store = source if args.peer_only else served / "features" / f"{SERVICE}.gpkg"
    print(f"limit={PAGE}, median of {passes} pass(es) per collection, one client, keep-alive")
    print(
        "| collection | server | features | features/s | pages/s | offmaps/pygeoapi "
        "| pyogrio read features/s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for layer in LAYERS:
        table = collections[layer].split(".", 1)[-1]
        read = ceiling(store, table, 3)
        median = {n: statistics.median(p.seconds for p in timings[n, layer]) for n in names}
        for name in names:
            done = timings[name, layer][0]
            ratio = "" if args.peer_only else f"{median['pygeoapi'] / median['offmaps']:.2f}x"
            print(
                f"| {layer} | {name} | {done.features:,} | {done.features / median[name]:,.0f} "
                f"| {done.pages / median[name]:.1f} | {ratio} | {read:,.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
