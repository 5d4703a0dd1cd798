"""Tile serving benchmark: offmaps vs MapProxy 7 over HTTP, same tiles, same machine, same run.

1. Takes the real tiles rendered from the OpenStreetMap extract of central Helsinki that
   bench/convert.py renders (a TMS folder in bench/out/, rendered the first time), and stores
   them once as an MBTiles archive for offmaps.
2. Serves them on loopback with ``offmaps serve --workers 2`` (uvicorn) at
   ``/tiles/helsinki/{z}/{x}/{y}``, and with MapProxy's WSGI app under gunicorn at its WMTS REST
   endpoint ``/wmts/osm/webmercator/{z}/{x}/{y}.png`` (its ``/tms/`` endpoint is off by one
   level), from two caches: the same TMS folder as a ``file`` cache (MapProxy's own preferred
   layout), and a copy of the very MBTiles file offmaps serves as an ``mbtiles`` cache (like for
   like). Each MapProxy cache runs with 2 sync workers and once more with 2 gthread workers of
   4 threads, which keep connections alive.
3. Checks that every server returns the same bytes as the folder for 50 random tiles, then loads
   each with ``wrk -t2 -c8`` cycling through a fixed shuffled list of every tile: one warm-up run
   each, then alternating measured runs. Prints req/s, latency p50/p99, errors and the ratio of
   offmaps to the faster setup of each MapProxy cache.

Run: ``.venv/bin/python bench/serve_tiles.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import sqlite3
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
# The same grid over an MBTiles file. MapProxy's mbtiles cache stores a tile's grid row as
# tile_row as is, so only a south-west-origin grid (rows counted from the bottom) matches the
# MBTiles spec; with a north-west one it would look for the rows upside down.
_FILE_CACHE = "      type: file\n      directory_layout: tms\n      directory: {directory}\n"
MAPPROXY_MBTILES_YAML = MAPPROXY_YAML.replace(
    _FILE_CACHE, "      type: mbtiles\n      filename: {filename}\n"
)
if MAPPROXY_MBTILES_YAML == MAPPROXY_YAML or "origin: sw" not in MAPPROXY_YAML:
    raise RuntimeError("convert.py's MapProxy configuration changed: update serve_tiles.py")

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
        layer: dict[str, object] = {
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
    """Write MapProxy's configuration (file cache) and WSGI module; return their folder."""
    return _write_app(WORK / "mapproxy", MAPPROXY_YAML.format(directory=folder))


def mapproxy_mbtiles_app(archive: Path) -> tuple[Path, Path]:
    """MapProxy's configuration and WSGI module over a copy of offmaps' MBTiles file.

    MapProxy opens its cache file for writing (it stores what its sources render), so it reads
    a byte-for-byte copy and the file offmaps serves stays untouched. Returns the folder of the
    app and the copy.
    """
    where = WORK / "mapproxy-mbtiles"
    where.mkdir(parents=True, exist_ok=True)
    copy = where / "helsinki.mbtiles"
    source = archive.stat()
    if not copy.exists() or copy.stat().st_size != source.st_size:
        partial = copy.with_name("partial.mbtiles")
        shutil.copyfile(archive, partial)
        partial.rename(copy)
    return _write_app(where, MAPPROXY_MBTILES_YAML.format(filename=copy)), copy


def _write_app(where: Path, config_text: str) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    config = where / "mapproxy.yaml"
    config.write_text(config_text)
    (where / "mapproxy_app.py").write_text(MAPPROXY_APP.format(config=str(config)))
    return where


def count_rows(mbtiles: Path) -> int:
    """The rows of an MBTiles file's ``tiles`` table, read only."""
    with contextlib.closing(sqlite3.connect(f"{mbtiles.as_uri()}?mode=ro", uri=True)) as conn:
        count: int = conn.execute("SELECT count(*) FROM tiles").fetchone()[0]
        return count


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
    print(f"byte-identical to the folder from {', '.join(bases)}: {len(sample)} of {len(sample)}")


