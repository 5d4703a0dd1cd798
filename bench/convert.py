"""Conversion benchmark: offmaps vs `mapproxy-util export`, same tiles, same machine, same run.

1. Renders a cache of real map tiles from the OpenStreetMap extract of central Helsinki
   (scripts/render_osm.py, Mapnik) into a TMS folder, once (kept in bench/out/).
2. Exports it to MBTiles, GeoPackage and Esri compact bundles with MapProxy 7 and with offmaps,
   and to PMTiles with offmaps (MapProxy has no PMTiles export), in alternating runs (ours, peer,
   ours, peer, ...; ``--runs``, 3 by default): the median seconds of each side, tiles per second,
   the ratio of the medians, and peak memory. Every run's output is counted; the last output of
   each side is then read back whole: the same tiles as the source and the same bytes (SHA-256)
   for every tile.
3. Converts a synthetic archive of 1,048,576 distinct tiles (all of level 10) between formats with
   offmaps, to show that peak memory stays flat.

Run: ``.venv/bin/python bench/convert.py`` (``make bench`` runs every benchmark).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import shutil
import sqlite3
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import Measurement, machine, measure

from offmaps.containers import TilesetMetadata, open_reader, open_writer
from offmaps.errors import ContainerCorruptError
from offmaps.types import Tile, TileFormat

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
BIN = Path(sys.executable).parent
BBOX = (24.928, 60.161, 24.960, 60.182)  # central Helsinki, a little past the extract
ZOOMS = (12, 21)

# MapProxy writes the export grid's rows as they are: MBTiles counts rows from the bottom (the
# source folder's grid, origin sw), GeoPackage and Esri bundles from the top, so those two are
# exported on a grid with origin nw; on the sw grid MapProxy writes them upside down (the first
# run of this benchmark timed those). With either grid it copies the PNGs byte for byte.
MAPPROXY_YAML = """\
services:
  demo:
layers:
  - name: osm
    title: OpenStreetMap Helsinki
    sources: [osm_cache]
caches:
  osm_cache:
    grids: [webmercator]
    sources: []
    format: image/png
    cache:
      type: file
      directory_layout: tms
      directory: {directory}
grids:
  webmercator:
    base: GLOBAL_WEBMERCATOR
    origin: sw
    num_levels: 25
  webmercator_nw:
    base: GLOBAL_WEBMERCATOR
    origin: nw
    num_levels: 25
"""


class Target:
    """One export format: MapProxy's name and grid for it, and where each side writes it."""

    def __init__(
        self, kind: str, grid: str, label: str, location: Callable[[Path], str], suffix: str
    ) -> None:
        self.kind, self.grid, self.label, self.location = kind, grid, label, location
        self.ours = OUT / f"ours-{label}{suffix}"
        self.theirs = OUT / f"mapproxy-{label}{suffix}"


TARGETS = [
    Target("mbtile", "webmercator", "mbtiles", str, ".mbtiles"),
    Target("geopackage", "webmercator_nw", "gpkg", str, ".gpkg"),
    Target("compact-v2", "webmercator_nw", "esri-compact", lambda p: f"esri-compact:{p}", ""),
]
PMTILES = OUT / "ours-pmtiles.pmtiles"


def source_cache(data: Path) -> tuple[Path, int]:
    """The rendered TMS folder (rendering it the first time) and its tile count."""
    folder = OUT / "helsinki-tms"
    if not folder.exists():
        mbtiles = OUT / "helsinki-render.mbtiles"
        mbtiles.unlink(missing_ok=True)
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "render_osm.py"),
                "--pbf",
                str(data / "osm" / "Helsinki.osm.pbf"),
                "--zooms",
                f"{ZOOMS[0]}-{ZOOMS[1]}",
                "--bbox",
                ",".join(map(str, BBOX)),
                "--out",
                str(mbtiles),
            ],
            check=True,
        )
        subprocess.run(
            [BIN / "offmaps", "tiles", "convert", str(mbtiles), f"tms:{folder}"], check=True
        )
    with open_reader(f"tms:{folder}") as reader:
        return folder, reader.count_tiles()


def run_mapproxy(folder: Path, target: Target) -> Measurement:
    config = OUT / "mapproxy.yaml"
    config.write_text(MAPPROXY_YAML.format(directory=folder))
    clear(target.theirs)
    return measure(
        [
            str(BIN / "mapproxy-util"),
            "export",
            "-f",
            str(config),
            "-q",
            "-q",
            "--grid",
            target.grid,
            "--source",
            "osm_cache",
            "--dest",
            str(target.theirs),
            "--type",
            target.kind,
            "--levels",
            f"{ZOOMS[0]}..{ZOOMS[1]}",
            "--coverage",
            ",".join(map(str, BBOX)),
            "--srs",
            "EPSG:4326",
        ]
    )


