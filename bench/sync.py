"""Sync benchmark: offline edits synced up and applied, offmaps vs pygeodiff.

The issue: "100,000 edits (inserts, updates, deletes) on a GeoPackage, synced up and applied,
vs pygeodiff creating and applying the changeset of the same edits. Target: our time <=
geodiff's, with memory bounded."

1. A server data folder with one point layer (``--rows`` rows, default 100,000; fields text,
   integer, real, date) in a feature service, a web map showing it editable and sync-enabled,
   and a user. ``offmaps serve`` (uvicorn, 1 worker, its own process) serves it on loopback;
   the bench takes the map offline whole with ``OfflineMapTask``.
2. On the device: ``--edits`` edits (default 100,000; 40 % inserts, 40 % updates, 20 %
   deletes, in random order, seeded; updates and deletes pick any live row, so some rows are
   updated more than once and some inserted rows are updated or deleted again), made through
   ``GeoPackageStore.apply_edits`` in batches of 5,000 (the SQLite triggers capture them in the
   replica's outbox). Not timed against anything; printed for information.
3. offmaps: the server is restarted (a fresh process, so its peak memory is the sync's), a child
   process signs in and times ``OfflineMapSyncTask.sync_offline_map(UPLOAD)`` (upload in change
   sets of ``--batch-size``, the server merges and applies each set): wall time, the client's
   and the server's peak RSS (``VmHWM``).
4. pygeodiff, in its own child process: ``create_changeset(base, modified)`` then
   ``apply_changeset(target)``, on copies: base = the replica as downloaded, modified = the
   replica after the edits, target = a copy of the server's store file taken before the sync.
   geodiff diffs every table with a primary key; it is told to diff only the layer's table
   (``set_tables_to_skip``: the GeoPackage system tables, our journal, outbox and sync tables),
   and triggers of ours, if any, are dropped from the target (the GeoPackage R-tree's are kept:
   geodiff provides their ``ST_*`` functions): its best case, one table diffed and applied.
5. Both ends are checked: the server's layer after our sync and geodiff's target both hold
   exactly the device's rows (count and SHA-256 of every row's global id, values and geometry).

Steps 3 and 4 run ``--runs`` times (default 3), alternating, each from copies of the server's data
and the device taken before the first; the best run of each is compared.

Run: ``.venv/bin/python bench/sync.py`` (``--edits 10000`` for a quick run; ``--profile`` writes
cProfile files of the client and the server in the first run and prints their hotspots: the
profiled run is slower).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import pstats
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _http import free_port, serving
from _measure import fresh, machine

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "out" / "sync"
BIN = Path(sys.executable).parent
PASSWORD = "offmaps-bench-sync"
USER = "surveyor"
SERVICE = "survey"
LAYER = "points"
FIELDS = ("name", "count", "value", "day")
DATA_BBOX = (24.5, 60.0, 25.5, 60.5)
AREA_BBOX = (24.4, 59.9, 25.6, 60.6)  # covers every row: the layer is taken offline whole
EDIT_BATCH = 5_000
SEED = 20_261_130


def vm_kb(pid: int | str, key: str) -> int:
    """``VmHWM`` (peak resident set) or ``VmRSS`` of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {key}")


def last_json(output: str) -> dict[str, Any]:
    """The JSON object a child process printed on its last line."""
    found: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return found