# the MapProxy setups: (cache, gunicorn worker class)
FILE_SYNC = "MapProxy file sync"
FILE_GTHREAD = "MapProxy file gthread"
MBTILES_SYNC = "MapProxy mbtiles sync"
MBTILES_GTHREAD = "MapProxy mbtiles gthread"
CACHES = {"file": (FILE_SYNC, FILE_GTHREAD), "mbtiles": (MBTILES_SYNC, MBTILES_GTHREAD)}
PATHS = {
    "offmaps": offmaps_path,
    FILE_SYNC: mapproxy_path,
    FILE_GTHREAD: mapproxy_path,
    MBTILES_SYNC: mapproxy_path,
    MBTILES_GTHREAD: mapproxy_path,
}


def gunicorn(app_dir: Path, port: int, *, threads: int = 0) -> list[str | Path]:
    """gunicorn serving a MapProxy WSGI module with 2 workers: sync, or gthread with threads."""
    worker = ("--worker-class", "gthread", "--threads", str(threads)) if threads else ()
    return [
        *(BIN / "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}", *worker),
        *("--chdir", app_dir, "--log-level", "warning", "mapproxy_app:application"),
    ]


def summary_row(name: str, results: list[WrkResult]) -> str:
    """One Markdown row per server: every run's req/s, the median, p50/p99 ranges, errors."""
    rates = ", ".join(f"{r.requests_per_s:,.0f}" for r in results)
    median = statistics.median(r.requests_per_s for r in results)
    errors = sum(r.non_2xx + r.socket_errors for r in results)
    p50 = _spread([r.p50_ms for r in results])
    p99 = _spread([r.p99_ms for r in results])
    return f"| {name} | {rates} | {median:,.0f} | {p50} | {p99} | {errors} |"


def _spread(values: list[float]) -> str:
    low, high = f"{min(values):.2f}", f"{max(values):.2f}"
    return low if low == high else f"{low}-{high}"


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
    archive = served / "tiles" / "helsinki.mbtiles"
    order = tiles[:]
    random.Random(SEED).shuffle(order)
    file_dir = mapproxy_app(folder)
    mbtiles_dir, mbtiles_copy = mapproxy_mbtiles_app(archive)
    ports = {name: free_port() for name in PATHS}
    # threads keep connections alive; the faster setup of each cache sets its ratio
    commands: dict[str, list[str | Path]] = {
        "offmaps": [
            *(BIN / "offmaps", "serve", "--data", served, "--port", str(ports["offmaps"])),
            *("--workers", "2"),
        ],
        FILE_SYNC: gunicorn(file_dir, ports[FILE_SYNC]),
        FILE_GTHREAD: gunicorn(file_dir, ports[FILE_GTHREAD], threads=4),
        MBTILES_SYNC: gunicorn(mbtiles_dir, ports[MBTILES_SYNC]),
        MBTILES_GTHREAD: gunicorn(mbtiles_dir, ports[MBTILES_GTHREAD], threads=4),
    }
    names = [name for name in PATHS if not (args.peer_only and name == "offmaps")]
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

    # MapProxy stores what it makes for a tile it lacks: a grown copy means it answered a miss
    rows = count_rows(mbtiles_copy)
    if rows != len(tiles):
        raise RuntimeError(f"MapProxy's MBTiles copy holds {rows} rows, not {len(tiles)}")

    print("| server | req/s of each run | median | p50 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|")
    for name, measured in results.items():
        print(summary_row(name, measured))
    median = {name: statistics.median(r.requests_per_s for r in rs) for name, rs in results.items()}
    errors = sum(r.non_2xx + r.socket_errors for rs in results.values() for r in rs)
    print(f"errors in all measured runs: {errors}")
    if "offmaps" in median:
        for cache, setups in CACHES.items():
            faster = max(setups, key=median.__getitem__)
            ratio = median["offmaps"] / median[faster]
            print(f"offmaps / MapProxy {cache} cache ({faster}) = {ratio:.2f}x (target >= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
