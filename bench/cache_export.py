"""Cache export and import benchmark (issue 17): offmaps vs `mapproxy-util export`, same run.

1. **Export** (``--parts export``). The real tiles bench/convert.py renders of central Helsinki
   with Mapnik (61,791 PNG tiles, z12-21, a TMS folder) exported clipped to a real, irregular
   polygon (the city blocks of Kluuvi, Kaartinkaupunki and Kruununhaka, the 41
   ``place=city_block`` multipolygons of the OpenStreetMap extract merged across the streets
   between them, 184 vertices) into Esri compact bundles and into MBTiles, by
   ``offmaps cache export`` (the command line, a process timed from start to exit, as a user runs
   it) from the TMS folder and from an offmaps tile cache holding the same tiles (a data folder's
   cache seeded from the rendered archive), and by ``mapproxy-util export`` of the same polygon
   and levels from a MapProxy ``file`` cache over the same TMS folder (it copies whole tiles: no
   clipping). Alternating runs (ours, peer, ...); tiles/s of each side and the ratio. Checked:
   the same tile keys but for the tiles the clip leaves out (no pixel centre inside), every tile
   wholly inside byte-identical to the source and to MapProxy's, every clipped tile counted and
   its pixels checked (outside transparent, inside the source's).
2. **Memory** (``--parts memory``). An export of 1,098,181 tiles (z0-10, clipped to a circle
   inscribed in the Web Mercator square) from a synthetic MBTiles holding every tile of z0-10 as
   one of 16 small PNGs (its ``tiles`` a view over ``map`` and ``images``, as MBTiles allows),
   into MBTiles and into compact bundles, ``--max-tiles`` raised: seconds and peak memory, of
   the exporting process and of its whole process tree (the clipping workers included), sampled
   from /proc.
3. **Import** (``--parts import``). An overlay of 102,720 tiles (the Helsinki region, z0-16):
   points and lines over transparency (most), fully transparent and fully opaque tiles, imported
   with merge (``offmaps cache import``, a timed process) into an offmaps cache holding a
   street-map-like basemap tile (unique bytes) at every one of those keys: tiles/s, the share of
   tiles that needed compositing; the result checked tile by tile against Pillow's
   ``alpha_composite`` of the two. No peer: MapProxy has no import, and GDAL's mosaicking tools
   work on rasters, not on a tile cache's tiles.

Run: ``.venv/bin/python bench/cache_export.py`` (``--quick`` for a smoke run, ``--parts
export,memory,import``, ``--runs``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import morecantile
import numpy as np
import shapely
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import Measurement, fresh, machine, measure
from _tile_upstream import _bases, sea_png, synthetic_tile
from convert import BBOX as REAL_BBOX
from convert import MAPPROXY_YAML, source_cache

from offmaps.containers import TilesetMetadata, open_reader, open_writer
from offmaps.containers.clip import AreaClipper, TileRelation
from offmaps.tiling import AreaOfInterest, get_tms, tile_cover
from offmaps.types import Tile, TileFormat, ZoomRange

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
WORK = OUT / "cache-export"
BIN = Path(sys.executable).parent
TMS = get_tms("WebMercatorQuad")
CACHE = "helsinki"
BASEMAP = "basemap"
IMPORT_BBOX = (23.95, 59.95, 25.85, 60.55)  # the Helsinki region: 102,720 tiles at z0-16
HALF_WORLD = 20037508.342789244

# MAPPROXY_YAML (from bench/convert.py): a file cache over the rendered TMS folder (rows from the
# bottom); MBTiles is exported on that grid, compact bundles on the same grid with rows from the top


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def location(kind: str, path: Path) -> str:
    return f"esri-compact:{path}" if kind == "compact" else str(path)


def read_all(where: str) -> dict[Tile, bytes]:
    with open_reader(where) as reader:
        return dict(reader.iter_tiles())


# --- part 1: export of the rendered Helsinki tiles -------------------------------------------


def city_blocks(data: Path) -> Any:
    """The polygon: OSM's city blocks of central Helsinki merged across the streets (lon/lat)."""
    import pyogrio.raw  # noqa: PLC0415 - only this part needs it

    _, _, wkb, fields = pyogrio.raw.read(
        data / "osm" / "Helsinki.osm.pbf",
        layer="multipolygons",
        bbox=REAL_BBOX,
        columns=["name", "place"],
    )
    geoms = shapely.from_wkb(wkb, on_invalid="ignore")
    blocks = [
        g
        for g, place in zip(geoms, fields[1], strict=True)
        if g is not None and place == "city_block"
    ]
    merged = shapely.union_all(blocks).buffer(0.0008, quad_segs=4).buffer(-0.0006, quad_segs=4)
    return shapely.simplify(merged, 0.00002)