def run_child(arguments: Sequence[str]) -> dict[str, Any]:
    """Run this script in a child process (a ``--role``); the JSON it printed last."""
    done = subprocess.run(
        [sys.executable, __file__, *arguments], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench/sync.py {' '.join(arguments)} failed:\n{done.stderr[-4000:]}")
    return last_json(done.stdout)


# --- 1. the server's data folder -----------------------------------------------------------


def build_server(data_dir: Path, rows: int, rng: random.Random) -> str:
    """A data folder with the layer, a web map showing it for offline editing, and a user;
    returns the web map's id."""
    from shapely.geometry import Point  # noqa: PLC0415

    from offmaps.features import FieldType  # noqa: PLC0415
    from offmaps.features.model import Field, GeometryType, Insert, LayerSchema  # noqa: PLC0415
    from offmaps.schemas import WebMap  # noqa: PLC0415
    from offmaps.services import build_services  # noqa: PLC0415
    from offmaps.settings import ServerSettings  # noqa: PLC0415

    services = build_services(ServerSettings(data_dir=data_dir))
    try:
        store = services.catalog.create_feature_service(SERVICE)
        store.create_layer(
            LayerSchema(
                LAYER,
                (
                    Field("name", FieldType.TEXT),
                    Field("count", FieldType.INTEGER),
                    Field("value", FieldType.REAL),
                    Field("day", FieldType.DATE),
                ),
                GeometryType.POINT,
                title="Survey points",
            )
        )
        for start in range(0, rows, 10_000):
            store.apply_edits(
                [
                    Insert(LAYER, values(rng, i), Point(*position(rng)))
                    for i in range(start, min(start + 10_000, rows))
                ]
            )
        document = {
            "format_version": "1.0",
            "item": {"title": "sync bench"},
            "basemap": {"title": "none", "layers": []},
            "operational_layers": [
                {
                    "type": "feature",
                    "id": LAYER,
                    "title": "Survey points",
                    "service": SERVICE,
                    "layer": LAYER,
                    "editing": {"create": True, "update": True, "delete": True},
                    "sync_enabled": True,
                }
            ],
            "sharing": {"owner": USER, "public": False},
        }
        webmap = services.catalog.webmaps.create(WebMap.model_validate(document), owner=USER)
        services.users.add_user(USER, PASSWORD, scopes=("maps:read", "maps:write", "features:edit"))
    finally:
        services.close()
    return str(webmap.id)


def values(rng: random.Random, i: int) -> dict[str, object]:
    return {
        "name": f"point {i} {rng.choice(('ok', 'broken', 'missing', 'new'))}",
        "count": rng.randrange(1_000_000),
        "value": round(rng.uniform(0, 1000), 3),
        "day": date(2020, 1, 1) + timedelta(days=rng.randrange(2_000)),
    }


def position(rng: random.Random) -> tuple[float, float]:
    west, south, east, north = DATA_BBOX
    return (round(rng.uniform(west, east), 7), round(rng.uniform(south, north), 7))


def server_command(data_dir: Path, port: int, profile: Path | None) -> list[str]:
    command = ["serve", "--data", str(data_dir), "--port", str(port)]
    if profile is None:
        return [str(BIN / "offmaps"), *command]
    return [sys.executable, __file__, "--role", "server", "--out", str(profile), "--", *command]


# --- 2. offline, and the device's edits ----------------------------------------------------


def take_offline(url: str, map_id: str, folder: Path) -> Path:
    """Take the web map offline to ``folder``; the replica GeoPackage's path."""
    from offmaps.client import Portal  # noqa: PLC0415
    from offmaps.client.offline import OfflineMapTask, PortalItem  # noqa: PLC0415
    from offmaps.offline.package import MobileMapPackage  # noqa: PLC0415
    from offmaps.offline.parameters import area_from_bbox  # noqa: PLC0415

    portal = Portal(url)
    try:
        portal.login(USER, PASSWORD)
        task = OfflineMapTask(PortalItem(portal, map_id))
        parameters = task.create_default_generate_offline_map_parameters(area_from_bbox(*AREA_BBOX))
        result = task.generate_offline_map(parameters, folder).wait()
        if result.has_errors:
            raise RuntimeError(f"taking the map offline failed: {result}")
    finally:
        portal.close()
    package = MobileMapPackage(folder)
    package.load()
    (replica,) = package.manifest.replicas
    return folder / replica.file


@dataclass(frozen=True)
class EditCounts:
    inserts: int
    updates: int
    deletes: int
    seconds: float

    @property
    def total(self) -> int:
        return self.inserts + self.updates + self.deletes


def edit_device(replica: Path, edits: int, rng: random.Random) -> EditCounts:
    """Make ``edits`` edits on the device's replica (see the module docs)."""
    from shapely.geometry import Point  # noqa: PLC0415

    from offmaps.features.geopackage import GeoPackageStore  # noqa: PLC0415
    from offmaps.features.model import Delete, Edit, Insert, Update  # noqa: PLC0415

    inserts, updates = round(edits * 0.4), round(edits * 0.4)
    deletes = edits - inserts - updates
    kinds = ["insert"] * inserts + ["update"] * updates + ["delete"] * deletes
    rng.shuffle(kinds)
    with GeoPackageStore.open(replica) as store:
        alive = [f.global_id for f in store.iter_features(LAYER)]
        if len(alive) < deletes:
            raise RuntimeError(f"{len(alive):,} rows cannot take {deletes:,} deletes")
        began = time.perf_counter()
        batch: list[Edit] = []
        for n, kind in enumerate(kinds):
            if kind == "insert":
                gid = uuid.UUID(int=rng.getrandbits(128), version=4)
                batch.append(Insert(LAYER, values(rng, 10_000_000 + n), Point(*position(rng)), gid))
                alive.append(gid)
            elif kind == "update":
                gid = alive[rng.randrange(len(alive))]
                changed = dict(rng.sample(sorted(values(rng, n).items()), 2))
                moved = rng.random() < 0.25
                geometry = Point(*position(rng)) if moved else None
                batch.append(Update(LAYER, gid, changed, geometry, set_geometry=moved))
            else:
                index = rng.randrange(len(alive))
                alive[index], alive[-1] = alive[-1], alive[index]
                batch.append(Delete(LAYER, alive.pop()))
            if len(batch) == EDIT_BATCH:
                store.apply_edits(batch)
                batch = []
        store.apply_edits(batch)
        seconds = time.perf_counter() - began
    return EditCounts(inserts, updates, deletes, seconds)


# --- checks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    rows: int
    sha256: str


def digest(path: Path) -> Digest:
    """Row count and SHA-256 of the layer's rows (global id, fields, geometry as WKB), in
    global id order, read with plain sqlite3 (any GeoPackage holding the layer's table)."""
    import shapely  # noqa: PLC0415

    from offmaps.features.geopackage import decode_geometry  # noqa: PLC0415

    hasher = hashlib.sha256()
    count = 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        columns = ", ".join(f'"{name}"' for name in FIELDS)
        for row in conn.execute(f'SELECT globalid, {columns}, geom FROM "{LAYER}" ORDER BY 1'):
            *fields, blob = row
            geometry = decode_geometry(blob)
            wkb = "" if geometry is None else shapely.to_wkb(geometry, hex=True)
            hasher.update(json.dumps([*fields, wkb]).encode())
            count += 1
    finally:
        conn.close()
    return Digest(count, hasher.hexdigest())


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite file that may be open elsewhere (its WAL included)."""
    fresh(target)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


# --- 3. offmaps: the sync ------------------------------------------------------------------


def client_role(folder: Path, url: str, batch_size: int, profile: Path | None) -> None:
    """Child process: sign in, then sync the package up; prints seconds, peak memory, counts."""
    from offmaps.client import Portal  # noqa: PLC0415
    from offmaps.client.sync import (  # noqa: PLC0415
        OfflineMapSyncTask,
        SyncOfflineMapParameters,
    )
    from offmaps.schemas import SyncDirection  # noqa: PLC0415

    portal = Portal(url)
    portal.login(USER, PASSWORD)
    task = OfflineMapSyncTask(folder, portal)
    parameters = SyncOfflineMapParameters(
        sync_direction=SyncDirection.UPLOAD, batch_size=batch_size
    )
    before_kb = vm_kb("self", "VmRSS")
    profiler = cProfile.Profile() if profile else None
    began = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    result = task.sync_offline_map(parameters).wait()
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - began
    if profiler is not None and profile is not None:
        profiler.dump_stats(profile)
    portal.close()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_kb": vm_kb("self", "VmHWM"),
                "before_kb": before_kb,
                "result": result.as_dict(),
            }
        )
    )


def server_role(out: Path, command: list[str]) -> None:
    """Child process: ``offmaps serve`` under cProfile, stats written when it stops."""
    from offmaps.cli import main  # noqa: PLC0415
    from offmaps.replicas.service import SyncService  # noqa: PLC0415

    # cProfile sees one thread: the event loop's (parsing and answering the change sets);
    # the merge runs in the thread pool, profiled on its own (uploads come one at a time)
    worker = cProfile.Profile()
    merge = SyncService.upload

    def upload(self: SyncService, *args: Any, **kwargs: Any) -> Any:
        worker.enable()
        try:
            return merge(self, *args, **kwargs)
        finally:
            worker.disable()

    setattr(SyncService, "upload", upload)  # noqa: B010
    # uvicorn stops on SIGTERM, then raises it again once stopped: leave through SystemExit
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        main(command)
    finally:
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.add(worker)
        stats.dump_stats(out)


@dataclass(frozen=True)
class OursResult:
    seconds: float
    client_peak_mb: float
    client_before_mb: float
    server_peak_mb: float
    server_before_mb: float
    layer: dict[str, Any]


def sync_offmaps(data_dir: Path, folder: Path, batch_size: int, profile: bool) -> OursResult:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_prof = WORK / "server.prof" if profile else None
    command = server_command(data_dir, port, server_prof)
    with serving(command, f"{url}/conformance", log=WORK / "server-sync.log") as server:
        server_before = vm_kb(server.pid, "VmRSS")
        arguments = ["--role", "client", "--folder", str(folder), "--url", url]
        arguments += ["--batch-size", str(batch_size)]
        if profile:
            arguments += ["--out", str(WORK / "client.prof")]
        answer = run_child(arguments)
        server_peak = vm_kb(server.pid, "VmHWM")
    result = answer["result"]
    layer = result["layers"].get(LAYER, {})
    if result["has_errors"]:
        raise RuntimeError(f"the sync reported errors: {json.dumps(result)[:2000]}")
    return OursResult(
        answer["seconds"],
        answer["peak_kb"] / 1024,
        answer["before_kb"] / 1024,
        server_peak / 1024,
        server_before / 1024,
        layer,
    )


# --- 4. pygeodiff --------------------------------------------------------------------------


def geodiff_role(base: Path, modified: Path, target: Path, changeset: Path) -> None:
    """Child process: create the changeset, apply it; prints seconds, peak memory, counts."""
    import pygeodiff  # type: ignore[import-untyped]  # noqa: PLC0415

    geodiff = pygeodiff.GeoDiff()
    conn = sqlite3.connect(base)
    tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    conn.close()
    geodiff.set_tables_to_skip([name for name in tables if name != LAYER])
    began = time.perf_counter()
    geodiff.create_changeset(str(base), str(modified), str(changeset))
    created = time.perf_counter()
    geodiff.apply_changeset(str(target), str(changeset))
    applied = time.perf_counter()
    print(
        json.dumps(
            {
                "create_seconds": created - began,
                "apply_seconds": applied - created,
                "seconds": applied - began,
                "peak_kb": vm_kb("self", "VmHWM"),
                "changes": geodiff.changes_count(str(changeset)),
                "changeset_bytes": changeset.stat().st_size,
                "version": geodiff.version(),
            }
        )
    )


def prepare_target(path: Path) -> tuple[list[str], list[str]]:
    """Drop triggers of ours from a copy of the server's store (they may call SQL functions
    only offmaps registers); the triggers dropped and those kept (the GeoPackage R-tree's,
    whose ``ST_*`` functions geodiff provides)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        triggers = [
            name
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        ]
        dropped = [name for name in triggers if name.startswith("offmaps")]
        for name in dropped:
            conn.execute(f'DROP TRIGGER "{name}"')
    finally:
        conn.close()
    return dropped, [name for name in triggers if name not in dropped]


