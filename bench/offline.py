"""Offline map benchmark: offmaps end to end, and its extractors vs ogr2ogr and MapProxy.

1. Starts ``offmaps serve`` on a fresh data folder (it builds the Helsinki sample web map from
   the OSM extract on first start), signs in as the sample editor, and times
   ``offmaps offline generate`` for the sample's default area (central Helsinki) and for an area
   10 times larger (same centre, sides scaled by sqrt(10)): seconds, bytes downloaded, rows and
   tiles written (and what ``offmaps offline estimate`` predicted).
2. Rows per second into a GeoPackage: ``extract_feature_service`` (every row of the table:
   ``RowFilter.ALL``) vs ``ogr2ogr -f GPKG -spat``, from the same GeoPackage and over the same
   rectangle, on the server's sample feature service and on the OSM points, lines and
   multipolygons of bench/serve_features.py imported into offmaps. Both sides are child
   processes timed from start to exit (offmaps: a Python process that imports offmaps, opens the
   store and extracts; ogr2ogr: its process, two for the sample whose table needs a second run).
   The rows are checked, not only counted: same fids, same values in every column ogr2ogr wrote,
   same geometry WKB, read back from both GeoPackages.
3. Tiles per second into MBTiles: ``extract_tiles`` vs ``mapproxy-util export``, from the 61,791
   rendered tiles of bench/convert.py (its TMS folder, which MapProxy reads too; and its MBTiles
   archive, which the offmaps server reads), same area and levels. Both sides are Python
   processes timed from start to exit (MapProxy's runs the export command of ``mapproxy-util``),
   and each also times its own work in process, after its imports; the same tiles checked.

Runs alternate (ours, peer, ours, peer...) and each figure is the median of ``--runs`` (5;
``--quick``: one run, fewer tile levels). Run: ``.venv/bin/python bench/offline.py``
(``make bench`` runs every benchmark); ``--parts features,tiles`` runs some parts only (part 2
needs the sample server's data that part 1 leaves in bench/out/offline).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pyogrio.raw
import pyproj
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serve_features
from _http import free_port, serving
from _measure import fresh, machine
from convert import MAPPROXY_YAML, source_cache
from serve_tiles import prepare

from offmaps.containers import open_reader
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


# The offmaps side of parts 2 and 3 runs as a child process like its peer: a plain Python
# process that imports only what the extraction needs (not this script's own imports), so its
# start-up (interpreter, imports) is inside its time as ogr2ogr's and MapProxy's are. The work
# alone is told too: offmaps' child times its own work (from its imports done to its answer,
# opening the source included); a peer's is its time less its start-up, measured by the same
# program doing next to nothing: `ogr2ogr --version` (process, drivers registered), and for
# MapProxy an export of the area's first level only (start, configuration and seeding set-up, and
# that level's one tile). Subtracting would not do for offmaps, whose work is a tenth of its
# start-up: the noise of the start-up would swamp it.
FEATURES_IMPORTS = """
from pathlib import Path
from offmaps.features.geopackage import GeoPackageStore
from offmaps.offline.extract import LayerExtract, RowFilter, extract_feature_service
from offmaps.tiling import AreaOfInterest
"""
CHILD_FEATURES = (
    FEATURES_IMPORTS
    + """
import json, sys, time
began = time.perf_counter()
source, dest, bbox, layers = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
store = GeoPackageStore.open(Path(source))
try:
    result = extract_feature_service(
        store, dest, [LayerExtract(layer=name) for name in layers],
        AreaOfInterest.from_bbox(*map(float, bbox.split(","))), row_filter=RowFilter.ALL,
    )
finally:
    store.close()
print(json.dumps({"rows": dict(result.rows), "work": time.perf_counter() - began}))
"""
)
TILES_IMPORTS = """
from pathlib import Path
from offmaps.offline.extract import extract_tiles
from offmaps.tiling import AreaOfInterest
from offmaps.types import ZoomRange
"""
CHILD_TILES = (
    TILES_IMPORTS
    + """
