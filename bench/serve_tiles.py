"""Tile serving benchmark: offmaps vs MapProxy 7 over HTTP, same tiles, same machine, same run.

1. Takes the real tiles rendered from the OpenStreetMap extract of central Helsinki that
   bench/convert.py renders (a TMS folder in bench/out/, rendered the first time), and stores
   them once as an MBTiles archive for offmaps.
2. Serves them on loopback with ``offmaps serve --workers 2`` (uvicorn) at
   ``/tiles/helsinki/{z}/{x}/{y}``, and with MapProxy's WSGI app under gunicorn (2 sync workers)
   reading the same TMS folder as a file cache, at its WMTS REST endpoint
   ``/wmts/osm/webmercator/{z}/{x}/{y}.png`` (its ``/tms/`` endpoint is off by one level);
   and MapProxy once more with 2 gthread workers of 4 threads, which keep connections alive.
3. Checks that both return the same bytes as the folder for 50 random tiles, then loads each with
   ``wrk -t2 -c8`` cycling through a fixed shuffled list of every tile: one warm-up run each,
   then alternating measured runs. Prints req/s, latency p50/p99, errors and the ratio.

Run: ``.venv/bin/python bench/serve_tiles.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import subprocess
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _http import WrkResult, free_port, publish_map, require_wrk, run_wrk, serving
from _measure import machine
from convert import MAPPROXY_YAML as CONVERT_YAML
from convert import source_cache

from offmaps.containers import open_reader
from offmaps.types import Tile

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
WORK = OUT / "serve-tiles"
BIN = Path(sys.executable).parent
SEED = 20261122
CHECKED = 50

# convert.py's cache and grid, served at the WMTS REST endpoint
MAPPROXY_YAML = CONVERT_YAML.replace(
    "services:\n  demo:\n", "services:\n  wmts:\n    restful: true\n    kvp: false\n"
)

MAPPROXY_APP = """\
from mapproxy.wsgiapp import make_wsgi_app

application = make_wsgi_app({config!r})
"""


def prepare(data: Path) -> tuple[Path, Path, list[Tile]]:
    """The TMS folder, the offmaps data folder holding it as MBTiles, and every tile in it."""
    folder, _ = source_cache(data)
    served = WORK / "offmaps-data"
    archive = served / "tiles" / "helsinki.mbtiles"
    if not archive.exists():
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_name("partial.mbtiles")
        partial.unlink(missing_ok=True)
        subprocess.run(
            [BIN / "offmaps", "tiles", "convert", f"tms:{folder}", str(partial)], check=True
        )
        partial.rename(archive)
    if not any((served / "webmaps").glob("*.json")):  # tiles are served through web maps
        layer = {
            "type": "raster_tile",
            "id": "helsinki",
            "title": "Helsinki",
            "service": "helsinki",
        }
        publish_map(served, basemap=[layer])
    with open_reader(str(archive)) as reader:
        tiles = [tile for tile, _ in reader.iter_tiles()]
    return folder, served, tiles


def mapproxy_app(folder: Path) -> Path:
    """Write MapProxy's configuration and WSGI module; return the folder holding them."""
    where = WORK / "mapproxy"
    where.mkdir(parents=True, exist_ok=True)
    config = where / "mapproxy.yaml"
    config.write_text(MAPPROXY_YAML.format(directory=folder))
    (where / "mapproxy_app.py").write_text(MAPPROXY_APP.format(config=str(config)))
    return where


def offmaps_path(tile: Tile) -> str:
    return f"/tiles/helsinki/{tile.z}/{tile.x}/{tile.y}"


def mapproxy_path(tile: Tile) -> str:
    # WMTS counts rows from the top like XYZ, and MapProxy's level z is z on GLOBAL_WEBMERCATOR
    return f"/wmts/osm/webmercator/{tile.z}/{tile.x}/{tile.y}.png"