@dataclass(frozen=True)
class TheirsResult:
    seconds: float
    create_seconds: float
    apply_seconds: float
    peak_mb: float
    changes: int
    changeset_bytes: int
    version: str


# --- the run -------------------------------------------------------------------------------


# waiting, not working: the event loop's idle time, and the client waiting for answers
_IDLE = ("runners.py", "selectors.py", "<method 'recv'", "<method 'select'", "<method 'poll'")


def hotspots(path: Path, count: int = 12) -> list[str]:
    """Markdown rows of a cProfile file: the offmaps functions with the most cumulative time,
    then the functions with the most time of their own (waiting left out)."""
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    rows: list[tuple[float, float, int, str]] = []
    for (filename, line, name), (_, calls, own, cumulative, _) in entries.items():
        where = f"{name} ({Path(filename).name}:{line})" if line else name
        if "/offmaps/" in filename:
            where = f"{name} ({filename.split('/offmaps/', 1)[1]}:{line})"
        rows.append((cumulative, own, calls, where if "/offmaps/" in filename else f"~{where}"))
    ours = sorted(
        (r for r in rows if not r[3].startswith("~") and "cli/" not in r[3]), reverse=True
    )
    own = sorted(
        (r for r in rows if not any(idle in r[3] for idle in _IDLE)),
        key=lambda r: r[1],
        reverse=True,
    )
    lines = ["| offmaps function | calls | cumulative s | own s |", "|---|---:|---:|---:|"]
    lines += [f"| {w} | {n:,} | {c:.2f} | {o:.2f} |" for c, o, n, w in ours[:count]]
    lines += ["", "| any function, by own time | calls | cumulative s | own s |"]
    lines += ["|---|---:|---:|---:|"]
    lines += [f"| {w.lstrip('~')} | {n:,} | {c:.2f} | {o:.2f} |" for c, o, n, w in own[:count]]
    return lines