import json, sys, time
began = time.perf_counter()
source, dest, bbox, low, high = sys.argv[1:6]
area = AreaOfInterest.from_bbox(*map(float, bbox.split(",")))
result = extract_tiles(source, Path(dest), area, ZoomRange(int(low), int(high)))
print(json.dumps({"tiles": result.tiles, "work": time.perf_counter() - began}))
"""
)
# MapProxy's side of the tiles part: what `mapproxy-util export` runs (its export command, which
# loads the configuration, then seeds into the destination), in a Python process of its own that
# imports MapProxy's export and seeding code before its timer, as offmaps' child imports its own:
# its wall time is MapProxy's time with start-up, its own timer MapProxy's work in process.
CHILD_MAPPROXY = """
import json, sys, time
import mapproxy.cache.file, mapproxy.cache.mbtiles, mapproxy.seed.seeder
from mapproxy.script.export import export_command
began = time.perf_counter()
try:
    export_command(["mapproxy-util", *sys.argv[1:]])
except SystemExit as stop:
    if stop.code:
        raise
print(json.dumps({"work": time.perf_counter() - began}))
"""


def run_child(script: str, *args: str | Path) -> tuple[float, dict[str, Any]]:
    """Run ``script`` in a fresh interpreter of this venv: wall seconds from start to exit, and
    the JSON object it printed last."""
    began = time.perf_counter()
    out = run([sys.executable, "-c", script, *args])
    seconds = time.perf_counter() - began
    answer: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return seconds, answer


@dataclass
class Sides:
    """Seconds per run: each side's wall time with start-up, offmaps' work as its child timed
    it, and the peer's start-up alone."""

    ours: list[float] = field(default_factory=list)
    ours_work: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)
    theirs_idle: list[float] = field(default_factory=list)
    theirs_work: list[float] = field(default_factory=list)
    """The peer's work as its own child timed it (tiles), when it runs in a Python process."""

    def with_startup(self) -> tuple[float, float]:
        """Median seconds of offmaps and the peer, start-up included."""
        return median(self.ours), median(self.theirs)

    def work(self) -> tuple[float, float]:
        """Median seconds of the work alone: offmaps' as timed in its child; the peer's as timed
        in its child too when it runs in one, else its median time less its median start-up."""
        if self.theirs_work:
            return median(self.ours_work), median(self.theirs_work)
        return median(self.ours_work), median(self.theirs) - median(self.theirs_idle)

    def theirs_startup(self) -> float:
        """Median of the peer's wall time less its work."""
        if self.theirs_work:
            return median([a - b for a, b in zip(self.theirs, self.theirs_work, strict=True)])
        return median(self.theirs_idle)

    def ours_startup(self) -> float:
        """Median of offmaps' wall time less its work: interpreter, imports, exit."""
        return median([a - b for a, b in zip(self.ours, self.ours_work, strict=True)])


def timed(command: Sequence[str | Path]) -> float:
    """Wall seconds of a command, from start to exit."""
    began = time.perf_counter()
    run(command)
    return time.perf_counter() - began


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}"


def same_rows(label: str, layer: str, ours: Path, theirs: Path) -> list[str]:
    """Check that both GeoPackages hold the same rows of ``layer``: the same fids, the same value
    in every column ogr2ogr wrote, the same geometry (WKB as GDAL reads it back); a
    RuntimeError names the first difference. Returns the columns only offmaps wrote (the
    replica's own bookkeeping, not compared)."""
    ours_meta, ours_fids, ours_geom, ours_fields = pyogrio.raw.read(
        ours, layer=layer, return_fids=True
    )
    their_meta, their_fids, their_geom, their_fields = pyogrio.raw.read(
        theirs, layer=layer, return_fids=True
    )
    where = f"{label}/{layer}"
    if sorted(ours_fids.tolist()) != sorted(their_fids.tolist()):
        only_ours = set(ours_fids.tolist()) - set(their_fids.tolist())
        only_theirs = set(their_fids.tolist()) - set(ours_fids.tolist())
        raise RuntimeError(
            f"{where}: different rows: {len(only_ours)} fids only in offmaps' "
            f"(e.g. {sorted(only_ours)[:5]}), {len(only_theirs)} only in ogr2ogr's "
            f"(e.g. {sorted(only_theirs)[:5]})"
        )
    ours_order, their_order = np.argsort(ours_fids), np.argsort(their_fids)
    fids = ours_fids[ours_order].tolist()
    ours_columns = dict(zip(ours_meta["fields"].tolist(), ours_fields, strict=True))
    their_names = their_meta["fields"].tolist()
    missing = [name for name in their_names if name not in ours_columns]
    if missing:
        raise RuntimeError(f"{where}: columns {missing} are in ogr2ogr's output, not in offmaps'")
    for name, their_values in zip(their_names, their_fields, strict=True):
        pairs = zip(fids, ours_columns[name][ours_order], their_values[their_order], strict=True)
        for fid, a, b in pairs:
            if not equal_values(a, b):
                raise RuntimeError(
                    f"{where}: fid {fid}, column {name!r}: offmaps wrote {a!r}, ogr2ogr {b!r}"
                )
    if (ours_geom is None) != (their_geom is None):
        raise RuntimeError(f"{where}: only one side wrote geometries")
    if ours_geom is not None and their_geom is not None:
        shapes = zip(fids, ours_geom[ours_order], their_geom[their_order], strict=True)
        for fid, a, b in shapes:
            if a != b:
                raise RuntimeError(f"{where}: fid {fid}: the geometries differ")
    return [name for name in ours_columns if name not in their_names]