def write_area(geometry: Any, name: str) -> tuple[Path, Path]:
    """The area as a GeoJSON file (offmaps' --aoi) and a WKT file (MapProxy's --coverage)."""
    WORK.mkdir(parents=True, exist_ok=True)
    geojson, wkt = WORK / f"{name}.geojson", WORK / f"{name}.wkt"
    feature = {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(geometry)}
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    wkt.write_text(shapely.to_wkt(geometry, rounding_precision=-1))
    return geojson, wkt


def offmaps_cache(data_dir: Path, zooms: tuple[int, int]) -> Path:
    """A data folder whose cache ``helsinki`` holds the rendered tiles (made once, kept)."""
    done = data_dir / ".complete"
    if done.exists():
        return data_dir
    fresh(data_dir).mkdir(parents=True)
    archive = OUT / "helsinki-render.mbtiles"
    zoom_text = f"{zooms[0]}-{zooms[1]}"
    subprocess.run(
        [
            *(BIN / "offmaps", "cache", "create", CACHE, "--archive", archive),
            *("--zooms", zoom_text, "--data", data_dir),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *(BIN / "offmaps", "cache", "seed", CACHE, "--bbox", ",".join(map(str, REAL_BBOX))),
            *("--zooms", zoom_text, "--data", data_dir, "--json"),
        ],
        check=True,
        capture_output=True,
    )
    done.touch()
    return data_dir


def offmaps_export(source: list[str], dest: str, aoi: Path, zooms: str, *extra: str) -> Measurement:
    command = [str(BIN / "offmaps"), "cache", "export", *source, dest, "--aoi", str(aoi)]
    return measure([*command, "--zooms", zooms, "--json", *extra])


def mapproxy_export(
    folder: Path, kind: str, dest: Path, wkt: Path, zooms: tuple[int, int]
) -> Measurement:
    config = WORK / "mapproxy.yaml"
    config.write_text(MAPPROXY_YAML.format(directory=folder))
    return measure(
        [
            *(str(BIN / "mapproxy-util"), "export", "-f", str(config), "-q", "-q"),
            *("--grid", "webmercator" if kind == "mbtiles" else "webmercator_nw"),
            *("--source", "osm_cache", "--dest", str(dest)),
            *("--type", "mbtile" if kind == "mbtiles" else "compact-v2"),
            *("--levels", f"{zooms[0]}..{zooms[1]}", "--coverage", str(wkt), "--srs", "EPSG:4326"),
        ]
    )


@dataclass
class Side:
    label: str
    kind: str
    runs: list[Measurement]
    written: int = 0
    report: dict[str, Any] | None = None

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def rate(self) -> float:
        return self.written / self.seconds

    def spread(self) -> str:
        return f"{min(r.seconds for r in self.runs):.2f}-{max(r.seconds for r in self.runs):.2f}"


def gdal_mask(clipper: AreaClipper, tile: Tile, width: int, height: int) -> Any:
    """The pixels of ``tile`` whose centre is in the area, by GDAL (rasterio's geometry_mask),
    as clipping computed them before it had its own rasteriser: the checks do not take the
    clipper's word for it."""
    from affine import Affine  # noqa: PLC0415
    from rasterio.features import geometry_mask  # noqa: PLC0415

    b = clipper.tms.xy_bounds(morecantile.Tile(tile.x, tile.y, tile.z))
    dx, dy = (b.right - b.left) / width, (b.top - b.bottom) / height
    part = shapely.clip_by_rect(clipper.area, b.left - dx, b.bottom - dy, b.right + dx, b.top + dy)
    if part.is_empty:
        return np.zeros((height, width), dtype=bool)
    transform = Affine(dx, 0.0, b.left, 0.0, -dy, b.top)
    return geometry_mask([part], out_shape=(height, width), transform=transform, invert=True)