def run_offmaps(source: str, dest: str) -> Measurement:
    clear(Path(dest.split(":", 1)[1]) if dest.startswith("esri-") else Path(dest))
    return measure([str(BIN / "offmaps"), "tiles", "convert", source, dest])


def clear(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    for candidate in (path, path.with_suffix(".mbtiles"), path.with_suffix(".gpkg")):
        candidate.unlink(missing_ok=True)


def count(location: str) -> int:
    with open_reader(location) as reader:
        return reader.count_tiles()


def digests(location: str) -> dict[Tile, bytes]:
    """SHA-256 of every tile of a container, by tile."""
    with open_reader(location) as reader:
        return {tile: hashlib.sha256(data).digest() for tile, data in reader.iter_tiles()}


def gpkg_digests(path: Path) -> dict[Tile, bytes]:
    """SHA-256 of every tile row of a GeoPackage read with sqlite3 alone, without its tile matrix.

    MapProxy 7 writes ``gpkg_tile_matrix`` rows for levels 0-19 only (``range(20)`` in its
    GeoPackage cache), so the tiles it exports at levels 20 and 21 have no tile matrix and a reader
    that follows the specification (offmaps' refuses the file) cannot place them. Reading the rows
    directly still checks that MapProxy copied every tile, to the right place, byte for byte.
    """
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        (table,) = db.execute(
            "SELECT table_name FROM gpkg_contents WHERE data_type = 'tiles'"
        ).fetchone()
        return {
            Tile(column, row, zoom): hashlib.sha256(data).digest()
            for zoom, column, row, data in db.execute(
                f'SELECT zoom_level, tile_column, tile_row, tile_data FROM "{table}"'
            )
        }


def gpkg_levels_without_matrix(path: Path) -> list[int]:
    """Levels holding tiles that have no ``gpkg_tile_matrix`` row (a GeoPackage requires one)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        (table,) = db.execute(
            "SELECT table_name FROM gpkg_contents WHERE data_type = 'tiles'"
        ).fetchone()
        rows = db.execute(
            f'SELECT DISTINCT zoom_level FROM "{table}" WHERE zoom_level NOT IN '
            "(SELECT zoom_level FROM gpkg_tile_matrix WHERE table_name = ?) ORDER BY 1",
            (table,),
        )
        return [zoom for (zoom,) in rows]


def check_count(who: str, location: str, tiles: int) -> None:
    written = count(location)
    if written != tiles:
        raise RuntimeError(f"{who} wrote {written:,} of {tiles:,} tiles")


def check_same(who: str, location: str, source: dict[Tile, bytes]) -> list[str]:
    """The same tiles as the source and the same bytes for every one of them; notes to print."""
    notes = []
    try:
        written = digests(location)
    except ContainerCorruptError as error:
        missing = gpkg_levels_without_matrix(Path(location)) if location.endswith(".gpkg") else []
        if not missing:
            raise
        # checked below from the rows themselves; the file is reported as not to spec
        written = gpkg_digests(Path(location))
        notes.append(
            f"{who}: no gpkg_tile_matrix row for levels {', '.join(map(str, missing))}, which "
            f"hold {sum(1 for t in written if t.z in missing):,} of its tiles (offmaps' reader "
            f"refuses the file: {error}); its tile rows, read with sqlite3, were checked"
        )
    if written.keys() != source.keys():
        raise RuntimeError(
            f"{who}: {len(written.keys() - source.keys()):,} tiles not in the source, "
            f"{len(source.keys() - written.keys()):,} of the source missing"
        )
    differing = sum(1 for tile, digest in written.items() if source[tile] != digest)
    if differing:
        raise RuntimeError(f"{who}: {differing:,} tiles differ from the source's bytes")
    return notes


def median_of(runs: list[Measurement]) -> float:
    return statistics.median(r.seconds for r in runs)


def spread(runs: list[Measurement]) -> str:
    return f"{min(r.seconds for r in runs):.2f}-{max(r.seconds for r in runs):.2f}"


def real_tiles(data: Path, runs: int) -> list[str]:
    folder, tiles = source_cache(data)
    source = f"tms:{folder}"
    ours: dict[str, list[Measurement]] = {t.label: [] for t in TARGETS}
    ours["pmtiles"] = []
    theirs: dict[str, list[Measurement]] = {t.label: [] for t in TARGETS}
    # alternating: each round runs ours then MapProxy's export of each format, so a burst of
    # load on this shared machine (or the page cache MapProxy's 2 GB leaves) falls on both sides
    for round_ in range(runs):
        for target in TARGETS:
            dest = target.location(target.ours)
            ours[target.label].append(run_offmaps(source, dest))
            check_count("offmaps", dest, tiles)
            theirs[target.label].append(run_mapproxy(folder, target))
            check_count("MapProxy", target.location(target.theirs), tiles)
            mine, peer = ours[target.label][-1], theirs[target.label][-1]
            print(
                f"round {round_ + 1} {target.label}: offmaps {mine.seconds:.2f} s "
                f"{mine.peak_mb:.0f} MB, MapProxy {peer.seconds:.2f} s {peer.peak_mb:.0f} MB",
                flush=True,
            )
        ours["pmtiles"].append(run_offmaps(source, str(PMTILES)))
        check_count("offmaps", str(PMTILES), tiles)
        print(f"round {round_ + 1} pmtiles: offmaps {ours['pmtiles'][-1].seconds:.2f} s")
    # every run was counted; the last output of each side is read back whole
    expected = digests(source)
    notes = []
    for target in TARGETS:
        notes += check_same(f"offmaps {target.label}", target.location(target.ours), expected)
        notes += check_same(f"MapProxy {target.label}", target.location(target.theirs), expected)
    notes += check_same("offmaps pmtiles", str(PMTILES), expected)
    lines = [
        f"Source: {tiles:,} PNG tiles rendered with Mapnik from OpenStreetMap (central Helsinki, "
        f"z{ZOOMS[0]}-{ZOOMS[1]}), as a TMS folder. {runs} alternating runs of each side; "
        "seconds are medians (ranges in brackets), tiles/s and the ratio are of the medians. "
        "Every output counted; the last of each side has the source's tiles and bytes (SHA-256 "
        "of every tile).",
        "",
        "| target | offmaps s | MapProxy s | offmaps tiles/s | MapProxy tiles/s | ratio "
        "| offmaps peak MB | MapProxy peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target in TARGETS:
        mine, peer = ours[target.label], theirs[target.label]
        lines.append(
            f"| {target.label} | {median_of(mine):.2f} ({spread(mine)}) "
            f"| {median_of(peer):.2f} ({spread(peer)}) | {tiles / median_of(mine):,.0f} "
            f"| {tiles / median_of(peer):,.0f} | {median_of(peer) / median_of(mine):.1f}x "
            f"| {max(r.peak_mb for r in mine):.0f} | {max(r.peak_mb for r in peer):.0f} |"
        )
    mine = ours["pmtiles"]
    lines.append(
        f"| pmtiles | {median_of(mine):.2f} ({spread(mine)}) | (no PMTiles export) "
        f"| {tiles / median_of(mine):,.0f} | | | {max(r.peak_mb for r in mine):.0f} | |"
    )
    for note in notes:
        lines += ["", f"Note: {note}"]
    return lines


def synthetic(million: bool) -> list[str]:
    z = 10 if million else 8
    source = OUT / f"synthetic-z{z}.mbtiles"
    n = 4**z
    if not source.exists():
        meta = TilesetMetadata(tile_format=TileFormat.PNG, name="synthetic")
        with open_writer(source, meta) as writer:
            header = b"\x89PNG\r\n\x1a\n"
            for x in range(2**z):
                for y in range(2**z):
                    writer.write_tile(
                        Tile(x, y, z), header + x.to_bytes(4, "big") + y.to_bytes(4, "big")
                    )
    lines = [
        "",
        f"Synthetic: {n:,} distinct tiles (level {z}, 16 bytes each), offmaps only.",
        "",
        "| conversion | tiles/s | peak MB |",
        "|---|---:|---:|",
    ]
    chain = [
        (str(source), str(OUT / "synthetic.pmtiles")),
        (str(OUT / "synthetic.pmtiles"), str(OUT / "synthetic.gpkg")),
        (str(OUT / "synthetic.gpkg"), f"esri-compact:{OUT / 'synthetic-compact'}"),
        (f"esri-compact:{OUT / 'synthetic-compact'}", str(OUT / "synthetic-back.mbtiles")),
    ]
    for src, dst in chain:
        clear(Path(dst.split(":", 1)[-1]) if dst.startswith("esri") else Path(dst))
        result = run_offmaps(src, dst)
        lines.append(
            f"| {src.rsplit('/', 1)[-1]} → {dst.rsplit('/', 1)[-1]} "
            f"| {n / result.seconds:,.0f} | {result.peak_mb:.0f} |"
        )
        print(lines[-1], flush=True)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--small", action="store_true", help="65,536 synthetic tiles, not 1M")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs of each side")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {machine()}")
    lines = real_tiles(args.data, args.runs) + synthetic(million=not args.small)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
