"""Tile cache benchmark: seeding and dedup, offmaps vs `mapproxy-seed` (MapProxy 7), same run.

1. **Seeding.** A deterministic upstream tile server (bench/_tile_upstream.py, its own process on
   loopback, counting the requests it answers) serves made-up tiles: varied street-map PNGs,
   unique per tile, and one plain blue PNG for every sea tile. The Helsinki region
   (24.0-25.8°E, 59.95-60.55°N, 24,629 tiles at z0-15, a third of them sea) is seeded from it
   by ``offmaps cache create`` + ``offmaps cache seed --data DIR`` and by ``mapproxy-seed`` (a
   ``tile`` source and a ``file`` cache), each a process timed from start to exit, with the same
   concurrency (offmaps' ``upstream.concurrency``, MapProxy's ``-c``) and no rate limit, fresh
   caches each time, alternating (ours, peer, ours, peer, ...). Then both caches are checked to
   hold the same tiles with the same bytes, and both seeds are run again over their full caches:
   offmaps must fetch nothing; what MapProxy refetches is counted (with ``refresh_before`` set
   to the epoch, which makes it skip what it has, and with its default, which refetches all).
2. **Dedup.** Bytes on disk of an offmaps cache (its blob folder and index) vs MapProxy's file
   cache without and with ``link_single_color_images`` (and its ``mbtiles`` cache), each seeded
   once from the same upstream: (a) the real tiles that bench/convert.py renders of central
   Helsinki with Mapnik (served from its TMS folder), z12-20; (b) an area of the Atlantic at
   z0-11, one blue tile nearly everywhere. Tiles, logical bytes, disk usage (``du`` blocks and
   apparent size), files, distinct contents, and the ratio to offmaps.

Run: ``.venv/bin/python bench/cache_seed.py`` (``--quick`` for a smoke run; ``--parts seed`` or
``--parts dedup`` for one part; ``--latency-ms N`` to delay every upstream answer; ``--src DIR``
to time offmaps from another source tree, e.g. an export of an older commit).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _http import free_port, serving
from _measure import Measurement, fresh, machine, measure
from _tile_upstream import _bases, sea_png, synthetic_tile
from convert import BBOX as REAL_BBOX
from convert import source_cache

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
WORK = OUT / "cache-seed"
BIN = Path(sys.executable).parent
CACHE = "bench"
RATE = 10_000  # offmaps' highest requests_per_second: no limit at these speeds
SAMPLE = 200

BBox = tuple[float, float, float, float]
Key = tuple[int, int, int]  # z, x, y (rows from the top)

SEED_BBOX: BBox = (24.0, 59.95, 25.8, 60.55)
OCEAN_BBOX: BBox = (-40.0, 30.0, -30.0, 40.0)

MAPPROXY_YAML = """\
services:
  demo:
layers:
  - name: upstream
    title: bench upstream
    sources: [upstream_cache]
caches:
  upstream_cache:
    grids: [webmercator]
    sources: [upstream_tiles]
    format: image/png
    link_single_color_images: {link}
    cache:
{cache}
sources:
  upstream_tiles:
    type: tile
    url: {url}
    grid: webmercator
    on_error:
      404:
        response: transparent
        cache: false
grids:
  webmercator:
    base: GLOBAL_WEBMERCATOR
    origin: nw
    num_levels: 25
"""
FILE_CACHE = """\
      type: file
      directory_layout: tms
      directory: {directory}
"""
MBTILES_CACHE = """\
      type: mbtiles
      filename: {filename}
"""
SEED_YAML = """\
seeds:
  area:
    caches: [upstream_cache]
    grids: [webmercator]
    coverages: [area]
    levels:
      from: {low}
      to: {high}
{refresh}coverages:
  area:
    bbox: [{west}, {south}, {east}, {north}]
    srs: "EPSG:4326"
"""
# a refresh_before of the epoch: "refresh tiles older than 1970", i.e. only fetch missing tiles
# (without refresh_before, mapproxy-seed overwrites every tile: "Overwriting: all tiles")
SKIP_STORED = '    refresh_before:\n      time: "1970-01-01T00:00:00"\n'


@dataclass(frozen=True)
class Run:
    """One timed seed: seconds, peak memory, upstream requests during it."""

    side: str
    seconds: float
    peak_mb: float
    requests: int
    tiles: int

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.seconds


class Upstream:
    """The loopback upstream: its URL templates and its request counter."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.client = httpx.Client(timeout=10.0)

    def requests(self) -> int:
        stats: dict[str, int] = self.client.get(f"{self.base}/_stats").json()
        return stats["requests"]

    def template(self, kind: str, style: str) -> str:
        if style == "offmaps":
            return f"{self.base}/{kind}/{{z}}/{{x}}/{{y}}.png"
        return f"{self.base}/{kind}/%(z)s/%(x)s/%(y)s.png"


