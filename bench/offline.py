"""Offline map benchmark: offmaps end to end, and its extractors vs ogr2ogr and MapProxy.

1. Starts ``offmaps serve`` on a fresh data folder (it builds the Helsinki sample web map from
   the OSM extract on first start), signs in as the sample editor, and times
   ``offmaps offline generate`` for the sample's default area (central Helsinki) and for an area
   10 times larger (same centre, sides scaled by sqrt(10)): seconds, bytes downloaded, rows and
   tiles written (and what ``offmaps offline estimate`` predicted).
2. Features per second into a GeoPackage: ``extract_feature_service`` (in process, every row of
   the table: ``RowFilter.ALL``) vs ``ogr2ogr -f GPKG -spat``, from the same GeoPackage and over
   the same rectangle, on the server's sample feature service and on the OSM points, lines and
   multipolygons of bench/serve_features.py imported into offmaps; same row counts checked.
3. Tiles per second into MBTiles: ``extract_tiles`` (in process) vs ``mapproxy-util export``,
   from the 61,791 rendered tiles of bench/convert.py (its TMS folder, which MapProxy reads; and
   its MBTiles archive, which the offmaps server reads), same area and levels; same tiles checked.

Best of 3 alternating runs (``--quick``: one run, fewer levels). Run:
``.venv/bin/python bench/offline.py`` (``make bench`` runs every benchmark).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyogrio
import pyproj
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serve_features
from _http import free_port, serving
from _measure import machine
from convert import MAPPROXY_YAML, source_cache
from serve_tiles import prepare

from offmaps.containers import open_reader
from offmaps.features.geopackage import GeoPackageStore
from offmaps.offline.extract import (
    LayerExtract,
    RowFilter,
    extract_feature_service,
    extract_tiles,
)
from offmaps.tiling import AreaOfInterest
from offmaps.types import Tile, ZoomRange

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
WORK = OUT / "offline"
BIN = Path(sys.executable).parent
PASSWORD = "offmaps-sample"
SAMPLE_BBOX = (24.935, 60.164, 24.953, 60.179)  # the sample map's default area
SAMPLE_LAYERS = ("sites", "streets", "inspections")  # inspections is a table (no geometry)
OSM_LAYERS = tuple(serve_features.LAYERS)  # points, lines, multipolygons
OSM_BBOX = (24.93, 60.16, 24.96, 60.18)  # past the whole extract: every row
TILE_BBOX = (24.928, 60.161, 24.9441, 60.182)  # the west half of convert.py's rendered area
TILE_LEVELS = ZoomRange(12, 20)
QUICK_TILE_LEVELS = ZoomRange(12, 17)


def scaled(bbox: tuple[float, float, float, float], factor: float) -> tuple[float, ...]:
    """``bbox`` with the same centre and each side scaled by ``factor``."""
    west, south, east, north = bbox
    cx, cy = (west + east) / 2, (south + north) / 2
    hx, hy = (east - west) / 2 * factor, (north - south) / 2 * factor
    return (round(cx - hx, 6), round(cy - hy, 6), round(cx + hx, 6), round(cy + hy, 6))


def km2(bbox: Sequence[float]) -> float:
    area, _ = pyproj.Geod(ellps="WGS84").geometry_area_perimeter(shapely.box(*bbox))
    return abs(area) / 1e6


def verdict(ratio: float, target: float) -> str:
    return "met" if ratio >= target else "MISSED"


def bbox_arg(bbox: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in bbox)


def fresh(path: Path) -> Path:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    return path


def run(
    command: Sequence[str | Path], *, env: dict[str, str] | None = None, stdin: str = ""
) -> str:
    """Run a command; its stdout, or a RuntimeError with its output."""
    done = subprocess.run(
        [str(part) for part in command],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, command))} failed ({done.returncode}):\n{done.stdout}\n"
            f"{done.stderr}"
        )
    return done.stdout


def require_tools() -> str:
    """The path of ogr2ogr; a clear error when it or mapproxy-util is missing."""
    ogr2ogr = shutil.which("ogr2ogr")
    if ogr2ogr is None:
        raise RuntimeError(
            "ogr2ogr not found: run `make bench-tools` (apt-get install -y gdal-bin)"
        )
    if not (BIN / "mapproxy-util").exists():
        raise RuntimeError(f"{BIN / 'mapproxy-util'} not found: run `make install` (bench extra)")
    return ogr2ogr


# --- 1. the sample map end to end ------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    seconds: float
    bytes: int
    files: int
    rows: dict[str, int]
    tiles: dict[str, int]
    estimate: dict[str, int]


def generate_sample_map(data: Path, runs: int) -> list[str]:
    folder, config = fresh(WORK / "server-data"), fresh(WORK / "config")
    env = {
        "OFFMAPS_DATA_DIR": str(folder),
        "OFFMAPS_OSM_FILE": str(data / "osm" / "Helsinki.osm.pbf"),
        "OFFMAPS_CONFIG_DIR": str(config),
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    areas = {"default": SAMPLE_BBOX, "10x": scaled(SAMPLE_BBOX, math.sqrt(10))}
    results: dict[str, list[Generated]] = {name: [] for name in areas}
    started = time.perf_counter()
    command = [BIN / "offmaps", "serve", "--port", str(port)]
    with serving(command, f"{url}/conformance", log=WORK / "server.log", env=env, timeout=600):
        first_start = time.perf_counter() - started
        offmaps = str(BIN / "offmaps")
        run([offmaps, "login", url, "-u", "editor", "--password-stdin"], env=env, stdin=PASSWORD)
        maps = json.loads(run([offmaps, "maps", "list", "--server", url, "--json"], env=env))
        if not maps:
            raise RuntimeError(f"the server at {url} lists no web map (see {WORK / 'server.log'})")
        map_id = maps[0]["id"]
        for attempt in range(runs):
            for name, bbox in areas.items():
                where = ["--server", url, "--map", map_id, "--bbox", bbox_arg(bbox), "--json"]
                estimate = json.loads(run([offmaps, "offline", "estimate", *where], env=env))
                out = fresh(WORK / f"package-{name}-{attempt + 1}")
                generate = [offmaps, "offline", "generate", *where, "--out", str(out)]
                began = time.perf_counter()
                answer = run(generate, env=env)
                seconds = time.perf_counter() - began
                result = json.loads(answer.strip().splitlines()[-1])
                if result["layer_errors"] or result["table_errors"]:
                    raise RuntimeError(f"{name}: generate reported errors: {answer}")
                results[name].append(package_contents(out, estimate, seconds))
    lines = [
        "",
        f"## 1. The sample web map taken offline end to end (offmaps serve, 1 worker; "
        f"first start with the sample build {first_start:.1f} s)",
        "",
        f"`offmaps offline generate --json`, best of {runs} run(s) per area, areas alternating; "
        "bytes: the files of package.json and package.json itself",
        "",
        "| area | bbox | km² | seconds | bytes downloaded | files | rows sites / streets / "
        "inspections | tiles basemap / buildings | estimated rows | estimated tiles |",
        "|---|---|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    best = {name: min(rs, key=lambda r: r.seconds) for name, rs in results.items()}
    for name, bbox in areas.items():
        r = best[name]
        rows = " / ".join(f"{r.rows[layer]:,}" for layer in SAMPLE_LAYERS)
        tiles = " / ".join(f"{count:,}" for count in r.tiles.values())
        lines.append(
            f"| {name} | {bbox_arg(bbox)} | {km2(bbox):.2f} | {r.seconds:.2f} | {r.bytes:,} "
            f"| {r.files} | {rows} | {tiles} | {r.estimate['features']:,} "
            f"| {r.estimate['tiles']:,} |"
        )
    ratio = best["10x"].seconds / best["default"].seconds
    lines.append("")
    lines.append(f"10x area / default area: {ratio:.2f}x the time (no target)")
    return lines


def package_contents(out: Path, estimate: dict[str, int], seconds: float) -> Generated:
    """What a downloaded package holds, checked against its manifest."""
    manifest_path = out / "package.json"
    manifest = json.loads(manifest_path.read_text())
    size = manifest_path.stat().st_size
    for entry in manifest["files"]:
        on_disk = (out / entry["path"]).stat().st_size
        if on_disk != entry["size"]:
            raise RuntimeError(f"{out / entry['path']}: {on_disk} bytes, manifest {entry['size']}")
        size += on_disk
    rows: dict[str, int] = {}
    tiles: dict[str, int] = {}
    for layer in [*manifest["layers"], *manifest["tables"]]:
        path = out / layer["file"]
        if layer["kind"] in ("feature", "table"):
            rows[layer["layer"]] = pyogrio.read_info(path, layer=layer["layer"])["features"]
        else:
            with open_reader(str(path)) as reader:
                tiles[layer["id"]] = reader.count_tiles()
    if set(rows) != set(SAMPLE_LAYERS):
        raise RuntimeError(f"{out}: layers {sorted(rows)}, expected {sorted(SAMPLE_LAYERS)}")
    return Generated(seconds, size, len(manifest["files"]) + 1, rows, tiles, estimate)


# --- 2. features into a GeoPackage -------------------------------------------------------------


def ogr2ogr_commands(
    ogr2ogr: str, source: Path, dest: Path, bbox: Sequence[float], layers: Sequence[str]
) -> list[list[str | Path]]:
    """``ogr2ogr -spat`` of the spatial layers, then the tables without it, into one GPKG.

    GDAL 3.6's ogr2ogr crashes (SIGSEGV) on a table without geometry when ``-spat_srs`` is
    given, and drops all of its rows when only ``-spat`` is: tables go in a second run.
    """
    spatial = [n for n in layers if pyogrio.read_info(source, layer=n)["geometry_type"]]
    tables = [n for n in layers if n not in spatial]
    spat = ["-spat", *map(str, bbox), "-spat_srs", "EPSG:4326"]
    commands: list[list[str | Path]] = [[ogr2ogr, "-f", "GPKG", dest, source, *spat, *spatial]]
    if tables:
        commands.append([ogr2ogr, "-update", "-f", "GPKG", dest, source, *tables])
    return commands


def features(
    ogr2ogr: str, label: str, source: Path, layers: Sequence[str], bbox: Sequence[float], runs: int
) -> list[str]:
    area = AreaOfInterest.from_bbox(*bbox)
    extracts = [LayerExtract(layer=name) for name in layers]
    ours_path, theirs_path = WORK / f"ours-{label}.gpkg", WORK / f"ogr2ogr-{label}.gpkg"
    ours_times, theirs_times = [], []
    ours_rows: dict[str, int] = {}
    commands = ogr2ogr_commands(ogr2ogr, source, theirs_path, bbox, layers)
    store = GeoPackageStore.open(source)
    try:
        for _ in range(runs):
            fresh(ours_path)
            began = time.perf_counter()
            result = extract_feature_service(
                store, ours_path, extracts, area, row_filter=RowFilter.ALL
            )
            ours_times.append(time.perf_counter() - began)
            ours_rows = dict(result.rows)
            fresh(theirs_path)
            began = time.perf_counter()
            for command in commands:
                run(command)
            theirs_times.append(time.perf_counter() - began)
    finally:
        store.close()
    theirs_rows = {n: pyogrio.read_info(theirs_path, layer=n)["features"] for n in layers}
    written = {n: pyogrio.read_info(ours_path, layer=n)["features"] for n in layers}
    if written != ours_rows:
        raise RuntimeError(f"{label}: offmaps reported {ours_rows} rows, its GeoPackage {written}")
    if ours_rows != theirs_rows:
        raise RuntimeError(
            f"{label}: offmaps wrote {ours_rows} rows, ogr2ogr {theirs_rows}. ogr2ogr's -spat "
            "keeps rows whose geometry meets the rectangle (a GEOS test after the envelope "
            "test), offmaps rows whose geometry intersects the area: over a rectangle in the "
            "layers' CRS both should agree, so a difference is a bug on one side"
        )
    total = sum(ours_rows.values())
    ours, theirs = min(ours_times), min(theirs_times)
    per_layer = " / ".join(f"{ours_rows[n]:,}" for n in layers)
    return [
        f"| {label} | {' / '.join(layers)} | {per_layer} | {total / ours:,.0f} "
        f"| {total / theirs:,.0f} | {theirs / ours:.2f}x | {verdict(theirs / ours, 1)} |"
    ]


def osm_store(data: Path) -> Path:
    """The OSM GeoPackage of serve_features.py, imported into an offmaps data folder of ours."""
    source = serve_features.source_geopackage(data)  # built once, in bench/out/serve-features/
    serve_features.WORK = WORK / "osm"  # import into our own folder, not serve_features.py's
    folder, _ = serve_features.offmaps_data(source)
    return folder / "features" / f"{serve_features.SERVICE}.gpkg"


def features_part(ogr2ogr: str, data: Path, runs: int) -> list[str]:
    sample = WORK / "server-data" / "features" / "helsinki.gpkg"
    osm = osm_store(data)
    lines = [
        "",
        f"## 2. Features into a GeoPackage: extract_feature_service vs ogr2ogr -spat "
        f"(best of {runs}, alternating)",
        "",
        "offmaps in process (RowFilter.ALL); ogr2ogr `-f GPKG -spat W S E N -spat_srs EPSG:4326` "
        "as a child process (tables in a second run without -spat); same rows checked",
        "",
        "| source | layers | rows written | offmaps rows/s | ogr2ogr rows/s | offmaps/ogr2ogr "
        "| target >= 1x |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    lines += features(ogr2ogr, "sample", sample, SAMPLE_LAYERS, SAMPLE_BBOX, runs)
    lines += features(ogr2ogr, "osm", osm, OSM_LAYERS, OSM_BBOX, runs)
    lines.append("")
    lines.append(
        f"sample area {bbox_arg(SAMPLE_BBOX)}; OSM area {bbox_arg(OSM_BBOX)} (the whole extract); "
        "offmaps in process, ogr2ogr a child process per run"
    )
    return lines


# --- 3. tiles into MBTiles ---------------------------------------------------------------------


def tile_set(path: Path) -> set[Tile]:
    with open_reader(str(path)) as reader:
        return {tile for tile, _ in reader.iter_tiles()}


def tiles_part(data: Path, levels: ZoomRange, runs: int) -> list[str]:
    folder, total = source_cache(data)
    _, served, _ = prepare(data)
    archive = served / "tiles" / "helsinki.mbtiles"
    config = WORK / "mapproxy.yaml"
    config.write_text(MAPPROXY_YAML.format(directory=folder))
    area = AreaOfInterest.from_bbox(*TILE_BBOX)
    theirs_path = WORK / "mapproxy-export.mbtiles"
    mapproxy = [
        *(BIN / "mapproxy-util", "export", "-f", config, "-q", "-q", "--grid", "webmercator"),
        *("--source", "osm_cache", "--dest", theirs_path, "--type", "mbtile"),
        *("--levels", f"{levels.min}..{levels.max}", "--coverage", bbox_arg(TILE_BBOX)),
        *("--srs", "EPSG:4326"),
    ]
    sources = {  # name: (source, destination)
        "offmaps (MBTiles source)": (str(archive), WORK / "ours-from-mbtiles.mbtiles"),
        "offmaps (TMS folder)": (f"tms:{folder}", WORK / "ours-from-tms.mbtiles"),
    }
    times: dict[str, list[float]] = {name: [] for name in [*sources, "MapProxy"]}
    written: dict[str, set[Tile]] = {}
    for _ in range(runs):
        for name, (source, dest) in sources.items():
            fresh(dest)
            began = time.perf_counter()
            result = extract_tiles(source, dest, area, levels)
            times[name].append(time.perf_counter() - began)
            written[name] = tile_set(dest)
            if result.tiles != len(written[name]):
                raise RuntimeError(
                    f"{name}: reported {result.tiles} tiles, wrote {len(written[name])}"
                )
        fresh(theirs_path)
        began = time.perf_counter()
        run(mapproxy)
        times["MapProxy"].append(time.perf_counter() - began)
    written["MapProxy"] = tile_set(theirs_path)
    reference = written["MapProxy"]
    for name, tiles in written.items():
        if tiles != reference:
            raise RuntimeError(
                f"{name} wrote {len(tiles):,} tiles, MapProxy {len(reference):,}: "
                f"{len(tiles - reference)} only in offmaps', {len(reference - tiles)} only in "
                "MapProxy's"
            )
    count = len(reference)
    peer = min(times["MapProxy"])
    lines = [
        "",
        f"## 3. Tiles into MBTiles: extract_tiles vs mapproxy-util export (best of {runs}, "
        "alternating)",
        "",
        f"Source: {total:,} rendered PNG tiles (convert.py); area {bbox_arg(TILE_BBOX)} (the west "
        f"half of the rendered area), levels {levels.min}-{levels.max}: {count:,} tiles, the same "
        "tiles from each. offmaps in process; MapProxy a child process reading the TMS folder.",
        "",
        "| tool | tiles | seconds | tiles/s | ratio to MapProxy | target >= 20x |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, seconds in times.items():
        best = min(seconds)
        ratio = (
            "| |" if name == "MapProxy" else f"| {peer / best:.1f}x | {verdict(peer / best, 20)}"
        )
        lines.append(f"| {name} | {count:,} | {best:.3f} | {count / best:,.0f} {ratio} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--quick", action="store_true", help="1 run each, fewer levels: smoke run")
    args = parser.parse_args()
    runs = 1 if args.quick else 3
    ogr2ogr = require_tools()
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {machine()}", flush=True)
    print("\n".join(generate_sample_map(args.data, runs)), flush=True)
    print("\n".join(features_part(ogr2ogr, args.data, runs)), flush=True)
    levels = QUICK_TILE_LEVELS if args.quick else TILE_LEVELS
    print("\n".join(tiles_part(args.data, levels, runs)), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as error:
        print(f"bench/offline.py failed: {error}", file=sys.stderr)
        sys.exit(1)