def check_same_bytes(folder: Path, bases: dict[str, str], tiles: list[Tile]) -> None:
    """Every server returns the folder's bytes (rows flipped there: TMS) for a sample of tiles."""
    sample = random.Random(SEED + 1).sample(tiles, min(CHECKED, len(tiles)))
    with httpx.Client(timeout=10.0) as client:
        for tile in sample:
            row = 2**tile.z - 1 - tile.y
            expected = (folder / str(tile.z) / str(tile.x) / f"{row}.png").read_bytes()
            for name, base in bases.items():
                got = client.get(base + PATHS[name](tile))
                if got.status_code != 200:
                    raise RuntimeError(f"{tile}: {name} answered {got.status_code}")
                if got.content != expected:
                    raise RuntimeError(f"{tile}: {name} returned other bytes than the folder")
                if name == "offmaps" and "etag" not in got.headers:
                    raise RuntimeError(f"{tile}: offmaps sent no ETag")
    print(
        f"byte-identical to the folder from {' and '.join(bases)}: {len(sample)} of {len(sample)}"
    )


GTHREAD = "MapProxy gthread"
PATHS = {"offmaps": offmaps_path, "MapProxy": mapproxy_path, GTHREAD: mapproxy_path}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 each: a smoke run")
    parser.add_argument("--runs", type=int, default=3, help="measured runs of each server")
    parser.add_argument("--seconds", type=int, default=15, help="length of one wrk run")
    parser.add_argument("--peer-only", action="store_true", help="measure MapProxy alone")
    args = parser.parse_args()
    runs, seconds = (1, 3) if args.quick else (args.runs, args.seconds)
    require_wrk()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {machine()}")

    folder, served, tiles = prepare(args.data)
    order = tiles[:]
    random.Random(SEED).shuffle(order)
    mapproxy_dir = mapproxy_app(folder)
    ports = {name: free_port() for name in PATHS}
    commands: dict[str, list[str | Path]] = {
        "offmaps": [
            *(BIN / "offmaps", "serve", "--data", served, "--port", str(ports["offmaps"])),
            *("--workers", "2"),
        ],
        "MapProxy": [
            *(BIN / "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{ports['MapProxy']}"),
            *("--chdir", mapproxy_dir, "--log-level", "warning", "mapproxy_app:application"),
        ],
        # threads keep connections alive; whichever MapProxy setup is faster sets the ratio
        GTHREAD: [
            *(BIN / "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{ports[GTHREAD]}"),
            *("--worker-class", "gthread", "--threads", "4"),
            *("--chdir", mapproxy_dir, "--log-level", "warning", "mapproxy_app:application"),
        ],
    }
    names = ["MapProxy", GTHREAD] if args.peer_only else ["offmaps", "MapProxy", GTHREAD]
    bases = {name: f"http://127.0.0.1:{ports[name]}" for name in names}
    print(
        f"{len(tiles):,} tiles (z{min(t.z for t in tiles)}-{max(t.z for t in tiles)}), "
        f"wrk -t2 -c8 -d{seconds}s, {runs} measured run(s) each, alternating"
    )
    results: dict[str, list[WrkResult]] = {name: [] for name in names}
    with contextlib.ExitStack() as servers:
        for name in names:
            ready = bases[name] + PATHS[name](order[0])
            servers.enter_context(serving(commands[name], ready, log=WORK / f"{name}.log"))
        check_same_bytes(folder, bases, tiles)
        paths = {name: [PATHS[name](tile) for tile in order] for name in names}
        for name in names:
            warm = run_wrk(bases[name], paths[name], seconds=min(seconds, 5))
            print(f"{name} warm-up: {warm.requests_per_s:,.0f} req/s", flush=True)
        print("| server | req/s | p50 ms | p99 ms | non-2xx | socket errors |")
        print("|---|---:|---:|---:|---:|---:|")
        for run in range(runs):
            for name in names:
                result = run_wrk(bases[name], paths[name], seconds=seconds)
                results[name].append(result)
                print(result.row(f"{name} run {run + 1}"), flush=True)

    median = {name: statistics.median(r.requests_per_s for r in rs) for name, rs in results.items()}
    errors = sum(r.non_2xx + r.socket_errors for rs in results.values() for r in rs)
    summary = ", ".join(f"{name} {value:,.0f}" for name, value in median.items())
    print(f"median req/s: {summary}; errors in all measured runs: {errors}")
    if "offmaps" in median:
        peer = max(median["MapProxy"], median[GTHREAD])
        print(f"offmaps/MapProxy (faster setup) = {median['offmaps'] / peer:.2f}x (target >= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
