"""The floor of a set-based sync, against pygeodiff: could any sync design meet the issue's target?

``bench/sync.py`` times the real sync (HTTP, every change decided and answered one by one in
Python). This script asks a different question: what does the least work that an upload with
this project's guarantees must do cost, done entirely with set-based SQL and vectorised
checks, with no per-change Python objects, no HTTP and no conflict handling (every row in the
workload is edited on the device only, so every change is a fast-forward)? It is a bound for
any future "bulk lane", not a feature: nothing here is used by offmaps.

On copies of the data ``bench/sync.py`` left in ``bench/out/sync`` (run it first), each step
timed on its own:

- D1, device: the net change of every edited row (first and last pending edit, joined with the
  server version the device holds) written to a delta file by one SQL statement.
- S1, server: the delta read; values decoded from JSON and type-checked; geometries parsed at
  once (shapely) for well-formedness and bounds.
- S2, server: the current version (and geometry) of every updated or deleted row, by one join.
- S3, server: the versions compared (a mismatch would need a merge: the script stops).
- S4, server, one transaction: rows inserted, updated and deleted with ``executemany``; the
  layer's R-tree triggers dropped, the entries of deleted and moved rows removed and those of
  new and moved rows written in spatial order, the triggers re-created; one journal row per
  change (downloads to other devices read it).
- S5, server, one transaction: each row's version vector and each change's answer recorded.
- D2, device, one transaction: the edits marked applied, the rows' server versions recorded.

pygeodiff creates and applies the changeset of the same edits in a child process
(``bench/sync.py --role geodiff``). Both results are checked: the server's layer and geodiff's
target hold the device's rows (``bench/sync.py``'s digest).

Run: ``.venv/bin/python bench/sync_floor.py [--runs 3]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import fresh, machine

import sync as sync_bench

WORK = sync_bench.WORK
FLOOR = WORK / "floor"
LAYER = sync_bench.LAYER
SERVICE = sync_bench.SERVICE

# the net change of each row with pending edits: its first and last edit, and the server
# version and vector the device holds for it
_DELTA_SQL = f"""
CREATE TABLE delta.changes AS
WITH rows AS (
    SELECT layer, globalid, min(seq) AS first, max(seq) AS last FROM offmaps_outbox
    WHERE status = 'pending' AND attachment IS NULL AND hlc IS NULL GROUP BY layer, globalid
)
SELECT rows.layer, rows.globalid, rows.first, rows.last, f.kind AS first_kind,
       l.kind AS last_kind, l.change_id, CASE WHEN l.kind = 'delete' THEN NULL ELSE l.new END
       AS vals, s.version, s.vector