@contextmanager
def upstream_server(folder: Path | None, latency_ms: float) -> Iterator[Upstream]:
    port = free_port()
    command: list[str | Path] = [
        sys.executable,
        ROOT / "bench" / "_tile_upstream.py",
        *("--port", str(port), "--latency-ms", str(latency_ms)),
    ]
    if folder is not None:
        command += ["--folder", folder]
    base = f"http://127.0.0.1:{port}"
    WORK.mkdir(parents=True, exist_ok=True)
    with serving(command, f"{base}/_stats", log=WORK / "upstream.log"):
        upstream = Upstream(base)
        try:
            yield upstream
        finally:
            upstream.client.close()


def bbox_text(bbox: BBox) -> str:
    return ",".join(map(str, bbox))


# --- offmaps ---------------------------------------------------------------------------------


def offmaps_create(data: Path, template: str, zooms: tuple[int, int], concurrency: int) -> None:
    """A cache of the upstream in a fresh data folder (not timed: MapProxy's YAML is not)."""
    fresh(data).mkdir(parents=True)
    subprocess.run(
        [
            *(BIN / "offmaps", "cache", "create", CACHE, "--source", template),
            *("--zooms", f"{zooms[0]}-{zooms[1]}", "--rate", str(RATE)),
            *("--concurrency", str(concurrency), "--data", data),
        ],
        check=True,
        capture_output=True,
    )


def offmaps_seed(data: Path, bbox: BBox, zooms: tuple[int, int]) -> tuple[Measurement, Any]:
    done = measure(
        [
            *(str(BIN / "offmaps"), "cache", "seed", CACHE, "--bbox", bbox_text(bbox)),
            *("--zooms", f"{zooms[0]}-{zooms[1]}", "--data", str(data), "--json"),
        ]
    )
    return done, json.loads(done.output)


def offmaps_measure(data: Path, bbox: BBox, zooms: tuple[int, int]) -> Measurement:
    return offmaps_seed(data, bbox, zooms)[0]