def check(expected: Digest, **found: Digest) -> None:
    """Fail unless every side holds exactly the edited device's rows."""
    for side, digest_ in found.items():
        if digest_ != expected:
            raise RuntimeError(
                f"after the sync {side} holds {digest_.rows:,} rows ({digest_.sha256}); the "
                f"edited device held {expected.rows:,} ({expected.sha256})"
            )


def geodiff(base: Path, modified: Path, target: Path, changeset: Path) -> TheirsResult:
    answer = run_child(
        [
            *("--role", "geodiff", "--base", str(base), "--modified", str(modified)),
            *("--target", str(target), "--changeset", str(changeset)),
        ]
    )
    return TheirsResult(
        answer["seconds"],
        answer["create_seconds"],
        answer["apply_seconds"],
        answer["peak_kb"] / 1024,
        answer["changes"],
        answer["changeset_bytes"],
        str(answer["version"]),
    )


def bench(rows: int, edits: int, batch_size: int, runs: int, profile: bool) -> list[str]:
    rng = random.Random(SEED)
    WORK.mkdir(parents=True, exist_ok=True)
    data_dir = fresh(WORK / "server-data")
    device = fresh(WORK / "device")
    began = time.perf_counter()
    map_id = build_server(data_dir, rows, rng)
    built = time.perf_counter() - began
    store_file = data_dir / "features" / f"{SERVICE}.gpkg"

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = server_command(data_dir, port, None)
    with serving(command, f"{url}/conformance", log=WORK / "server-offline.log"):
        began = time.perf_counter()
        replica = take_offline(url, map_id, device)
        offline = time.perf_counter() - began
    base, modified = WORK / "base.gpkg", WORK / "modified.gpkg"
    target, changeset = WORK / "target.gpkg", WORK / "changeset.bin"
    copy_database(replica, base)
    copy_database(store_file, target)
    dropped, kept = prepare_target(target)
    downloaded = digest(replica)
    if downloaded != digest(store_file) or downloaded.rows != rows:
        raise RuntimeError(f"the replica holds {downloaded.rows:,} rows, the server {rows:,}")

    counts = edit_device(replica, edits, rng)
    copy_database(replica, modified)
    expected = digest(replica)
    # every run starts from these copies: the server's data and the device before the sync
    saved_data, saved_device = WORK / "server-data.before", WORK / "device.before"
    shutil.copytree(data_dir, fresh(saved_data))
    shutil.copytree(device, fresh(saved_device))
    saved_target = WORK / "target.before.gpkg"
    shutil.copyfile(target, fresh(saved_target))

    ours_runs: list[OursResult] = []
    theirs_runs: list[TheirsResult] = []
    for attempt in range(runs):
        if attempt:
            shutil.copytree(saved_data, fresh(data_dir))
            shutil.copytree(saved_device, fresh(device))
            shutil.copyfile(saved_target, fresh(target))
        ours_runs.append(sync_offmaps(data_dir, device, batch_size, profile and attempt == 0))
        check(expected, server=digest(store_file), device=digest(replica))
        theirs_runs.append(geodiff(base, modified, target, fresh(changeset)))
        check(expected, geodiff=digest(target))
    ours = min(ours_runs, key=lambda r: r.seconds)
    theirs = min(theirs_runs, key=lambda r: r.seconds)

    ratio = theirs.seconds / ours.seconds
    met = "met" if ours.seconds <= theirs.seconds else "MISSED"
    layer = ours.layer
    lines = [
        "",
        f"## {counts.total:,} edits on {rows:,} rows: offmaps sync vs pygeodiff {theirs.version}",
        "",
        f"Setup (not measured): server layer built in {built:.1f} s, taken offline in "
        f"{offline:.1f} s; device edits: {counts.inserts:,} inserts, {counts.updates:,} "
        f"updates, {counts.deletes:,} deletes through GeoPackageStore.apply_edits in batches of "
        f"{EDIT_BATCH:,}: {counts.seconds:.1f} s ({counts.total / counts.seconds:,.0f} edits/s); "
        f"the device then holds {expected.rows:,} rows.",
        "",
        f"Best of {runs} run(s), alternating, each from the same copies (seconds of every run: "
        f"offmaps {', '.join(f'{r.seconds:.2f}' for r in ours_runs)}; pygeodiff "
        f"{', '.join(f'{r.seconds:.2f}' for r in theirs_runs)}):",
        "",
        "| tool | seconds | edits/s | peak MB | what ran |",
        "|---|---:|---:|---:|---|",
        f"| offmaps | {ours.seconds:.2f} | {counts.total / ours.seconds:,.0f} "
        f"| client {ours.client_peak_mb:.0f} (at start {ours.client_before_mb:.0f}), server "
        f"{ours.server_peak_mb:.0f} (at start {ours.server_before_mb:.0f}) "
        f"| upload in sets of {batch_size:,} changes (a row's pending edits go as one), merge "
        f"and apply: {layer.get('uploaded', 0):,} edits uploaded "
        f"({counts.total - layer.get('uploaded', 0):,} needed none: rows added and deleted "
        f"offline, updates undone), {layer.get('applied', 0):,} applied, "
        f"{layer.get('merged', 0):,} merged |",
        f"| pygeodiff | {theirs.seconds:.2f} | {counts.total / theirs.seconds:,.0f} "
        f"| {theirs.peak_mb:.0f} | create {theirs.create_seconds:.2f} s + apply "
        f"{theirs.apply_seconds:.2f} s: {theirs.changes:,} changes, "
        f"{theirs.changeset_bytes:,} bytes |",
        "",
        f"geodiff/offmaps = {ratio:.2f}x (>1: offmaps faster); target (offmaps time <= "
        f"geodiff's): {met}",
        "",
        "offmaps: `offmaps serve` (uvicorn, 1 worker) in its own process on loopback, restarted "
        "before the sync; the client a child process (wall time of the sync job only, after "
        "sign-in); peaks are VmHWM. pygeodiff: a child process; base = the replica as "
        "downloaded, modified = the replica after the edits, target = a copy of the server's "
        f"store taken before the sync ({len(kept)} GeoPackage R-tree triggers kept, "
        f"{len(dropped)} offmaps triggers dropped); only table `{LAYER}` diffed and applied "
        "(geodiff leaves our journal, which feeds downloads to other devices, untouched). "
        "Checked: the server's layer, the device's and geodiff's target hold the same "
        f"{expected.rows:,} rows (SHA-256 of global ids, fields and geometries).",
    ]
    if profile:
        for name in ("client", "server"):
            lines += [
                "",
                f"Profile of the {name} (cProfile; bench/out/sync/{name}.prof)",
                "",
                *hotspots(WORK / f"{name}.prof"),
            ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the server's layer")
    parser.add_argument("--edits", type=int, default=100_000, help="edits made on the device")
    parser.add_argument("--batch-size", type=int, default=5_000, help="changes per change set")
    parser.add_argument("--runs", type=int, default=3, help="measured runs of each (best kept)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile client and server (first run)"
    )
    hidden = argparse.SUPPRESS
    parser.add_argument("--role", choices=("client", "server", "geodiff"), help=hidden)
    for name in ("folder", "out", "base", "modified", "target", "changeset"):
        parser.add_argument(f"--{name}", type=Path, help=hidden)
    parser.add_argument("--url", help=hidden)
    parser.add_argument("rest", nargs="*", help=hidden)
    args = parser.parse_args()
    if args.role == "client":
        client_role(args.folder, args.url, args.batch_size, args.out)
        return 0
    if args.role == "server":
        server_role(args.out, args.rest)
        return 0
    if args.role == "geodiff":
        geodiff_role(args.base, args.modified, args.target, args.changeset)
        return 0
    print(f"Machine: {machine()}", flush=True)
    print(
        "\n".join(bench(args.rows, args.edits, args.batch_size, args.runs, args.profile)),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as error:
        print(f"bench/sync.py failed: {error}", file=sys.stderr)
        sys.exit(1)