FROM rows JOIN offmaps_outbox AS f ON f.seq = rows.first
JOIN offmaps_outbox AS l ON l.seq = rows.last
LEFT JOIN offmaps_sync_rows AS s ON s.layer = rows.layer AND s.globalid = rows.globalid
WHERE rows.layer = '{LAYER}'
"""


class Timer:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        yield
        self.steps[name] = time.perf_counter() - began


def morton(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Z-order keys of points (16 bits a coordinate): near points get near keys."""

    def spread(v: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        v = (v | (v << 8)) & 0x00FF00FF
        v = (v | (v << 4)) & 0x0F0F0F0F
        v = (v | (v << 2)) & 0x33333333
        return (v | (v << 1)) & 0x55555555

    def scaled(v: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        span = float(np.ptp(v)) or 1.0
        return ((v - v.min()) / span * 65535).astype(np.uint64)

    return spread(scaled(x)) | (spread(scaled(y)) << 1)


def prepare() -> tuple[Path, Path, Path]:
    """Fresh copies of the device and the server's data: the device, the store and the data
    folder."""
    for name in ("device.before", "server-data.before", "base.gpkg", "modified.gpkg"):
        if not (WORK / name).exists():
            raise SystemExit(f"bench/sync_floor.py: {WORK / name} is missing: run bench/sync.py")
    fresh(FLOOR).mkdir(parents=True)
    device = FLOOR / "device.gpkg"
    sync_bench.copy_database(WORK / "device.before" / f"{SERVICE}.gpkg", device)
    shutil.copytree(WORK / "server-data.before", FLOOR / "server")
    return device, FLOOR / "server" / "features" / f"{SERVICE}.gpkg", FLOOR / "server"


def floor_run() -> tuple[dict[str, float], int, int]:
    """One run of the floor; the seconds of each step, the changes and the delta's bytes."""
    device_file, store_file, data = prepare()
    timer = Timer()
    delta_file = FLOOR / "delta.sqlite"
    device = sqlite3.connect(device_file, isolation_level=None)
    replica_id = device.execute(
        "SELECT value FROM offmaps_sync_state WHERE key = 'replica_id'"
    ).fetchone()[0]
    with timer.step("D1 device: net changes to a delta file (one SQL statement)"):
        device.execute("ATTACH ? AS delta", (str(delta_file),))
        device.execute("BEGIN IMMEDIATE")
        device.execute(_DELTA_SQL)
        device.execute("COMMIT")
        device.execute("DETACH delta")

    store = sqlite3.connect(store_file, isolation_level=None)
    state = sqlite3.connect(data / "sync.sqlite", isolation_level=None)
    state.execute("PRAGMA synchronous = NORMAL")
    fields = [f["name"] for f in json.loads(
        store.execute("SELECT fields FROM offmaps_layers WHERE name = ?", (LAYER,)).fetchone()[0]
    )]  # fmt: skip
    kinds = {"name": (str,), "count": (int,), "value": (float, int), "day": (str,)}
    with timer.step("S1 server: read the delta, decode and check values and geometries"):
        upload = sqlite3.connect(f"file:{delta_file}?mode=ro", uri=True)
        net: list[tuple[str, str, str, dict[str, Any] | None, int | None]] = []
        for gid, first, last, change_id, vals, version in upload.execute(
            "SELECT globalid, first_kind, last_kind, change_id, vals, version FROM changes"
        ):
            if first == "insert" and last == "delete":
                continue  # nothing to send
            values = json.loads(vals) if vals else None
            for name, value in (values or {}).items():
                if name in kinds and value is not None and not isinstance(value, kinds[name]):
                    raise ValueError(f"{name}: {value!r}")
            kind = "insert" if first == "insert" else "delete" if last == "delete" else "update"
            net.append((gid, kind, change_id, values, version))
        upload.close()
        blobs = [bytes.fromhex(v["geom"]) for _, _, _, v, _ in net if v is not None]
        geometries = shapely.from_wkb([blob[8:] for blob in blobs])  # GeoPackage header cut
        if shapely.is_missing(geometries).any():
            raise ValueError("a malformed geometry")
        bounds = shapely.bounds(geometries)

    with timer.step("S2 server: current versions of the updated and deleted rows (one join)"):
        store.execute("CREATE TEMP TABLE wanted (globalid TEXT PRIMARY KEY)")
        store.executemany(
            "INSERT INTO wanted VALUES (?)", [(n[0],) for n in net if n[1] != "insert"]
        )
        current = {
            gid: (fid, version, geometry)
            for gid, fid, version, geometry in store.execute(
                f'SELECT p.globalid, p.fid, p.row_version, p.geom FROM "{LAYER}" AS p '
                "JOIN wanted USING (globalid)"
            )
        }

    with timer.step("S3 server: versions compared (all fast-forwards)"):
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        deletes: list[int] = []
        answers: list[tuple[str, str, int | None]] = []
        placed: list[tuple[int, int]] = []  # (fid or -(insert position) - 1, bounds row)
        at = 0
        for gid, kind, change_id, values, version in net:
            if kind == "insert":
                row = [values[name] if values else None for name in fields]  # type: ignore[index]
                inserts.append((gid, *row, blobs[at]))
                placed.append((-len(inserts), at))
                answers.append((change_id, gid, 1))
                at += 1
                continue
            fid, now, geometry = current[gid]
            if now != version:
                raise RuntimeError(f"row {gid} changed on the server: it would need a merge")
            if kind == "update":
                row = [values[name] if values else None for name in fields]  # type: ignore[index]
                updates.append((*row, blobs[at], now + 1, fid))
                if blobs[at] != geometry:  # a row that did not move keeps its R-tree entry
                    placed.append((fid, at))
                answers.append((change_id, gid, now + 1))
                at += 1
            else:
                deletes.append(fid)
                answers.append((change_id, gid, None))

    columns = ", ".join(f'"{name}"' for name in fields)
    with timer.step("S4 server: rows, R-tree, journal; one transaction"):
        store.execute("BEGIN IMMEDIATE")
        triggers = store.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? "
            "AND name LIKE 'rtree_%'",
            (LAYER,),
        ).fetchall()
        for name, _ in triggers:
            store.execute(f'DROP TRIGGER "{name}"')
        marks = ", ".join("?" * len(fields))
        store.executemany(
            f'INSERT INTO "{LAYER}" (globalid, row_version, {columns}, geom) '
            f"VALUES (?, 1, {marks}, ?)",
            inserts,
        )
        after = store.execute(f'SELECT max(fid) FROM "{LAYER}"').fetchone()[0]
        first_fid = after - len(inserts) + 1
        sets = ", ".join(f'"{name}" = ?' for name in fields)
        store.executemany(
            f'UPDATE "{LAYER}" SET {sets}, geom = ?, row_version = ? WHERE fid = ?',
            updates,
        )
        store.executemany(f'DELETE FROM "{LAYER}" WHERE fid = ?', [(f,) for f in deletes])
        rtree = f"rtree_{LAYER}_geom"
        store.executemany(
            f'DELETE FROM "{rtree}" WHERE id = ?',
            [(f,) for f, _ in placed if f > 0] + [(f,) for f in deletes],
        )
        fids = np.array([first_fid - f - 1 if f < 0 else f for f, _ in placed])
        boxes = bounds[[b for _, b in placed]]
        order = np.argsort(morton(boxes[:, 0], boxes[:, 1]), kind="stable")
        store.executemany(
            f'INSERT INTO "{rtree}" VALUES (?, ?, ?, ?, ?)',
            [(int(fids[i]), *map(float, boxes[i, [0, 2, 1, 3]])) for i in order.tolist()],
        )
        generation = (
            int(store.execute("SELECT max(generation) FROM offmaps_journal").fetchone()[0]) + 1
        )
        changed_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        store.executemany(
            "INSERT INTO offmaps_journal (generation, layer, globalid, kind, version, changed_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (generation, LAYER, gid, kind, answer[2] or current[gid][1], changed_at)
                for (gid, kind, *_), answer in zip(net, answers, strict=True)
            ],
        )
        for _, sql in triggers:
            store.execute(sql)
        store.execute("COMMIT")

    vector = json.dumps({replica_id: 1, "server": 1})
    with timer.step("S5 server: row states and answers; one transaction"):
        state.execute(
            "CREATE TABLE floor_answers (change_id TEXT PRIMARY KEY, replica_id TEXT NOT NULL, "
            "status TEXT NOT NULL, version INTEGER)"
        )
        state.execute("BEGIN IMMEDIATE")
        state.executemany(
            "INSERT INTO rows VALUES (?, ?, ?, ?, ?, NULL) ON CONFLICT (service, layer, "
            "globalid) DO UPDATE SET version = excluded.version, vector = excluded.vector",
            [(SERVICE, LAYER, gid, v, vector) for _, gid, v in answers if v is not None],
        )
        state.executemany(
            "INSERT INTO floor_answers VALUES (?, ?, 'applied', ?)",
            [(change_id, replica_id, v) for change_id, _, v in answers],
        )
        state.execute("COMMIT")

    with timer.step("D2 device: edits marked applied, server versions recorded"):
        device.execute("ATTACH ? AS delta", (str(delta_file),))
        device.execute("BEGIN IMMEDIATE")
        device.execute(
            "UPDATE offmaps_outbox SET status = 'applied', acked_ms = ? WHERE seq IN (SELECT "
            "o.seq FROM delta.changes AS c JOIN offmaps_outbox AS o INDEXED BY "
            "offmaps_outbox_row ON o.layer = c.layer AND o.globalid = c.globalid AND o.seq "
            "BETWEEN c.first AND c.last)",
            (int(time.time() * 1000),),
        )
        device.executemany(
            "INSERT INTO offmaps_sync_rows VALUES (?, ?, ?, ?) ON CONFLICT (layer, globalid) "
            "DO UPDATE SET version = excluded.version, vector = excluded.vector",
            [(LAYER, gid, v, vector) for _, gid, v in answers if v is not None],
        )
        device.execute("COMMIT")
    for conn in (device, store, state):
        conn.close()
    expected = sync_bench.digest(WORK / "modified.gpkg")
    sync_bench.check(expected, floor=sync_bench.digest(store_file))
    return timer.steps, len(net), delta_file.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each (best kept)")
    args = parser.parse_args()
    floors: list[dict[str, float]] = []
    theirs: list[sync_bench.TheirsResult] = []
    changes = size = 0
    target = WORK / "floor-target.gpkg"
    for _ in range(args.runs):
        steps, changes, size = floor_run()
        floors.append(steps)
        sync_bench.copy_database(WORK / "target.before.gpkg", target)
        theirs.append(
            sync_bench.geodiff(
                WORK / "base.gpkg", WORK / "modified.gpkg", target, WORK / "floor-changeset.bin"
            )
        )
        sync_bench.check(
            sync_bench.digest(WORK / "modified.gpkg"), geodiff=sync_bench.digest(target)
        )
    best = min(floors, key=lambda s: sum(s.values()))
    total = sum(best.values())
    server = sum(v for k, v in best.items() if k.startswith("S"))
    geodiff = min(theirs, key=lambda r: r.seconds)
    lines = [
        f"## Floor of a set-based sync vs pygeodiff {geodiff.version}: {changes:,} net changes "
        f"(delta {size:,} bytes), best of {args.runs}",
        "",
        f"Machine: {machine()}",
        "",
        "| step | seconds |",
        "|---|---:|",
        *(f"| {name} | {seconds:.2f} |" for name, seconds in best.items()),
        f"| **floor, steps one after another** | **{total:.2f}** |",
        f"| the server's steps (S1-S5) | {server:.2f} |",
        f"| the device's steps (D1, D2) | {total - server:.2f} |",
        f"| pygeodiff create {geodiff.create_seconds:.2f} s + apply {geodiff.apply_seconds:.2f} s "
        f"| {geodiff.seconds:.2f} |",
        "",
        f"geodiff/floor = {geodiff.seconds / total:.2f}x; geodiff/server steps = "
        f"{geodiff.seconds / server:.2f}x: even with the device's steps overlapping the "
        "server's (sets in a pipeline), the server's steps alone are the bound (every floor run: "
        f"{', '.join(f'{sum(s.values()):.2f}' for s in floors)}; geodiff: "
        f"{', '.join(f'{r.seconds:.2f}' for r in theirs)}). Checked: the server's layer and "
        "geodiff's target hold the device's rows.",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