def check_export(
    label: str,
    ours: dict[Tile, bytes],
    theirs: dict[Tile, bytes],
    source: dict[Tile, bytes],
    clipper: AreaClipper,
    report: dict[str, Any],
) -> list[str]:
    """Our clipped export against MapProxy's whole tiles and the source; notes, or an error."""
    notes = []
    extra = ours.keys() - theirs.keys()
    if extra:
        raise RuntimeError(
            f"{label}: {len(extra)} tiles MapProxy did not export, e.g. {min(extra)}"
        )
    for tile, data in theirs.items():
        if source[tile] != data:
            raise RuntimeError(f"MapProxy: tile {tile} differs from the source")
    left = theirs.keys() - ours.keys()
    touching = 0
    for tile in left:
        relation = clipper.relation(tile)
        if relation is TileRelation.OUTSIDE:
            touching += 1  # MapProxy's coverage test takes tiles that only touch the polygon
        elif gdal_mask(clipper, tile, 256, 256).any():
            raise RuntimeError(f"{label}: left out tile {tile}, which has pixels inside")
    inside = clipped = kept_cut = 0
    clipped_bytes = source_bytes = 0
    for tile, data in ours.items():
        relation = clipper.relation(tile)
        if relation is TileRelation.OUTSIDE:
            raise RuntimeError(f"{label}: wrote tile {tile}, which is outside the area")
        if relation is TileRelation.INSIDE or data == source[tile]:
            if data != source[tile]:
                raise RuntimeError(f"{label}: tile {tile}, wholly inside, differs from the source")
            inside += relation is TileRelation.INSIDE
            kept_cut += relation is TileRelation.CUT
            continue
        clipped += 1
        clipped_bytes += len(data)
        source_bytes += len(source[tile])
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
        original = np.asarray(Image.open(io.BytesIO(source[tile])).convert("RGBA"))
        mask = gdal_mask(clipper, tile, pixels.shape[1], pixels.shape[0])
        if pixels[~mask].any() or not np.array_equal(pixels[mask], original[mask]):
            raise RuntimeError(f"{label}: clipped tile {tile} has the wrong pixels")
    if clipped != report["clipped"] or inside + kept_cut != report["copied"]:
        raise RuntimeError(
            f"{label}: {clipped} clipped and {inside + kept_cut} copied, the command said "
            f"{report['clipped']} and {report['copied']}"
        )
    notes.append(
        f"{label}: {len(ours):,} tiles = {inside:,} wholly inside (byte-identical to the source "
        f"and MapProxy's) + {kept_cut:,} cut with every pixel centre inside (kept as they are) + "
        f"{clipped:,} clipped (pixels checked against GDAL's rasterisation of the polygon; "
        f"{clipped_bytes:,} bytes, {source_bytes:,} before clipping); MapProxy's "
        f"{len(theirs):,} tiles less "
        f"{len(left) - touching:,} cut tiles with no pixel centre inside and {touching:,} that "
        "only touch the polygon"
    )
    return notes