def equal_values(a: object, b: object) -> bool:
    """Equal, with NaN equal to NaN and NaT to NaT (a null number or date reads back so)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, np.datetime64) and isinstance(b, np.datetime64) and np.isnat(a):
        return bool(np.isnat(b))
    return bool(a == b)


def features(
    ogr2ogr: str, label: str, source: Path, layers: Sequence[str], bbox: Sequence[float], runs: int
) -> list[str]:
    ours_path, theirs_path = WORK / f"ours-{label}.gpkg", WORK / f"ogr2ogr-{label}.gpkg"
    sides = Sides()
    answer: dict[str, Any] = {}
    commands = ogr2ogr_commands(ogr2ogr, source, theirs_path, bbox, layers)
    for _ in range(runs):  # alternating: ours, peer, peer's start-up, ...
        fresh(ours_path)
        seconds, answer = run_child(CHILD_FEATURES, source, ours_path, bbox_arg(bbox), *layers)
        sides.ours.append(seconds)
        sides.ours_work.append(answer["work"])
        fresh(theirs_path)
        sides.theirs.append(sum(timed(command) for command in commands))
        sides.theirs_idle.append(sum(timed([ogr2ogr, "--version"]) for _ in commands))
    ours_rows = answer["rows"]
    theirs_rows = {n: pyogrio.read_info(theirs_path, layer=n)["features"] for n in layers}
    written = {n: pyogrio.read_info(ours_path, layer=n)["features"] for n in layers}
    if written != ours_rows:
        raise RuntimeError(f"{label}: offmaps reported {ours_rows} rows, its GeoPackage {written}")
    if written != theirs_rows:
        raise RuntimeError(
            f"{label}: offmaps wrote {written} rows, ogr2ogr {theirs_rows}. ogr2ogr's -spat "
            "keeps rows whose geometry meets the rectangle (a GEOS test after the envelope "
            "test), offmaps rows whose geometry intersects the area: over a rectangle in the "
            "layers' CRS both should agree, so a difference is a bug on one side"
        )
    extras = {name: same_rows(label, name, ours_path, theirs_path) for name in layers}
    total = sum(written.values())
    ours, theirs = sides.with_startup()
    ours_work, theirs_work = sides.work()
    per_layer = " / ".join(f"{written[n]:,}" for n in layers)
    extra_note = "; ".join(f"{n}: {', '.join(c)}" for n, c in extras.items() if c) or "none"
    return [
        f"| {label} | {' / '.join(layers)} | {per_layer} "
        f"| {ours:.3f} ({spread(sides.ours)}) | {theirs:.3f} ({spread(sides.theirs)}) "
        f"| {theirs / ours:.2f}x {verdict(theirs / ours, 1)} "
        f"| {sides.ours_startup():.3f} | {sides.theirs_startup():.3f} "
        f"| {ours_work:.3f} ({total / ours_work:,.0f}/s) "
        f"| {theirs_work:.3f} ({total / theirs_work:,.0f}/s) "
        f"| {theirs_work / ours_work:.2f}x {verdict(theirs_work / ours_work, 1)} | {extra_note} |"
    ]


def osm_store(data: Path) -> Path:
    """The OSM GeoPackage of serve_features.py, imported into an offmaps data folder of ours."""
    source = serve_features.source_geopackage(data)  # built once, in bench/out/serve-features/
    serve_features.WORK = WORK / "osm"  # import into our own folder, not serve_features.py's
    folder, _ = serve_features.offmaps_data(source)
    return folder / "features" / f"{serve_features.SERVICE}.gpkg"


def features_part(ogr2ogr: str, data: Path, runs: int) -> list[str]:
    sample = WORK / "server-data" / "features" / "helsinki.gpkg"
    if not sample.exists():
        raise RuntimeError(f"{sample} is missing: run part 1 (--parts sample) first")
    osm = osm_store(data)
    lines = [
        "",
        f"## 2. Features into a GeoPackage: extract_feature_service vs ogr2ogr -spat "
        f"(medians of {runs} alternating runs, ranges in brackets)",
        "",
        "Both sides are child processes timed from start to exit: offmaps a Python process "
        "(imports, opening the store, RowFilter.ALL extraction), ogr2ogr "
        "`-f GPKG -spat W S E N -spat_srs EPSG:4326` (tables in a second run without -spat). "
        "Work: offmaps' as its child timed it (after its imports); ogr2ogr's time less its "
        "start-up, `ogr2ogr --version` once per ogr2ogr run. Rows checked: "
        "same fids, same values in every column ogr2ogr wrote, same geometry WKB.",
        "",
        "| source | layers | rows written | offmaps s | ogr2ogr s | ratio, target >= 1x "
        "| offmaps start-up s | ogr2ogr start-up s | offmaps work s | ogr2ogr work s "
        "| work ratio, target >= 1x | columns only offmaps wrote |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---|---|",
    ]
    lines += features(ogr2ogr, "sample", sample, SAMPLE_LAYERS, SAMPLE_BBOX, runs)
    lines += features(ogr2ogr, "osm", osm, OSM_LAYERS, OSM_BBOX, runs)
    lines.append("")
    lines.append(
        f"sample area {bbox_arg(SAMPLE_BBOX)}; OSM area {bbox_arg(OSM_BBOX)} (the whole extract); "
        "ratio: ogr2ogr seconds / offmaps seconds"
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
    theirs_path = WORK / "mapproxy-export.mbtiles"
    mapproxy = [  # the arguments of `mapproxy-util export`
        *("-f", str(config), "-q", "-q", "--grid", "webmercator", "--source", "osm_cache"),
        *("--dest", str(theirs_path), "--type", "mbtile"),
        *("--levels", f"{levels.min}..{levels.max}", "--coverage", bbox_arg(TILE_BBOX)),
        *("--srs", "EPSG:4326"),
    ]

    sources = {  # name: (source, destination)
        "offmaps (TMS folder)": (f"tms:{folder}", WORK / "ours-from-tms.mbtiles"),
        "offmaps (MBTiles source)": (str(archive), WORK / "ours-from-mbtiles.mbtiles"),
    }
    sides = {name: Sides() for name in sources}
    answers: dict[str, dict[str, Any]] = {}
    for _ in range(runs):  # alternating: ours (folder), peer, ours (archive)
        for name, (source, dest) in sources.items():
            fresh(dest)
            seconds, answers[name] = run_child(
                CHILD_TILES, source, dest, bbox_arg(TILE_BBOX), str(levels.min), str(levels.max)
            )
            sides[name].ours.append(seconds)
            sides[name].ours_work.append(answers[name]["work"])
            if name == "offmaps (TMS folder)":
                fresh(theirs_path)
                seconds, answer = run_child(CHILD_MAPPROXY, *mapproxy)
                sides[name].theirs.append(seconds)
                sides[name].theirs_work.append(answer["work"])
    peer = sides["offmaps (TMS folder)"]
    for side in sides.values():  # one MapProxy reading the folder is the peer of both
        side.theirs, side.theirs_work = peer.theirs, peer.theirs_work
    reference = tile_set(theirs_path)
    for name, (_, dest) in sources.items():
        tiles = tile_set(dest)
        if answers[name]["tiles"] != len(tiles):
            raise RuntimeError(
                f"{name}: reported {answers[name]['tiles']} tiles, wrote {len(tiles)}"
            )
        if tiles != reference:
            raise RuntimeError(
                f"{name} wrote {len(tiles):,} tiles, MapProxy {len(reference):,}: "
                f"{len(tiles - reference)} only in offmaps', {len(reference - tiles)} only in "
                "MapProxy's"
            )
        same_tile_bytes(name, dest, theirs_path, reference)
    count = len(reference)
    theirs, theirs_work = peer.with_startup()[1], peer.work()[1]
    lines = [
        "",
        f"## 3. Tiles into MBTiles: extract_tiles vs mapproxy-util export (medians of {runs} "
        "alternating runs, ranges in brackets)",
        "",
        f"Source: {total:,} rendered PNG tiles (convert.py); area {bbox_arg(TILE_BBOX)} (the west "
        f"half of the rendered area), levels {levels.min}-{levels.max}: {count:,} tiles, the same "
        "tiles and bytes from each. Both sides are Python processes timed from start to exit: "
        "offmaps' runs extract_tiles, MapProxy's the command `mapproxy-util export` runs "
        "(export_command) reading the TMS folder. Work: each side in process, as its own child "
        "timed it after its imports (MapProxy's includes loading its configuration, offmaps' "
        "opening the source).",
        "",
        "| tool | tiles | seconds | ratio, target >= 20x | start-up s | work s | tiles/s of work "
        "| work ratio, target >= 20x |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for name, side in sides.items():
        ours, ours_work = side.with_startup()[0], side.work()[0]
        lines.append(
            f"| {name} | {count:,} | {ours:.3f} ({spread(side.ours)}) "
            f"| {theirs / ours:.1f}x {verdict(theirs / ours, 20)} "
            f"| {side.ours_startup():.3f} | {ours_work:.3f} | {count / ours_work:,.0f} "
            f"| {theirs_work / ours_work:.1f}x {verdict(theirs_work / ours_work, 20)} |"
        )
    lines.append(
        f"| MapProxy | {count:,} | {theirs:.3f} ({spread(peer.theirs)}) | "
        f"| {peer.theirs_startup():.3f} | {theirs_work:.3f} | {count / theirs_work:,.0f} | |"
    )
    if "offmaps (MBTiles source)" in sides:
        lines.append("")
        lines.append(
            "The MBTiles row reads another source than MapProxy (the archive the offmaps server "
            "serves): it shows what the server does, not a like-for-like comparison."
        )
    return lines


def same_tile_bytes(name: str, ours: Path, theirs: Path, tiles: set[Tile]) -> None:
    """Every tile's bytes are the same in both archives (both copy the rendered PNGs)."""
    with open_reader(str(ours)) as mine, open_reader(str(theirs)) as peer:
        for tile in sorted(tiles):
            if mine.get_tile(tile) != peer.get_tile(tile):
                raise RuntimeError(f"{name}: tile {tile} differs from MapProxy's")


PARTS = ("sample", "features", "tiles")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--quick", action="store_true", help="1 run each, fewer levels: smoke run")
    parser.add_argument("--runs", type=int, default=5, help="alternating runs of parts 2 and 3")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}"
    )
    args = parser.parse_args()
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}; known: {', '.join(PARTS)}")
    runs = 1 if args.quick else args.runs
    ogr2ogr = require_tools()
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {machine()}", flush=True)
    if "sample" in parts:
        print("\n".join(generate_sample_map(args.data, 1 if args.quick else 3)), flush=True)
    if "features" in parts:
        print("\n".join(features_part(ogr2ogr, args.data, runs)), flush=True)
    if "tiles" in parts:
        levels = QUICK_TILE_LEVELS if args.quick else TILE_LEVELS
        print("\n".join(tiles_part(args.data, levels, runs)), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as error:
        print(f"bench/offline.py failed: {error}", file=sys.stderr)
        sys.exit(1)