def offmaps_tiles(data: Path) -> dict[Key, tuple[str, int]]:
    """Every tile of the cache: its SHA-256 and size, read from the index."""
    index = data / "tile-caches" / "index.sqlite"
    with closing(sqlite3.connect(f"{index.as_uri()}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT z, x, y, sha256, size FROM tiles").fetchall()
    return {(z, x, y): (sha256, size) for z, x, y, sha256, size in rows}


def offmaps_blob_count(data: Path) -> int:
    """Distinct contents the cache keeps: the rows of its blob file."""
    blobs = data / "tile-caches" / "blobs.sqlite"
    with closing(sqlite3.connect(f"{blobs.as_uri()}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM blobs").fetchone()[0])


# --- MapProxy --------------------------------------------------------------------------------


def mapproxy_config(
    where: Path,
    url: str,
    bbox: BBox,
    zooms: tuple[int, int],
    *,
    cache: str = "file",
    link: bool = False,
    skip_stored: bool = False,
) -> tuple[Path, Path, Path]:
    """MapProxy's configuration and seed file for a fresh cache; returns them and the cache."""
    fresh(where).mkdir(parents=True)
    if cache == "file":
        target = where / "cache"
        text = FILE_CACHE.format(directory=target)
    else:
        target = where / "cache.mbtiles"
        text = MBTILES_CACHE.format(filename=target)
    config = where / "mapproxy.yaml"
    config.write_text(
        MAPPROXY_YAML.format(cache=text.rstrip("\n"), url=url, link=str(link).lower())
    )
    return config, write_seed(where, bbox, zooms, skip_stored=skip_stored), target


def write_seed(where: Path, bbox: BBox, zooms: tuple[int, int], *, skip_stored: bool) -> Path:
    seed = where / ("seed-skip.yaml" if skip_stored else "seed.yaml")
    west, south, east, north = bbox
    refresh = SKIP_STORED if skip_stored else ""
    seed.write_text(
        SEED_YAML.format(
            low=zooms[0], high=zooms[1], refresh=refresh, west=west, south=south, east=east,
            north=north,
        )
    )  # fmt: skip
    return seed


def mapproxy_seed(config: Path, seed: Path, concurrency: int) -> Measurement:
    return measure(
        [
            *(str(BIN / "mapproxy-seed"), "-f", str(config), "-s", str(seed)),
            *("-c", str(concurrency), "-q", "-q"),
        ],
        cwd=config.parent,
    )


def mapproxy_files(cache: Path) -> dict[Key, Path]:
    """Every tile of a MapProxy file cache (``tms`` layout over a north-west-origin grid:
    ``z/x/y.png`` with rows from the top); links followed."""
    found: dict[Key, Path] = {}
    for z_dir in cache.iterdir():
        if not z_dir.name.isdigit():
            continue  # tile_locks, single_color_tiles
        for x_dir in z_dir.iterdir():
            for tile in x_dir.iterdir():
                if tile.name.endswith(".png"):
                    found[int(z_dir.name), int(x_dir.name), int(tile.name[:-4])] = tile
    return found


def mapproxy_mbtiles(archive: Path) -> dict[Key, bytes]:
    with closing(sqlite3.connect(f"{archive.as_uri()}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")
        # MapProxy writes its grid's row as tile_row as is: rows from the top here (origin nw)
        return {(int(z), int(x), int(y)): bytes(data) for z, x, y, data in rows}


# --- checks ----------------------------------------------------------------------------------


def per_zoom(keys: Any) -> dict[int, int]:
    return dict(sorted(Counter(key[0] for key in keys).items()))


def compare(
    label: str,
    ours: dict[Key, tuple[str, int]],
    theirs: dict[Key, bytes],
    expected: Any = None,
) -> int:
    """The same tiles with the same bytes in both caches (and, for a sample, the bytes the
    upstream serves); returns how many of the peer's tiles differ from ours."""
    if ours.keys() != theirs.keys():
        only_ours, only_theirs = ours.keys() - theirs.keys(), theirs.keys() - ours.keys()
        raise RuntimeError(
            f"{label}: different tile sets: {len(only_ours)} only in offmaps "
            f"(e.g. {sorted(only_ours)[:3]}), {len(only_theirs)} only in MapProxy "
            f"(e.g. {sorted(only_theirs)[:3]}); per level {per_zoom(ours)} vs {per_zoom(theirs)}"
        )
    differ = sum(hashlib.sha256(data).hexdigest() != ours[key][0] for key, data in theirs.items())
    if expected is not None:
        for key in random.Random(7).sample(sorted(ours), min(SAMPLE, len(ours))):
            if hashlib.sha256(expected(key)).hexdigest() != ours[key][0]:
                raise RuntimeError(f"{label}: offmaps holds other bytes for {key} than served")
    return differ


def read_files(files: dict[Key, Path]) -> dict[Key, bytes]:
    return {key: path.read_bytes() for key, path in files.items()}


# --- disk usage ------------------------------------------------------------------------------


def du(*paths: Path) -> tuple[int, int]:
    """Bytes of the blocks the paths take (``du -s -B1``) and their apparent size (``du -sb``),
    hard links counted once."""

    def total(*flags: str) -> int:
        done = subprocess.run(
            ["du", "-s", "-c", *flags, *map(str, paths)], capture_output=True, text=True, check=True
        )
        return int(done.stdout.strip().splitlines()[-1].split()[0])

    return total("-B1"), total("-b")


def file_count(root: Path) -> tuple[int, int, int]:
    """Regular files, distinct contents among them, and symbolic links under ``root``."""
    files = links = 0
    contents: set[str] = set()
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            if path.is_symlink():
                links += 1
            elif path.is_file():
                files += 1
                contents.add(hashlib.sha256(path.read_bytes()).hexdigest())
    return files, len(contents), links


# --- part 1: seeding -------------------------------------------------------------------------


def seeding(upstream: Upstream, zooms: tuple[int, int], runs: int, concurrency: int) -> list[str]:
    where = WORK / "seed"
    ours_data = where / "offmaps"
    template = upstream.template("synthetic", "offmaps")
    url = upstream.template("synthetic", "mapproxy")
    results: dict[str, list[Run]] = {"offmaps": [], "MapProxy": []}
    lines = [
        "| run | side | seconds | tiles/s | upstream requests | peak MB |",
        "|---|---|---:|---:|---:|---:|",
    ]

    def timed(side: str, work: Callable[[], Measurement]) -> Run:
        before = upstream.requests()
        done = work()
        return Run(side, done.seconds, done.peak_mb, upstream.requests() - before, 0)

    tiles = 0
    config, seed_file, cache_dir = Path(), Path(), Path()
    for run in range(1, runs + 1):
        offmaps_create(ours_data, template, zooms, concurrency)
        ours = timed("offmaps", partial(offmaps_measure, ours_data, SEED_BBOX, zooms))
        tiles = len(offmaps_tiles(ours_data))
        config, seed_file, cache_dir = mapproxy_config(where / "mapproxy", url, SEED_BBOX, zooms)
        theirs = timed("MapProxy", partial(mapproxy_seed, config, seed_file, concurrency))
        for measured in (ours, theirs):
            result = replace(measured, tiles=tiles)
            results[result.side].append(result)
            lines.append(
                f"| {run} | {result.side} | {result.seconds:.2f} | {result.tiles_per_s:,.0f} "
                f"| {result.requests:,} | {result.peak_mb:.0f} |"
            )
            print(lines[-1], flush=True)

    # the last run's caches: same tiles, same bytes, the bytes the upstream serves
    bases, sea = _bases(), sea_png()
    stored = offmaps_tiles(ours_data)
    theirs_tiles = read_files(mapproxy_files(cache_dir))
    differ = compare("seeding", stored, theirs_tiles, lambda key: synthetic_tile(bases, sea, *key))
    if differ:
        raise RuntimeError(f"seeding: {differ} of MapProxy's tiles differ from offmaps'")
    if any(r.requests != tiles for rs in results.values() for r in rs):
        raise RuntimeError("a seed asked the upstream for more or fewer tiles than the area has")
    checked = (
        f"Checked: both caches hold the same {tiles:,} tiles (per level "
        f"{per_zoom(stored)}), every tile byte-identical between them, {SAMPLE} sampled tiles "
        f"byte-identical to what the upstream serves; every seed asked the upstream once per tile."
    )
    print(checked, flush=True)

    # reruns over the full caches
    rerun_lines = [
        "| rerun over the full cache | seconds | upstream requests |",
        "|---|---:|---:|",
    ]
    again = timed("offmaps", partial(offmaps_measure, ours_data, SEED_BBOX, zooms))
    if again.requests:
        raise RuntimeError(f"offmaps' rerun asked the upstream for {again.requests} tiles")
    rerun_lines.append(f"| offmaps | {again.seconds:.2f} | {again.requests:,} |")
    skip_seed = write_seed(config.parent, SEED_BBOX, zooms, skip_stored=True)
    skipping = timed("MapProxy", partial(mapproxy_seed, config, skip_seed, concurrency))
    rerun_lines.append(
        f"| MapProxy, `refresh_before` the epoch (skip stored tiles) | {skipping.seconds:.2f} "
        f"| {skipping.requests:,} |"
    )
    default = timed("MapProxy", partial(mapproxy_seed, config, seed_file, concurrency))
    rerun_lines.append(
        f"| MapProxy, default seed (no `refresh_before`) | {default.seconds:.2f} "
        f"| {default.requests:,} |"
    )
    for line in rerun_lines[2:]:
        print(line, flush=True)

    median = {side: statistics.median(r.seconds for r in rs) for side, rs in results.items()}
    summary = [
        "| side | seconds of each run | median s | tiles/s (median) |",
        "|---|---|---:|---:|",
    ]
    for side, rs in results.items():
        each = ", ".join(f"{r.seconds:.2f}" for r in rs)
        summary.append(f"| {side} | {each} | {median[side]:.2f} | {tiles / median[side]:,.0f} |")
    ratio = median["MapProxy"] / median["offmaps"]
    verdict = "met" if ratio >= 2 else "MISSED"
    head = (
        f"Seeding {tiles:,} tiles (z{zooms[0]}-{zooms[1]}, bbox {bbox_text(SEED_BBOX)}) from the "
        f"loopback upstream, concurrency {concurrency} on both sides, {runs} alternating runs "
        "each, fresh caches."
    )
    tail = f"offmaps / MapProxy tiles/s = {ratio:.2f}x (target >= 2x: {verdict})"
    print(tail, flush=True)
    return [head, "", *lines, "", *summary, "", tail, "", checked, "", *rerun_lines]


# --- part 2: dedup ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """What one cache takes."""

    label: str
    tiles: int
    logical: int
    blocks: int
    apparent: int
    files: int
    contents: int
    links: int
    seconds: float
    differ: int

    def row(self, base: Stored) -> str:
        return (
            f"| {self.label} | {self.tiles:,} | {self.logical:,} | {self.blocks:,} "
            f"| {self.apparent:,} | {self.files:,} | {self.contents:,} | {self.links:,} "
            f"| {self.blocks / base.blocks:.2f}x | {self.seconds:.1f} |"
        )


def dedup_case(
    upstream: Upstream, kind: str, bbox: BBox, zooms: tuple[int, int], concurrency: int
) -> list[str]:
    where = WORK / f"dedup-{kind}"
    data = where / "offmaps"
    offmaps_create(data, upstream.template(kind, "offmaps"), zooms, concurrency)
    done, _ = offmaps_seed(data, bbox, zooms)
    ours = offmaps_tiles(data)
    blocks, apparent = du(data / "tile-caches")
    files, _, _ = file_count(data / "tile-caches")
    rows = [
        Stored(
            "offmaps (blobs + index)",
            len(ours),
            sum(size for _, size in ours.values()),
            blocks,
            apparent,
            files,  # the index and the blob file
            offmaps_blob_count(data),
            0,
            done.seconds,
            0,
        )
    ]
    url = upstream.template(kind, "mapproxy")
    for label, cache, link in (
        ("MapProxy file cache", "file", False),
        ("MapProxy file cache, `link_single_color_images: true`", "file", True),
        ("MapProxy mbtiles cache", "mbtiles", False),
    ):
        config, seed_file, target = mapproxy_config(
            where / f"mapproxy-{cache}{'-link' if link else ''}", url, bbox, zooms, cache=cache,
            link=link,
        )  # fmt: skip
        timed = mapproxy_seed(config, seed_file, concurrency)
        if cache == "file":
            theirs = read_files(mapproxy_files(target))
            files, contents, links = file_count(target)
            blocks, apparent = du(target)
        else:
            theirs = mapproxy_mbtiles(target)
            contents = len({hashlib.sha256(data).digest() for data in theirs.values()})
            files, links = 1, 0
            blocks, apparent = du(target)
        differ = compare(f"dedup {kind}: {label}", ours, theirs)
        logical = sum(len(data) for data in theirs.values())
        rows.append(
            Stored(
                label, len(theirs), logical, blocks, apparent, files, contents, links,
                timed.seconds, differ,
            )
        )  # fmt: skip
        print(rows[-1].row(rows[0]), flush=True)
    head = [
        "| cache | tiles | logical bytes | bytes on disk (du blocks) | apparent bytes (du -b) "
        "| files | distinct contents | symlinks | on disk / offmaps | seed s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = [
        f"{r.label}: {r.differ} tiles whose bytes differ from offmaps' (and the upstream's)"
        for r in rows
        if r.differ
    ]
    return [*head, *(r.row(rows[0]) for r in rows), *(["", *notes] if notes else [])]


def dedup(
    upstream: Upstream,
    real: tuple[int, int],
    ocean: tuple[int, int],
    concurrency: int,
    folder_tiles: int,
) -> list[str]:
    lines = [
        f"(a) Real tiles: central Helsinki rendered with Mapnik by bench/convert.py "
        f"({folder_tiles:,} tiles in its TMS folder, z12-21), seeded z{real[0]}-{real[1]} "
        f"over bbox {bbox_text(REAL_BBOX)} through the loopback upstream.",
        "",
        *dedup_case(upstream, "real", REAL_BBOX, real, concurrency),
        "",
        f"(b) Ocean: the synthetic upstream over bbox {bbox_text(OCEAN_BBOX)} (mid-Atlantic), "
        f"z{ocean[0]}-{ocean[1]}: one plain blue tile except where a tile touches land.",
        "",
        *dedup_case(upstream, "synthetic", OCEAN_BBOX, ocean, concurrency),
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--quick", action="store_true", help="fewer levels, one run: a smoke run")
    parser.add_argument("--runs", type=int, default=3, help="timed seeds of each side")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight, both")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="upstream delay per tile")
    parser.add_argument("--parts", default="seed,dedup", help="seed, dedup, or both")
    parser.add_argument("--src", type=Path, help="run offmaps from this source tree (before/after)")
    args = parser.parse_args()
    if args.src is not None:  # the offmaps children import this tree (the venv's is editable)
        os.environ["PYTHONPATH"] = str(args.src.resolve())
    parts = set(args.parts.split(","))
    runs = 1 if args.quick else args.runs
    seed_zooms = (0, 13) if args.quick else (0, 15)
    real_zooms = (12, 18) if args.quick else (12, 20)
    ocean_zooms = (0, 9) if args.quick else (0, 11)
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {machine()}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    folder, folder_tiles = source_cache(args.data) if "dedup" in parts else (None, 0)
    lines: list[str] = []
    with upstream_server(folder, args.latency_ms) as upstream:
        if "seed" in parts:
            lines += seeding(upstream, seed_zooms, runs, args.concurrency)
        if "dedup" in parts:
            lines += ["", *dedup(upstream, real_zooms, ocean_zooms, args.concurrency, folder_tiles)]
    print()
    print("\n".join(lines))
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