def export_part(data: Path, runs: int, zooms: tuple[int, int]) -> list[str]:
    folder, total = source_cache(data)
    area = city_blocks(data)
    geojson, wkt = write_area(area, "city-blocks")
    aoi = AreaOfInterest.from_geometry(area, crs="EPSG:4326")
    zoom_text = f"{zooms[0]}-{zooms[1]}"
    cover = tile_cover(aoi, TMS, ZoomRange(*zooms))
    clipper = AreaClipper(aoi, TMS)
    cut = sum(
        clipper.relation(Tile(int(x), int(y), int(z))) is TileRelation.CUT
        for level in range(zooms[0], zooms[1] + 1)
        for x, y, z in cover.level(level).to_array()
    )
    print(
        f"area: {len(shapely.get_coordinates(area))} vertices, cover z{zoom_text}: "
        f"{cover.total:,} tiles, {cut:,} cut by the boundary",
        flush=True,
    )
    data_dir = offmaps_cache(WORK / "helsinki-data", (12, 21))
    sources = {
        "tms": [f"tms:{folder}"],
        "cache": [CACHE, "--data", str(data_dir)],
    }
    ours = {
        (src, kind): Side(f"offmaps {src} → {kind}", kind, [])
        for kind in ("compact", "mbtiles")
        for src in sources
    }
    theirs = {kind: Side(f"MapProxy → {kind}", kind, []) for kind in ("compact", "mbtiles")}
    suffix = {"compact": "", "mbtiles": ".mbtiles"}
    for round_ in range(runs):
        for kind in ("compact", "mbtiles"):
            for src, args in sources.items():
                side = ours[src, kind]
                dest = fresh(WORK / f"ours-{src}{suffix[kind]}")
                side.runs.append(offmaps_export(args, location(kind, dest), geojson, zoom_text))
                side.report = json.loads(side.runs[-1].output)
                side.written = side.report["written"]
            peer = theirs[kind]
            dest = fresh(WORK / f"mapproxy{suffix[kind]}")
            peer.runs.append(mapproxy_export(folder, kind, dest, wkt, zooms))
            with open_reader(location(kind, dest)) as reader:
                peer.written = reader.count_tiles()
            print(
                f"round {round_ + 1} {kind}: "
                + ", ".join(
                    f"{ours[s, kind].label} {ours[s, kind].runs[-1].seconds:.2f} s" for s in sources
                )
                + f", MapProxy {peer.runs[-1].seconds:.2f} s (load {load()})",
                flush=True,
            )
    # checks: the last output of each side, read back whole
    peers = {kind: read_all(location(kind, WORK / f"mapproxy{suffix[kind]}")) for kind in theirs}
    with open_reader(f"tms:{folder}") as reader:
        source = {
            tile: reader.get_tile(tile)
            for tile in peers["compact"].keys() | peers["mbtiles"].keys()
        }
    if peers["compact"] != peers["mbtiles"]:
        raise RuntimeError("MapProxy's compact bundles and MBTiles hold different tiles")
    notes: list[str] = []
    for (src, kind), side in ours.items():
        written = read_all(location(kind, WORK / f"ours-{src}{suffix[kind]}"))
        assert side.report is not None
        notes += check_export(side.label, written, peers[kind], source, clipper, side.report)
    lines = [
        f"Source: {total:,} PNG tiles rendered with Mapnik from OpenStreetMap (central Helsinki, "
        f"z12-21), as a TMS folder (MapProxy's file cache, offmaps `tms:`) and as an offmaps "
        f"cache seeded from the same tiles (`--data DIR {CACHE}`). Area: the city blocks polygon, "
        f"{len(shapely.get_coordinates(area))} vertices; its cover at z{zoom_text} is "
        f"{cover.total:,} tiles, {cut:,} of them cut by its boundary. {runs} alternating runs; "
        "seconds are medians (ranges in brackets), tiles/s of the medians, each side's own tiles "
        "written (ours: inside + clipped; MapProxy's: whole tiles, more of them).",
        "",
        "| export | offmaps s | MapProxy s | offmaps tiles/s | MapProxy tiles/s | ratio "
        "| clipped | offmaps peak MB | MapProxy peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (_, kind), side in ours.items():
        peer = theirs[kind]
        assert side.report is not None
        lines.append(
            f"| {side.label} | {side.seconds:.2f} ({side.spread()}) | {peer.seconds:.2f} "
            f"({peer.spread()}) | {side.rate:,.0f} | {peer.rate:,.0f} "
            f"| **{side.rate / peer.rate:.1f}×** | {side.report['clipped']:,} of "
            f"{side.written:,} | {max(r.peak_mb for r in side.runs):.0f} "
            f"| {max(r.peak_mb for r in peer.runs):.0f} |"
        )
    for note in notes:
        lines += ["", f"Checked: {note}"]
    return lines


# --- part 2: peak memory of an export of 1,000,000 tiles -------------------------------------


def small_pngs(count: int) -> list[bytes]:
    """``count`` distinct small RGBA PNGs (lines over transparency), a few hundred bytes each."""
    rng = random.Random(17)
    found = []
    for _ in range(count):
        image = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            points = [(rng.randint(0, 255), rng.randint(0, 255)) for _ in range(2)]
            draw.line(points, fill=(200, 30, 30, 255), width=3)
        out = io.BytesIO()
        image.save(out, "PNG")
        found.append(out.getvalue())
    return found


def world_archive(max_zoom: int) -> Path:
    """Every tile of z0-``max_zoom`` as one of 16 PNGs: an MBTiles whose ``tiles`` is a view
    over ``map`` and ``images`` (made once, kept)."""
    path = WORK / f"world-z0-{max_zoom}.mbtiles"
    if path.exists():
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    with closing(sqlite3.connect(partial)) as db:
        db.executescript(
            """
            CREATE TABLE metadata (name TEXT, value TEXT);
            CREATE TABLE map (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER,
                              tile_id TEXT);
            CREATE TABLE images (tile_id TEXT PRIMARY KEY, tile_data BLOB);
            CREATE VIEW tiles AS SELECT map.zoom_level, map.tile_column, map.tile_row,
                images.tile_data FROM map JOIN images ON images.tile_id = map.tile_id;
            """
        )
        meta = {
            "name": "synthetic world",
            "format": "png",
            "minzoom": "0",
            "maxzoom": str(max_zoom),
            "bounds": "-180,-85.0511,180,85.0511",
        }
        db.executemany("INSERT INTO metadata VALUES (?, ?)", meta.items())
        images = small_pngs(16)
        db.executemany(
            "INSERT INTO images VALUES (?, ?)", ((str(i), d) for i, d in enumerate(images))
        )
        db.executemany(
            "INSERT INTO map VALUES (?, ?, ?, ?)",
            (
                (z, x, y, str((x * 7 + y * 13 + z) % 16))
                for z in range(max_zoom + 1)
                for x in range(2**z)
                for y in range(2**z)
            ),
        )
        db.execute("CREATE UNIQUE INDEX map_index ON map (zoom_level, tile_column, tile_row)")
        db.commit()
    partial.rename(path)
    return path


def tree_memory(pid: int) -> tuple[int, int]:
    """The resident and proportional set sizes (bytes) of ``pid`` and all its descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        tree.update(children)
        frontier += children
    rss = pss = 0
    for member in tree:
        try:
            text = Path(f"/proc/{member}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
    return rss, pss


@dataclass(frozen=True)
class TreeRun:
    seconds: float
    peak_mb: float  # the largest single process of the tree (getrusage)
    tree_rss_mb: float  # sampled: the sum over the tree, shared pages counted in each process
    tree_pss_mb: float  # sampled: the sum over the tree, shared pages divided among them
    output: str


def measure_tree(command: list[str]) -> TreeRun:
    """Run ``command``; its wall time, the peak of its largest process, and of its tree."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err)
        peak_rss = peak_pss = 0
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            rss, pss = tree_memory(child.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{err.read().decode()}")
        mb = 2**20
        return TreeRun(
            seconds, usage.ru_maxrss / 1024, peak_rss / mb, peak_pss / mb, out.read().decode()
        )


def memory_part(max_zoom: int) -> list[str]:
    archive = world_archive(max_zoom)
    circle = shapely.Point(0, 0).buffer(HALF_WORLD * 0.999, quad_segs=16)
    geojson, _ = write_area(circle, "circle")
    aoi = AreaOfInterest.from_geometry(circle, crs="EPSG:3857")
    cover = tile_cover(aoi, TMS, ZoomRange(0, max_zoom))
    with open_reader(archive) as reader:
        held = reader.count_tiles()
    lines = [
        f"Source: {archive.name}, {held:,} tiles (every tile of z0-{max_zoom}, 16 distinct PNGs of "
        f"~{statistics.mean(map(len, small_pngs(16))):.0f} bytes; `tiles` a view over `map` and "
        f"`images`). Area: a circle inscribed in the Web Mercator square (64 vertices, "
        f"EPSG:3857); its cover at z0-{max_zoom}: {cover.total:,} tiles. `offmaps cache export "
        f"{archive.name} DEST --aoi circle.geojson --zooms 0-{max_zoom} --max-tiles 2000000` "
        "(the default of 2 worker processes).",
        "",
        "| destination | s | tiles/s | written | clipped | left out | peak MB, exporting process "
        "| peak MB, tree RSS | peak MB, tree PSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, dest in (("mbtiles", WORK / "memory.mbtiles"), ("compact", WORK / "memory-compact")):
        fresh(dest)
        run = measure_tree(
            [
                *(str(BIN / "offmaps"), "cache", "export", str(archive), location(kind, dest)),
                *("--aoi", str(geojson), "--aoi-crs", "EPSG:3857", "--zooms", f"0-{max_zoom}"),
                *("--max-tiles", "2000000", "--json"),
            ]
        )
        report = json.loads(run.output)
        with open_reader(location(kind, dest)) as reader:
            if reader.count_tiles() != report["written"]:
                raise RuntimeError(
                    f"{kind}: {reader.count_tiles()} tiles, {report['written']} said"
                )
        lines.append(
            f"| {kind} | {run.seconds:.1f} | {report['written'] / run.seconds:,.0f} "
            f"| {report['written']:,} | {report['clipped']:,} | {report['left_out']:,} "
            f"| {run.peak_mb:.0f} | {run.tree_rss_mb:.0f} | {run.tree_pss_mb:.0f} |"
        )
        print(lines[-1], f"(load {load()})", flush=True)
        fresh(dest)
    return lines


# --- part 3: import with merge of an overlay -------------------------------------------------

_KINDS = ("lines", "transparent", "opaque")
_WEIGHTS = (70, 20, 10)


def overlay_kind(tile: Tile) -> str:
    seed = zlib.crc32(f"{tile.z}/{tile.x}/{tile.y}".encode())
    return random.Random(seed).choices(_KINDS, _WEIGHTS)[0]


def overlay_tile(key: tuple[int, int, int]) -> tuple[tuple[int, int, int], bytes]:
    """An overlay tile, unique per key: points and lines over transparency (some drawn
    semi-transparent), nothing at all, or an opaque RGB tile."""
    z, x, y = key
    tile = Tile(x, y, z)
    kind = overlay_kind(tile)
    rng = random.Random(zlib.crc32(f"overlay {z}/{x}/{y}".encode()))
    out = io.BytesIO()
    if kind == "transparent":
        Image.new("RGBA", (256, 256), (0, 0, 0, 0)).save(out, "PNG")
        return key, out.getvalue()
    image = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    if kind == "opaque":
        image = Image.new("RGB", (256, 256), (rng.randrange(256), rng.randrange(256), 120))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(1, 6)):
        points = [(rng.randint(-20, 276), rng.randint(-20, 276)) for _ in range(rng.randint(2, 5))]
        alpha = rng.choice([255, 255, 160])
        draw.line(points, fill=(220, 40, 40, alpha), width=rng.choice([2, 3, 4]))
    for _ in range(rng.randint(0, 12)):
        px, py = rng.randint(0, 255), rng.randint(0, 255)
        draw.ellipse(
            (px - 4, py - 4, px + 4, py + 4), fill=(30, 60, 200, 255), outline=(255, 255, 255, 255)
        )
    image.save(out, "PNG")
    return key, out.getvalue()


def cover_keys(bbox: tuple[float, float, float, float], zooms: tuple[int, int]) -> list[Tile]:
    cover = tile_cover(AreaOfInterest.from_bbox(*bbox, crs="EPSG:4326"), TMS, ZoomRange(*zooms))
    return [
        Tile(int(x), int(y), int(z))
        for level in range(zooms[0], zooms[1] + 1)
        for x, y, z in cover.level(level).to_array()
    ]


def overlay_archive(keys: list[Tile], zooms: tuple[int, int]) -> Path:
    path = WORK / f"overlay-z{zooms[0]}-{zooms[1]}.mbtiles"
    if path.exists():
        return path
    meta = TilesetMetadata(
        tile_format=TileFormat.PNG, name="overlay", minzoom=zooms[0], maxzoom=zooms[1]
    )
    partial = WORK / f"overlay-z{zooms[0]}-{zooms[1]}-partial.mbtiles"
    partial.unlink(missing_ok=True)
    with ProcessPoolExecutor(2) as pool, open_writer(partial, meta) as writer:
        for (z, x, y), data in pool.map(
            overlay_tile, ((t.z, t.x, t.y) for t in keys), chunksize=256
        ):
            writer.write_tile(Tile(x, y, z), data)
    partial.rename(path)
    return path


@contextmanager
def caches(data_dir: Path) -> Iterator[Any]:
    from offmaps.catalog import Catalog  # noqa: PLC0415
    from offmaps.services import open_caches  # noqa: PLC0415
    from offmaps.settings import ServerSettings  # noqa: PLC0415

    catalog = Catalog(data_dir)
    try:
        service = open_caches(ServerSettings(data_dir=data_dir), catalog)
        try:
            yield service
        finally:
            service.close()
    finally:
        catalog.close()


def basemap(keys: list[Tile], zooms: tuple[int, int]) -> Path:
    """A data folder whose cache ``basemap`` holds a street-map-like tile (bytes unique per
    tile, bench/_tile_upstream.py's) at every key (made once, kept; runs import into copies)."""
    from offmaps.cache.tiles import store_tiles  # noqa: PLC0415

    data_dir = WORK / f"basemap-z{zooms[0]}-{zooms[1]}"
    if (data_dir / ".complete").exists():
        return data_dir
    fresh(data_dir).mkdir(parents=True)
    subprocess.run(
        [
            *(BIN / "offmaps", "cache", "create", BASEMAP),
            *("--source", "http://127.0.0.1:9/{z}/{x}/{y}.png"),
            *("--zooms", f"{zooms[0]}-{zooms[1]}", "--data", data_dir),
        ],
        check=True,
        capture_output=True,
    )
    bases, sea = _bases(), sea_png()
    with caches(data_dir) as service:
        for start in range(0, len(keys), 1000):
            batch = [
                (t, synthetic_tile(bases, sea, t.z, t.x, t.y)) for t in keys[start : start + 1000]
            ]
            store_tiles(service.index, service.blobs, BASEMAP, batch)
    (data_dir / ".complete").touch()
    return data_dir


def check_import(data_dir: Path, overlay: Path, keys: list[Tile], sample: int) -> Counter[str]:
    """Every tile against what a merge must give: transparent overlay tiles leave the basemap's
    bytes, opaque ones are stored as given, the rest is Pillow's alpha_composite of the two
    (pixels compared, for ``sample`` of them)."""
    from offmaps.cache.export import CacheTileReader  # noqa: PLC0415

    bases, sea = _bases(), sea_png()
    found: Counter[str] = Counter()
    rng = random.Random(7)
    with caches(data_dir) as service, open_reader(overlay) as incoming:
        stored = CacheTileReader(service.index, service.blobs, BASEMAP)
        for tile in keys:
            kind = overlay_kind(tile)
            found[kind] += 1
            base = synthetic_tile(bases, sea, tile.z, tile.x, tile.y)
            top, now = incoming.get_tile(tile), stored.get_tile(tile)
            if kind == "transparent" and now != base:
                raise RuntimeError(f"tile {tile}: a transparent overlay tile changed the basemap")
            if kind == "opaque" and now != top:
                raise RuntimeError(f"tile {tile}: an opaque overlay tile was not stored as given")
            if kind == "lines" and rng.random() < sample / len(keys):
                expected = Image.alpha_composite(
                    Image.open(io.BytesIO(base)).convert("RGBA"),
                    Image.open(io.BytesIO(top)).convert("RGBA"),
                )
                got = Image.open(io.BytesIO(now)).convert("RGBA")
                if not np.array_equal(np.asarray(expected), np.asarray(got)):
                    raise RuntimeError(f"tile {tile}: the merged pixels are not the composite")
                found["composites checked"] += 1
    return found


def import_part(zooms: tuple[int, int], runs: int) -> list[str]:
    keys = cover_keys(IMPORT_BBOX, zooms)
    print(f"import: {len(keys):,} tiles at z{zooms[0]}-{zooms[1]}", flush=True)
    started = time.perf_counter()
    overlay = overlay_archive(keys, zooms)
    pristine = basemap(keys, zooms)
    print(f"inputs ready in {time.perf_counter() - started:.0f} s (load {load()})", flush=True)
    target = WORK / "import-data"
    results = []
    for round_ in range(runs):
        fresh(target)
        shutil.copytree(pristine, target)
        run = measure(
            [
                *(str(BIN / "offmaps"), "cache", "import", str(overlay), BASEMAP),
                *("--data", str(target), "--json"),
            ]
        )
        results.append((run, json.loads(run.output)))
        print(
            f"round {round_ + 1}: {run.seconds:.1f} s, {run.peak_mb:.0f} MB (load {load()})",
            flush=True,
        )
    run, report = results[-1]
    kinds = check_import(target, overlay, keys, sample=500)
    if report["merged"] != len(keys) or report["new"] or report["failures"]:
        raise RuntimeError(f"import: {report}")
    seconds = statistics.median(r.seconds for r, _ in results)
    spread = f"{min(r.seconds for r, _ in results):.1f}-{max(r.seconds for r, _ in results):.1f}"
    return [
        f"Overlay: {len(keys):,} PNG tiles (the Helsinki region {IMPORT_BBOX}, z{zooms[0]}-"
        f"{zooms[1]}), unique per tile: {kinds['lines']:,} with points and lines over "
        f"transparency (some lines at alpha 160), {kinds['transparent']:,} fully transparent, "
        f"{kinds['opaque']:,} fully opaque (RGB). Basemap: an offmaps cache holding bench/"
        "_tile_upstream.py's synthetic street-map tile (3-25 KB, bytes unique per tile; sea "
        f"tiles one blue PNG) at each of those keys. `offmaps cache import overlay.mbtiles "
        f"{BASEMAP} --data DIR --json` (merge, the default), {runs} run(s) on fresh copies.",
        "",
        "| tiles | s | tiles/s | merged | composited (decoded both, encoded) | left as they were "
        "(transparent) | stored as given (opaque) | changed | peak MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(keys):,} | {seconds:.1f} ({spread}) | {len(keys) / seconds:,.0f} "
        f"| {report['merged']:,} | {kinds['lines']:,} ({kinds['lines'] / len(keys):.0%}) "
        f"| {kinds['transparent']:,} | {kinds['opaque']:,} | {report['changed']:,} "
        f"| {max(r.peak_mb for r, _ in results):.0f} |",
        "",
        "Checked: every tile of the cache after the last run: transparent overlay tiles left the "
        f"basemap's bytes, opaque ones stored as given, and {kinds['composites checked']} "
        "sampled composited tiles pixel for pixel equal to Pillow's alpha_composite of basemap "
        "and overlay.",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("OFFMAPS_DATA", ROOT / "data"))
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one run: a check run")
    parser.add_argument("--runs", type=int, default=3, help="alternating export runs of each side")
    parser.add_argument("--import-runs", type=int, default=1, help="timed imports")
    parser.add_argument("--parts", default="export,memory,import", help="export, memory, import")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    runs = 1 if args.quick else args.runs
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {machine()}")
    print(
        f"load average at start: {load()} ({time.strftime('%H:%M:%S', time.gmtime())} UTC)",
        flush=True,
    )
    lines: list[str] = []
    if "export" in parts:
        lines += ["", *export_part(args.data, runs, (12, 19) if args.quick else (12, 21))]
    if "memory" in parts:
        lines += ["", *memory_part(8 if args.quick else 10)]
    if "import" in parts:
        lines += ["", *import_part((0, 13) if args.quick else (0, 16), args.import_runs)]
    print("\n".join(lines))
    print(f"load average at end: {load()} ({time.strftime('%H:%M:%S', time.gmtime())} UTC)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
