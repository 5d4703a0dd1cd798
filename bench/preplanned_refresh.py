"""Preplanned map areas (issue 18): an incremental refresh vs a full repackage of the same area.

The data folder (built once, untimed, kept in bench/out/preplanned-refresh/template-xN):

- feature service ``osm``: the points, lines and multipolygons of the OpenStreetMap extract of
  central Helsinki (the GeoPackage of bench/serve_features.py), ``--copies`` times (4), each copy
  shifted east and north on a grid so they sit side by side (the extract alone holds 12,947
  rows; the issue asks for tens of thousands in an area), imported with ``offmaps import
  features``;
- tile layer ``osm-render``: the 61,791 Mapnik tiles of bench/convert.py (z12-21) as an MBTiles
  archive in ``DATA/tiles``;
- a public web map showing the three feature layers and the tile layer (its export limit
  raised so the area's cover fits).

Each run copies the template afresh and opens it in this process with
``build_services(ServerSettings(data_dir=...))``; every timed step is a call of the job API
(``services.areas.create``, ``.refresh`` or ``.change``) until its packaging job has ended, the
same job machinery ``offmaps serve`` runs:

1. create the area (the first packaging: a full extraction), untimed warm-up;
2. edit 1 % of the area's rows (updates, deletes and inserts), then (b) refresh: incremental;
3. (a) change the area to the same bbox: a new epoch, extracted from scratch (the full
   repackage of the same data), which is also the reference (b) is checked against;
4. edit 1 % of the rows again and change 1 % of the archive's tiles (90 % redrawn, 10 %
   removed), then (c) refresh: incremental too (the archive's mark changed: its tiles are
   compared with the previous package's in SQLite and only those that differ applied);
5. (a) change the area to the same bbox again: the reference for (c).

Checked, untimed, every run: each job's result (incremental or not, no layer errors); every new
package verifies (``verify_package``); its replica rows equal the fresh extraction's, row by row
(global id, every attribute, geometry bytes), with the row counts the edits imply; (c)'s tile
archive equals the fresh extraction's tile for tile (bytes) and in its metadata; the update
files, applied as a device applies them to a copy of the previous package's files, give the new
package's rows and tiles.

Prints the seconds of (a), (b) and (c), each from the API call to the job's end and the job's own
(accepted to ended, the runner's clock: the headline, as ``change`` checks the area before it
starts the job and ``refresh`` does not), the ratios (a)/(b) and (a)/(c) (target >= 10x) and the
update files' bytes over the full package's bytes (target <= 5 %), medians over ``--runs`` (3).
``--profile`` adds a run, not counted, with a cProfile of its (b), (c) and (a) (its second)
(the packaging jobs only, in the runner's thread).

``--source cache`` makes the tile layer a tile cache (docs/cache.md) instead: a cache
``osm-render`` of an MBTiles archive outside the data folder (``bench/out/preplanned-refresh/
cache-source.mbtiles``, the rendered tiles, copied afresh each run), seeded in the template
with the rendered tiles and a blank tile for every other tile of the area's cover (z12-21), as
a cache seeded over the area from an upstream holds it; (c)'s 1 % of the tiles are redrawn in
the cache (stored anew) and removed from both the cache's index and its source archive.

``--source vt`` makes the tile layer the vector tiles made from the feature service itself
(``osm-vt``, an operational layer of the map, levels 10-18, docs/features.md) instead of the
raster archive: its tiles change only through the rows, so (b) and (c) are both refreshes after
1 % of the rows edited (the archive's mark, the service's generation, moved: the tiles the
changed rows touch are made again and compared, docs/preplanned.md), and both archives are
checked tile for tile, and in their metadata, against the fresh extraction that follows them.

Run: ``flock /work/notes/bench.lock .venv/bin/python bench/preplanned_refresh.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import pstats
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio.raw
import shapely
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serve_features
from _http import publish_map
from _measure import fresh, machine
from convert import source_cache

from offmaps.cache import CacheDefinition, CacheSource, SourceKind, store_tiles
from offmaps.cache.index import Span
from offmaps.containers.mbtiles import tms_row
from offmaps.features.model import Delete, Insert, Update
from offmaps.offline import preplanned
from offmaps.offline.areas import MapAreaChanges, MapAreaRequest
from offmaps.offline.package import verify_package
from offmaps.offline.updates import (
    ChainState,
    apply_feature_update,
    apply_tile_update,
    write_chain_state,
)
from offmaps.services import Services, build_services
from offmaps.settings import ServerSettings
from offmaps.state import AreaPackage, MapArea
from offmaps.tiling import area_from_bbox, get_tms, tile_cover
from offmaps.types import Tile, ZoomRange

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
WORK = OUT / "preplanned-refresh"
BIN = Path(sys.executable).parent
SERVICE = "osm"
TILES = "osm-render"
VECTOR_TILES = f"{SERVICE}-vt"  # --source vt: the feature service's own vector tiles
LAYERS = tuple(serve_features.LAYERS)  # points, lines, multipolygons
SOURCE_BBOX = (24.928, 60.161, 24.96, 60.182)  # the rendered tiles' bounds, past the extract's
STEP = (0.02, 0.016)  # degrees between copies: the extract is 0.018 x 0.015
SHARE = 0.01  # of the area's rows, of the archive's tiles
OWNER = "bench"
SERVER_URL = "http://127.0.0.1:8000"
CACHE_SOURCE = WORK / "cache-source.mbtiles"  # --source cache: the cache's source archive


# --- the data folder ------------------------------------------------------------------------


def grid(copies: int) -> list[tuple[float, float]]:
    """The (dx, dy) shift of each copy: columns first, as square as it goes."""
    columns = math.ceil(math.sqrt(copies))
    return [((i % columns) * STEP[0], (i // columns) * STEP[1]) for i in range(copies)]


def area_bbox(copies: int) -> list[float]:
    """The area: every copy, and the rendered tiles."""
    shifts = grid(copies)
    west, south, east, north = SOURCE_BBOX
    return [
        west,
        south,
        round(east + max(dx for dx, _ in shifts), 6),
        round(north + max(dy for _, dy in shifts), 6),
    ]


def replicated(source: Path, copies: int) -> Path:
    """The extract's three layers ``copies`` times, shifted on a grid (written once)."""
    target = WORK / f"helsinki-osm-x{copies}.gpkg"
    if target.exists():
        return target
    WORK.mkdir(parents=True, exist_ok=True)
    partial = fresh(target.with_name("partial.gpkg"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for layer, geometry_type in serve_features.LAYERS.items():
            meta, _, wkb, fields = pyogrio.raw.read(source, layer=layer)
            shapes = shapely.from_wkb(wkb)
            parts_wkb, parts_fields = [], [[] for _ in fields]
            for dx, dy in grid(copies):
                moved = shapely.transform(shapes, lambda xy, dx=dx, dy=dy: xy + np.array([dx, dy]))
                parts_wkb.append(shapely.to_wkb(moved))
                for column, values in zip(parts_fields, fields, strict=True):
                    column.append(values)
            pyogrio.raw.write(
                partial,
                np.concatenate(parts_wkb),
                [np.concatenate(column) for column in parts_fields],
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


def made_valid(source: Path) -> Path:
    """``source`` with every polygon made valid (``buffer(0)``), as MultiPolygons, those left
    empty dropped (written once): a few of the extract's multipolygons are invalid, and the
    vector tile service (``--source vt``) fails on them (GEOS cannot clip a self-intersecting
    ring)."""
    target = source.with_name(f"{source.stem}-valid.gpkg")
    if target.exists():
        return target
    partial = fresh(target.with_name("partial-valid.gpkg"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for layer, geometry_type in serve_features.LAYERS.items():
            meta, _, wkb, fields = pyogrio.raw.read(source, layer=layer)
            shapes = shapely.from_wkb(wkb)
            if "Polygon" in geometry_type:
                fixed = shapely.buffer(shapes, 0)
                single = shapely.get_type_id(fixed) == 3  # a Polygon: one part
                fixed[single] = [shapely.multipolygons([g]) for g in fixed[single]]
                kept = ~shapely.is_empty(fixed)  # a degenerate ring leaves nothing: dropped
                shapes, fields = fixed[kept], [values[kept] for values in fields]
            pyogrio.raw.write(
                partial,
                shapely.to_wkb(shapes),
                fields,
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


def rendered_archive(data: Path) -> Path:
    """bench/convert.py's rendered tiles as MBTiles (rendered the first time)."""
    folder, _ = source_cache(data)
    archive = OUT / "helsinki-render.mbtiles"
    if not archive.exists():
        subprocess.run(
            [BIN / "offmaps", "tiles", "convert", f"tms:{folder}", str(archive)], check=True
        )
    return archive


def blank_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (256, 256), (242, 239, 233)).save(out, "PNG")
    return out.getvalue()


def seed_cache(folder: Path, copies: int) -> None:
    """The tile cache ``osm-render`` of CACHE_SOURCE in the data folder ``folder``, holding
    every tile of the area's cover: the rendered ones, a blank tile elsewhere."""
    services = build_services(ServerSettings(data_dir=folder))
    try:
        with sqlite3.connect(CACHE_SOURCE) as conn:
            rendered = {
                Tile(x, tms_row(row, z), z): bytes(data)
                for z, x, row, data in conn.execute(
                    "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles"
                )
            }
        low, high = min(t.z for t in rendered), max(t.z for t in rendered)
        services.caches.create(
            CacheDefinition(
                name=TILES,
                title="OpenStreetMap (Mapnik)",
                source=CacheSource(kind=SourceKind.ARCHIVE, location=str(CACHE_SOURCE)),
                min_zoom=low,
                max_zoom=high,
            )
        )
        aoi = area_from_bbox(*area_bbox(copies)).aoi()
        blank = blank_png()
        batch: list[tuple[Tile, bytes]] = []
        for tile in tile_cover(aoi, get_tms("WebMercatorQuad"), ZoomRange(low, high)):
            batch.append((tile, rendered.get(tile, blank)))
            if len(batch) >= 5000:
                store_tiles(services.caches.index, services.caches.blobs, TILES, batch)
                batch = []
        store_tiles(services.caches.index, services.caches.blobs, TILES, batch)
    finally:
        services.close()


def template(data: Path, copies: int, source: str = "mbtiles") -> Path:
    """The data folder every run starts from (built once)."""
    folder = WORK / (f"template-x{copies}" + ("" if source == "mbtiles" else f"-{source}"))
    if (folder / "ready").exists():
        return folder
    fresh(folder).mkdir(parents=True)
    features = replicated(serve_features.source_geopackage(data), copies)
    if source == "vt":
        features = made_valid(features)
    layers = []
    for layer in LAYERS:
        done = subprocess.run(
            [
                *(BIN / "offmaps", "import", "features", features, "--layer", layer),
                *("--service", SERVICE, "--data", folder, "--json"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"offmaps import of {layer} failed:\n{done.stdout}\n{done.stderr}")
        collection = json.loads(done.stdout.strip().splitlines()[-1])["collection"]
        layers.append(
            {
                "type": "feature",
                "id": layer,
                "title": layer,
                "service": SERVICE,
                "layer": collection.partition(".")[2],
                "editing": {"create": True, "update": True, "delete": True},
            }
        )
    (folder / "tiles").mkdir(exist_ok=True)
    if source == "vt":
        layers.append(
            {
                "type": "vector_tile",
                "id": VECTOR_TILES,
                "title": "OpenStreetMap (vector tiles of the features)",
                "service": VECTOR_TILES,
                "export_tiles_allowed": True,
                "max_export_tile_count": 10_000_000,
            }
        )
        publish_map(folder, layers=layers)
        (folder / "ready").touch()
        return folder
    if source == "cache":
        shutil.copyfile(rendered_archive(data), CACHE_SOURCE)
        seed_cache(folder, copies)
    else:
        shutil.copyfile(rendered_archive(data), folder / "tiles" / f"{TILES}.mbtiles")
    basemap = {
        "type": "raster_tile",
        "id": TILES,
        "title": "OpenStreetMap (Mapnik)",
        "service": TILES,
        "export_tiles_allowed": True,
        "max_export_tile_count": 10_000_000,
    }
    publish_map(folder, basemap=[basemap], layers=layers)
    (folder / "ready").touch()
    return folder


# --- edits ----------------------------------------------------------------------------------


def in_area(services: Services, bbox: list[float]) -> dict[str, list[Any]]:
    """The features of each layer (all of them are in the area)."""
    store = services.catalog.feature_service(SERVICE)
    found = {}
    for layer in LAYERS:
        found[layer] = list(store.iter_features(layer))
    west, south, east, north = bbox
    box = shapely.box(west, south, east, north)
    for layer, features in found.items():
        outside = sum(1 for f in features if not box.intersects(f.geometry))
        if outside:
            raise RuntimeError(f"{layer}: {outside} rows outside the area {bbox}")
    return found


def edit_rows(services: Services, bbox: list[float], rng: random.Random) -> dict[str, int]:
    """Edit SHARE of the area's rows: 40 % updates (half with a moved geometry), 30 % deletes,
    30 % inserts (copies of existing rows, moved a little), spread over the layers by their
    sizes. Returns the edits made by kind."""
    store = services.catalog.feature_service(SERVICE)
    rows = in_area(services, bbox)
    total = sum(len(features) for features in rows.values())
    made = {"updates": 0, "deletes": 0, "inserts": 0, "rows": total}
    for layer, features in rows.items():
        count = round(SHARE * len(features))
        updates, deletes = round(0.4 * count), round(0.3 * count)
        inserts = count - updates - deletes
        picked = rng.sample(features, updates + deletes + inserts)
        edits: list[Insert | Update | Delete] = []
        for index, feature in enumerate(picked[:updates]):
            moved = index % 2 == 0
            edits.append(
                Update(
                    layer,
                    feature.global_id,
                    {"name": f"renamed {rng.randrange(10**9)}"},
                    geometry=shapely.affinity.translate(feature.geometry, 1e-5, 1e-5)
                    if moved
                    else None,
                    set_geometry=moved,
                )
            )
        edits += [Delete(layer, f.global_id) for f in picked[updates : updates + deletes]]
        for feature in picked[updates + deletes :]:
            properties = {k: v for k, v in feature.properties.items() if v is not None}
            properties["name"] = f"new {rng.randrange(10**9)}"
            geometry = shapely.affinity.translate(feature.geometry, -2e-5, 1e-5)
            edits.append(Insert(layer, properties, geometry))
        store.apply_edits(edits)
        made["updates"] += updates
        made["deletes"] += deletes
        made["inserts"] += inserts
    return made


def redraw(png: bytes, rng: random.Random) -> bytes:
    """The tile with a new feature drawn on it, as a renderer would redraw it."""
    with Image.open(io.BytesIO(png)) as image:
        canvas = image.convert("RGBA")
    draw = ImageDraw.Draw(canvas)
    x, y = rng.randrange(16, 200), rng.randrange(16, 200)
    draw.rectangle((x, y, x + 40, y + 24), fill=(200, 60, 60, 255), outline=(0, 0, 0, 255))
    out = io.BytesIO()
    canvas.save(out, "PNG", optimize=False)
    return out.getvalue()


def edit_tiles(archive: Path, rng: random.Random) -> dict[str, int]:
    """Change SHARE of the archive's tiles: 90 % redrawn, 10 % removed, in one transaction."""
    with sqlite3.connect(archive) as conn:
        keys = conn.execute("SELECT zoom_level, tile_column, tile_row FROM tiles").fetchall()
        picked = rng.sample(keys, round(SHARE * len(keys)))
        removed = picked[: round(0.1 * len(picked))]
        redrawn = picked[len(removed) :]
        for key in redrawn:
            (data,) = conn.execute(
                "SELECT tile_data FROM tiles WHERE zoom_level = ? AND tile_column = ? "
                "AND tile_row = ?",
                key,
            ).fetchone()
            conn.execute(
                "UPDATE tiles SET tile_data = ? WHERE zoom_level = ? AND tile_column = ? "
                "AND tile_row = ?",
                (redraw(bytes(data), rng), *key),
            )
        conn.executemany(
            "DELETE FROM tiles WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?",
            removed,
        )
    return {"tiles": len(keys), "redrawn": len(redrawn), "removed": len(removed)}


def edit_cache_tiles(services: Services, rng: random.Random) -> dict[str, int]:
    """Change SHARE of the cache's rendered tiles: 90 % redrawn (stored anew in the cache),
    10 % removed from the cache's index and from its source archive."""
    with sqlite3.connect(CACHE_SOURCE) as conn:
        keys = conn.execute("SELECT zoom_level, tile_column, tile_row FROM tiles").fetchall()
        picked = rng.sample(keys, round(SHARE * len(keys)))
        removed = picked[: round(0.1 * len(picked))]
        redrawn = []
        for key in picked[len(removed) :]:
            z, x, row = key
            (data,) = conn.execute(
                "SELECT tile_data FROM tiles WHERE zoom_level = ? AND tile_column = ? "
                "AND tile_row = ?",
                key,
            ).fetchone()
            redrawn.append((Tile(x, tms_row(row, z), z), redraw(bytes(data), rng)))
        conn.executemany(
            "DELETE FROM tiles WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?",
            removed,
        )
    caches = services.caches
    store_tiles(caches.index, caches.blobs, TILES, redrawn)
    spans = [Span(z, tms_row(row, z), x, x) for z, x, row in removed]
    if caches.index.truncate(TILES, spans, None) != len(removed):
        raise RuntimeError("the removed tiles were not all in the cache")
    held = caches.index.stats(TILES).tiles + len(removed)
    return {"tiles": held, "redrawn": len(redrawn), "removed": len(removed)}


# --- one packaging --------------------------------------------------------------------------


@dataclass(frozen=True)
class Packaging:
    """One timed packaging job."""

    seconds: float
    job_seconds: float
    result: dict[str, Any]
    package: AreaPackage


PROFILE_TO: list[Path] = []  # where the next packaging job's profile goes (--profile)


def profiled_packaging() -> None:
    """Make the packaging job (it runs in the job runner's thread) write a cProfile of itself
    to the path put in PROFILE_TO, when there is one; before build_services."""
    original = preplanned._package

    def packaging(*args: Any) -> Any:
        if not PROFILE_TO:
            return original(*args)
        profiler = cProfile.Profile()
        try:
            return profiler.runcall(original, *args)
        finally:
            profiler.dump_stats(PROFILE_TO.pop())

    preplanned._package = packaging  # type: ignore[assignment]


def timed(services: Services, start: Callable[[], MapArea], *, profile: Path | None) -> Packaging:
    """Start a packaging and wait for its job to end: seconds from the call to the end."""
    if profile is not None:
        PROFILE_TO.append(profile)
    began = time.perf_counter()
    area = start()
    assert area.job_id is not None
    while True:
        job = services.jobs.get(area.job_id)
        if job.status.done:
            break
        time.sleep(0.002)
    seconds = time.perf_counter() - began
    if job.status.value != "succeeded" or job.result is None:
        raise RuntimeError(f"packaging job {job.id} ended {job.status}: {job.error}")
    if job.result["layer_errors"] or job.result["table_errors"]:
        raise RuntimeError(f"packaging job {job.id} reported errors: {job.result}")
    assert job.finished is not None
    package = services.areas.package(services.areas.store.get(area.id))
    return Packaging(seconds, job.finished - job.created, job.result, package)


# --- checks ---------------------------------------------------------------------------------


def download(services: Services, area_id: str, package: AreaPackage, folder: Path) -> Path:
    """A package's files into ``folder`` (as a device holds them), verified."""
    del area_id  # the files are kept by their SHA-256, whichever area's
    files = services.areas.files
    fresh(folder).mkdir(parents=True)
    for entry in package.files:
        target = folder / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        with files.open(entry["sha256"]) as source, target.open("wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    report = verify_package(folder)
    if not report.ok:
        raise RuntimeError(f"package {package.number} does not verify: {report}")
    return folder


def feature_rows(replica: Path) -> dict[str, dict[str, tuple[Any, ...]]]:
    """Every row of each layer of a replica, by global id: its attributes and geometry bytes
    (the fid and the sync columns left out)."""
    rows: dict[str, dict[str, tuple[Any, ...]]] = {}
    with sqlite3.connect(replica) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM gpkg_contents WHERE data_type = 'features'"
            )
        ]
        for table in tables:
            columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
            kept = [c for c in columns if c != "fid"]
            gid = next(c for c in columns if c.lower() in ("globalid", "global_id"))
            found = {}
            selected = ", ".join(f'"{c}"' for c in kept)
            for row in conn.execute(f'SELECT {selected} FROM "{table}"'):
                values = dict(zip(kept, row, strict=True))
                found[str(values[gid])] = tuple(values[c] for c in kept)
            rows[table] = found
    return rows


def tile_rows(archive: Path) -> dict[tuple[int, int, int], bytes]:
    with sqlite3.connect(archive) as conn:
        return {
            (z, x, y): bytes(data)
            for z, x, y, data in conn.execute(
                "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles"
            )
        }


def tile_metadata(archive: Path) -> dict[str, str]:
    with sqlite3.connect(archive) as conn:
        return {str(name): str(value) for name, value in conn.execute("SELECT * FROM metadata")}


def same_tiles(
    label: str, got: Path, want: Path, applied: Path
) -> dict[tuple[int, int, int], bytes]:
    """Fail unless an archive holds a fresh extraction's tiles and metadata, and the previous
    archive with the update files applied its tiles; its tiles."""
    tiles = tile_rows(got)
    if tiles != tile_rows(want) or tiles != tile_rows(applied):
        raise RuntimeError(f"{label}: the tiles differ from a fresh extraction's or the updates'")
    if tile_metadata(got) != tile_metadata(want):
        raise RuntimeError(f"{label}: the archive's metadata differs from a fresh extraction's")
    return tiles


def same_rows(label: str, got: Path, want: Path) -> int:
    """Fail unless two replicas hold the same rows; their row count."""
    mine, theirs = feature_rows(got), feature_rows(want)
    if set(mine) != set(theirs):
        raise RuntimeError(f"{label}: layers {sorted(mine)} != {sorted(theirs)}")
    for table in mine:
        if mine[table] != theirs[table]:
            extra = set(mine[table]) - set(theirs[table])
            missing = set(theirs[table]) - set(mine[table])
            changed = [
                k
                for k in set(mine[table]) & set(theirs[table])
                if mine[table][k] != theirs[table][k]
            ]
            raise RuntimeError(
                f"{label}: {table}: {len(extra)} rows more, {len(missing)} fewer, "
                f"{len(changed)} differ (e.g. {changed[:1]})"
            )
    return sum(len(t) for t in mine.values())


def replica_file(package: AreaPackage) -> str:
    (recorded,) = package.services.values()
    return str(recorded["file"])


def apply_updates(
    services: Services,
    area_id: str,
    before: Path,
    package: AreaPackage,
    previous: AreaPackage,
    folder: Path,
) -> Path:
    """Copies of ``before``'s updatable files brought to ``package`` by its update files, as a
    device applies them."""
    fresh(folder).mkdir(parents=True)
    updates = services.areas.files
    for update in package.updates:
        target = folder / update["file"]
        if not target.exists():
            shutil.copyfile(before / update["file"], target)
            write_chain_state(
                target,
                ChainState(
                    area_id, previous.epoch, previous.number, previous.chains[update["file"]]
                ),
            )
        local = folder / update["path"]
        with updates.open(update["sha256"]) as source, local.open("wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        apply = apply_feature_update if update["kind"] == "features" else apply_tile_update
        apply(target, local, sha256=update["sha256"], size=update["size"])
    return folder


def expect(step: Packaging, label: str, *, incremental: bool, epoch: int | None = None) -> None:
    """Fail unless a packaging went the way asked, with update files for both archives."""
    if step.result["incremental"] is not incremental:
        raise RuntimeError(f"{label}: incremental is {step.result['incremental']}")
    if epoch is not None and step.package.epoch != epoch:
        raise RuntimeError(f"{label}: epoch {step.package.epoch}, not {epoch}")
    kinds = sorted(u["kind"] for u in step.package.updates)
    wanted = (
        ["features", "tiles"] if step.package.number > 1 and not label.startswith("(a)") else []
    )
    if kinds != wanted:
        raise RuntimeError(f"{label}: update files {step.package.updates}")


# --- a run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    full: list[Packaging]  # (a): the epoch changes (same bbox), extracted from scratch
    first: Packaging  # the first packaging (also a full extraction)
    rows_only: Packaging  # (b)
    rows_and_tiles: Packaging  # (c)
    edits: list[dict[str, int]]
    tiles: dict[str, int]
    rows: dict[str, int]  # replica rows checked, by step


def one_run(
    template_dir: Path, bbox: list[float], index: int, *, profile: bool, source: str = "mbtiles"
) -> Run:
    data = WORK / "run"
    fresh(data)
    shutil.copytree(template_dir, data)
    if source == "cache":
        shutil.copyfile(rendered_archive(ROOT / "data"), CACHE_SOURCE)
    check = WORK / "check"
    rng = random.Random(20261207 + index)
    if profile:
        profiled_packaging()
    services = build_services(ServerSettings(data_dir=data))
    try:
        webmap = next(iter(services.catalog.webmaps.list()))
        request = MapAreaRequest(title="Helsinki centre", bbox=bbox)
        first = timed(
            services,
            lambda: services.areas.create(webmap, request, owner=OWNER, server_url=SERVER_URL),
            profile=None,
        )
        expect(first, "first packaging", incremental=False)
        area_id = first.package.area_id
        area = lambda: services.areas.store.get(area_id)  # noqa: E731
        same_bbox = MapAreaChanges(bbox=bbox)
        replica = replica_file(first.package)
        archive = f"{VECTOR_TILES if source == 'vt' else TILES}.mbtiles"
        # each package is checked as soon as it is made: retention removes the older ones
        p0 = download(services, area_id, first.package, check / "p0")
        rows: dict[str, int] = {}

        # (b) 1 % of the rows edited, the archive untouched: incremental
        edits = [edit_rows(services, bbox, rng)]
        b = timed(
            services,
            lambda: services.areas.refresh(area(), owner=OWNER, server_url=SERVER_URL),
            profile=WORK / "profile-b.prof" if profile else None,
        )
        expect(b, "(b)", incremental=True, epoch=first.package.epoch)
        pb = download(services, area_id, b.package, check / "b")
        ub = apply_updates(services, area_id, p0, b.package, first.package, check / "ub")
        same_rows("(b) update files applied to package 1", ub / replica, pb / replica)
        if source != "vt" and tile_rows(pb / archive) != tile_rows(p0 / archive):
            raise RuntimeError("(b): the tiles changed")

        # (a) the same data extracted from scratch (a new epoch, same bbox)
        a1 = timed(
            services,
            lambda: services.areas.change(
                webmap, area_id, same_bbox, owner=OWNER, server_url=SERVER_URL
            ),
            profile=None,
        )
        expect(a1, "(a) 1", incremental=False, epoch=first.package.epoch + 1)
        pa1 = download(services, area_id, a1.package, check / "a1")
        rows["(b)"] = same_rows("(b) vs (a)", pb / replica, pa1 / replica)
        if source == "vt":  # the rows' tiles: made again where they changed
            same_tiles("(b)", pb / archive, pa1 / archive, ub / archive)
        expected = edits[0]["rows"] + edits[0]["inserts"] - edits[0]["deletes"]
        if rows["(b)"] != expected:
            raise RuntimeError(f"(b): {rows['(b)']} rows, {expected} expected")

        # (c) 1 % of the rows and 1 % of the tiles: incremental, the archive's tiles compared
        edits.append(edit_rows(services, bbox, rng))
        if source == "vt":
            tiles = {"tiles": len(tile_rows(pa1 / archive)), "redrawn": 0, "removed": 0}
        elif source == "cache":
            tiles = edit_cache_tiles(services, rng)
        else:
            tiles = edit_tiles(data / "tiles" / f"{TILES}.mbtiles", rng)
        c = timed(
            services,
            lambda: services.areas.refresh(area(), owner=OWNER, server_url=SERVER_URL),
            profile=WORK / "profile-c.prof" if profile else None,
        )
        expect(c, "(c)", incremental=True, epoch=a1.package.epoch)
        pc = download(services, area_id, c.package, check / "c")
        uc = apply_updates(services, area_id, pa1, c.package, a1.package, check / "uc")
        same_rows("(c) update files applied to the package before", uc / replica, pc / replica)

        # (a) again: the reference for (c)
        a2 = timed(
            services,
            lambda: services.areas.change(
                webmap, area_id, same_bbox, owner=OWNER, server_url=SERVER_URL
            ),
            profile=WORK / "profile-a.prof" if profile else None,
        )
        expect(a2, "(a) 2", incremental=False, epoch=a1.package.epoch + 1)
        pa2 = download(services, area_id, a2.package, check / "a2")
        rows["(c)"] = same_rows("(c) vs (a)", pc / replica, pa2 / replica)
        expected = edits[1]["rows"] + edits[1]["inserts"] - edits[1]["deletes"]
        if rows["(c)"] != expected:
            raise RuntimeError(f"(c): {rows['(c)']} rows, {expected} expected")
        new_tiles = same_tiles("(c)", pc / archive, pa2 / archive, uc / archive)
        if source != "vt" and len(new_tiles) != tiles["tiles"] - tiles["removed"]:
            raise RuntimeError(f"(c): {len(new_tiles)} tiles, {tiles}")
        return Run([a1, a2], first, b, c, edits, tiles, rows)
    finally:
        services.close()


# --- report ---------------------------------------------------------------------------------


def update_bytes(step: Packaging) -> int:
    return int(step.result["update_bytes"])


def clock_of(step: Packaging, clock: str) -> float:
    return step.job_seconds if clock == "job" else step.seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def row(label: str, steps: list[Packaging], shares: list[float] | None) -> str:
    """A table row: seconds from the call and the job's own, bytes, update bytes and share."""
    call = [s.seconds for s in steps]
    job = [s.job_seconds for s in steps]
    cells = [
        label,
        f"{median(call):.2f} ({spread(call)})",
        f"{median(job):.2f} ({spread(job)})",
        f"{median([s.package.bytes for s in steps]):,.0f}",
    ]
    if shares is None:
        cells += ["-", "-"]
    else:
        cells += [
            f"{median([update_bytes(s) for s in steps]):,.0f}",
            f"{100 * median(shares):.2f} %",
        ]
    return "| " + " | ".join(cells) + " |"


def report(runs: list[Run], copies: int, bbox: list[float], source: str) -> list[str]:
    full = [step for r in runs for step in r.full]
    b_share = [update_bytes(r.rows_only) / r.full[0].package.bytes for r in runs]
    c_share = [update_bytes(r.rows_and_tiles) / r.full[1].package.bytes for r in runs]
    ratios = {
        (name, clock): [
            median([clock_of(s, clock) for s in r.full]) / clock_of(step(r), clock) for r in runs
        ]
        for name, step in (("(b)", lambda r: r.rows_only), ("(c)", lambda r: r.rows_and_tiles))
        for clock in ("job", "call")
    }
    r0 = runs[0]
    edits = r0.edits[0]
    return [
        "",
        f"Area {bbox} (the extract's features x{copies}, {edits['rows']:,} rows in 3 layers; "
        f"{r0.tiles['tiles']:,} tiles {'z10-18 of osm-vt' if source == 'vt' else 'z12-21'}); "
        f"{len(runs)} run(s), each on a fresh copy",
        f"Edits before each refresh: {edits['updates'] + edits['deletes'] + edits['inserts']:,} "
        f"rows ({edits['updates']} updates, {edits['deletes']} deletes, {edits['inserts']} "
        "inserts)"
        + (
            "; (b) and (c) alike (the vector tiles change with the rows)"
            if source == "vt"
            else f"; before (c) also {r0.tiles['redrawn']} tiles redrawn and "
            f"{r0.tiles['removed']} removed"
        ),
        "",
        "| step | s from the call (median, range) | job's own s (median, range) "
        "| package bytes | update bytes | update / package |",
        "|---|---:|---:|---:|---:|---:|",
        row("first packaging (warm-up, not in the ratios)", [r.first for r in runs], None),
        row(f"(a) full repackage (epoch change, same bbox; {len(full)} runs)", full, None),
        row("(b) refresh after 1 % rows (incremental)", [r.rows_only for r in runs], b_share),
        row(
            "(c) refresh after 1 % rows again (incremental)"
            if source == "vt"
            else "(c) refresh after 1 % rows + 1 % tiles (incremental)",
            [r.rows_and_tiles for r in runs],
            c_share,
        ),
        "",
        "Ratios per run, (a) being the median of the run's two full repackages; 'job': the "
        "packaging job's own seconds (accepted to ended, the runner's clock; the headline), "
        "'call': from the API call (which for (a) includes the area check `change` makes "
        "before it starts the job) to the job's end:",
        *(
            f"(a)/{name} {clock}: {median(found):.2f}x (runs "
            f"{', '.join(f'{x:.2f}' for x in found)}), target >= 10x: "
            f"{'met' if median(found) >= 10 else 'MISSED'}"
            for (name, clock), found in ratios.items()
        ),
        f"update bytes / full package, (b): {100 * median(b_share):.2f} %, (c): "
        f"{100 * median(c_share):.2f} % (target <= 5 %: "
        f"{'met' if max(median(b_share), median(c_share)) <= 0.05 else 'MISSED'})",
        *(
            f"{label} update files (run 1): "
            + ", ".join(f"{u['path']} {u['size']:,}" for u in step.package.updates)
            for step, label in ((r0.rows_only, "(b)"), (r0.rows_and_tiles, "(c)"))
        ),
        f"replica rows checked per run: {[r.rows for r in runs]}",
    ]


def profile_summary(path: Path, limit: int = 30) -> list[str]:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("cumulative").print_stats(limit)
    return ["", f"cProfile of {path.name} (cumulative, top {limit}):", out.getvalue()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--copies", type=int, default=4, help="copies of the extract's rows")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="one more run, not counted, with a cProfile of its (b), (c) and (a)",
    )
    parser.add_argument(
        "--source",
        choices=("mbtiles", "cache", "vt"),
        default="mbtiles",
        help="the tile layer's source: an MBTiles archive, a tile cache of one, or the vector "
        "tiles made from the feature service",
    )
    args = parser.parse_args()
    print(f"Machine: {machine()}")
    print(f"Tile source: {args.source}")
    folder = template(args.data, args.copies, args.source)
    bbox = area_bbox(args.copies)
    runs = []
    for index in range(args.runs):
        run = one_run(folder, bbox, index, profile=False, source=args.source)
        print(
            f"run {index + 1} (s from the call / job's own): (a) "
            f"{', '.join(f'{s.seconds:.2f}/{s.job_seconds:.2f}' for s in run.full)}, (b) "
            f"{run.rows_only.seconds:.2f}/{run.rows_only.job_seconds:.2f}, (c) "
            f"{run.rows_and_tiles.seconds:.2f}/{run.rows_and_tiles.job_seconds:.2f}, first "
            f"{run.first.seconds:.2f}/{run.first.job_seconds:.2f}",
            flush=True,
        )
        runs.append(run)
    lines = report(runs, args.copies, bbox, args.source)
    if args.profile:
        one_run(folder, bbox, args.runs, profile=True, source=args.source)  # not counted
        lines += profile_summary(WORK / "profile-b.prof")
        lines += profile_summary(WORK / "profile-c.prof")
        lines += profile_summary(WORK / "profile-a.prof")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
