"""Preplanned map areas (issue 18): a device applying a chain of 7 daily update files vs
downloading and opening the newest package whole, both from the same ``offmaps serve`` on
loopback.

Setup (untimed, once per invocation):

- the data folder of bench/preplanned_refresh.py (built there once and reused: the OSM points,
  lines and multipolygons of the Helsinki extract x4 side by side, 51,788 rows in 3 layers, and
  the 61,791 rendered tiles z12-21 as an MBTiles layer), copied afresh, with a user ``bench``
  (the web map's owner: ``maps:read``, ``maps:write``, ``features:edit``);
- ``offmaps serve`` in its own process on a free loopback port, with
  ``OFFMAPS_AREA_KEEP_PACKAGES=10`` (the chain from package 1 to 8 is kept) and the area
  scheduler off (every refresh is the bench's);
- the area (the whole data, ``download_scheduled_updates``) created with the author's SDK
  (``OfflineMapAreaManager.create(wait=True)``), and its package 1 downloaded with the device
  SDK (``OfflineMapTask.get_preplanned_map_areas`` / ``download_preplanned_offline_map``) into
  ``device-p1``;
- then 7 "days": 1 % of the rows edited on the server (40 % updates, 30 % deletes, 30 %
  inserts, as bench/preplanned_refresh.py edits them), on days 3 and 6 also 1 % of the tiles
  (90 % redrawn, 10 % removed), and the area refreshed (``OfflineMapAreaManager.refresh(
  wait=True)``): packages 2 to 8, each with a feature and a tile update file.

Timed, ``--runs`` (3) times, alternating which side goes first, each side on its own fresh
folder (the copy is untimed), one signed-in ``Portal`` for both:

- (A) ``OfflineMapSyncTask(copy of device-p1, portal).sync_offline_map(
  SyncOfflineMapParameters()).wait()``: opens the package, asks the server's plan, downloads the
  14 update files, applies them (7 to the replica, 7 to the tile archive) and reopens the package;
- (B) ``OfflineMapTask(PortalItem(portal, map)).get_preplanned_map_areas()``, the area's
  ``load()``, and ``download_preplanned_offline_map(...).wait()`` into an empty folder (which
  downloads every file, checks its SHA-256 and opens the package with ``MobileMapPackage``).

Checked every run (untimed): (A) chose ``updates``, from package 1 to 8, 7 updates per chained
file, with no errors; (A)'s and (B)'s folders verify (``verify_package``); (A)'s replica holds
exactly (B)'s rows (global id, every attribute, geometry bytes) and its tile archive exactly
(B)'s tiles (bytes), and the row count the edits imply.

Prints the seconds of (A) and (B), the ratio (B)/(A) (target >= 5x) and the bytes each side
downloads. ``--profile`` adds one (A) and one (B), not counted, under cProfile (the client's
side: the server runs in its own process).

``--link MBIT[:RTT_MS]`` (repeatable) adds, after the loopback runs, the same alternating runs
through a field link: a TCP proxy in the bench's process between the client and the same server
that lets the server's bytes through at MBIT megabits per second, shared by every connection
(a token bucket, as one radio link), and holds each of the client's sends RTT_MS milliseconds (so
every request pays one round trip). The loopback figure stays the headline the issue names; the
links show where the two sides cross.

Run: ``flock /work/notes/bench.lock .venv/bin/python bench/preplanned_apply.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import random
import shutil
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import preplanned_refresh as refresh_bench
from _http import free_port, serving
from _measure import fresh, machine

from offmaps.catalog import Catalog
from offmaps.client import OfflineMapAreaManager, Portal
from offmaps.client.offline import OfflineMapTask, PortalItem
from offmaps.client.scheduled import package_state, plan_updates
from offmaps.client.sync import OfflineMapSyncTask, SyncOfflineMapParameters
from offmaps.offline.package import MobileMapPackage, verify_package
from offmaps.services import build_services
from offmaps.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "out" / "preplanned-apply"
BIN = Path(sys.executable).parent
USER = refresh_bench.OWNER  # the web map's owner
PASSWORD = "offmaps-bench-apply"
DAYS = 7
TILE_DAYS = (3, 6)  # the days the tiles change too
KEEP = 10  # OFFMAPS_AREA_KEEP_PACKAGES: packages 1..8 kept
TILES_FILE = f"{refresh_bench.TILES}.mbtiles"


# --- setup ----------------------------------------------------------------------------------


def server_data(template: Path) -> tuple[Path, str]:
    """A fresh copy of the data folder with the bench user; the web map's id."""
    data = fresh(WORK / "server-data")
    shutil.copytree(template, data)
    services = build_services(ServerSettings(data_dir=data))
    try:
        services.users.add_user(USER, PASSWORD, scopes=("maps:read", "maps:write", "features:edit"))
        webmap = next(iter(services.catalog.webmaps.list()))
        return data, str(webmap.id)
    finally:
        services.close()


def download_whole(portal: Portal, map_id: str, area_id: str, folder: Path) -> dict[str, Any]:
    """(B): the area's newest package with the device SDK into ``folder``, opened; returns
    the package's number and bytes."""
    task = OfflineMapTask(PortalItem(portal, map_id))
    area = next(a for a in task.get_preplanned_map_areas() if a.id == area_id)
    area.load()
    parameters = task.create_default_download_preplanned_offline_map_parameters(area)
    result = task.download_preplanned_offline_map(parameters, folder).wait()
    if result.has_errors:
        raise RuntimeError(f"download: {result.layer_errors} {result.table_errors}")
    package = result.mobile_map_package
    if not isinstance(package, MobileMapPackage):
        raise RuntimeError(f"download: no package opened ({package!r})")
    return {
        "bytes": sum(int(item.size) for item in area.package_items),
        "files": len(area.package_items),
    }


def apply_chain(portal: Portal, folder: Path) -> Any:
    """(A): the device's sync, which applies the scheduled updates; the sync's result."""
    task = OfflineMapSyncTask(folder, portal)
    return task.sync_offline_map(SyncOfflineMapParameters()).wait()


@dataclass(frozen=True)
class Chain:
    """What the 7 days made."""

    area_id: str
    edits: list[dict[str, int]]
    tiles: list[dict[str, int]]
    refresh_seconds: list[float]


def build_chain(
    data: Path, manager: OfflineMapAreaManager, area_id: str, bbox: list[float]
) -> Chain:
    """7 days of edits on the server, each followed by a refresh of the area."""
    rng = random.Random(20261208)
    edits, tiles, seconds = [], [], []
    for day in range(1, DAYS + 1):
        catalog = Catalog(data)
        try:
            edits.append(refresh_bench.edit_rows(SimpleNamespace(catalog=catalog), bbox, rng))  # type: ignore[arg-type]
        finally:
            catalog.close()
        if day in TILE_DAYS:
            tiles.append(refresh_bench.edit_tiles(data / "tiles" / TILES_FILE, rng))
        began = time.perf_counter()
        document = manager.refresh(area_id, wait=True, poll_seconds=0.1)
        seconds.append(time.perf_counter() - began)
        if document["status"] != "complete" or document.get("latest") != day + 1:
            raise RuntimeError(f"day {day}: refresh gave {document}")
    return Chain(area_id, edits, tiles, seconds)


# --- checks ---------------------------------------------------------------------------------


def check_applied(result: Any, chained: int) -> None:
    """Fail unless the sync applied the 7-step chain by update files, without errors."""
    applied = result.scheduled_updates
    if result.errors:
        raise RuntimeError(f"(A): errors {result.errors}")
    if applied is None or applied.choice != "updates":
        raise RuntimeError(f"(A): the plan chose {applied and applied.choice}: {applied}")
    if (applied.from_number, applied.to_number) != (1, DAYS + 1):
        raise RuntimeError(f"(A): from {applied.from_number} to {applied.to_number}")
    if applied.updates_applied != DAYS * chained:
        raise RuntimeError(f"(A): {applied.updates_applied} updates for {chained} files")


def check_same(a: Path, b: Path, expected_rows: int) -> dict[str, int]:
    """Fail unless (A)'s folder holds (B)'s rows and tiles; the counts compared."""
    for folder in (a, b):
        report = verify_package(folder)
        if not report.ok:
            raise RuntimeError(f"{folder} does not verify: {report}")
    state_a, state_b = package_state(a), package_state(b)
    if state_a is None or state_b is None or state_a.number != state_b.number:
        raise RuntimeError(f"package states differ: {state_a} / {state_b}")
    replicas = [name for name in state_a.files if name.endswith(".gpkg")]
    counted = {"rows": 0, "tiles": 0}
    for name in replicas:
        counted["rows"] += refresh_bench.same_rows(f"(A) vs (B) {name}", a / name, b / name)
    if counted["rows"] != expected_rows:
        raise RuntimeError(f"(A): {counted['rows']} rows, {expected_rows} expected")
    for name in (n for n in state_a.files if n.endswith(".mbtiles")):
        mine, theirs = refresh_bench.tile_rows(a / name), refresh_bench.tile_rows(b / name)
        if mine != theirs:
            differ = sum(1 for k in mine.keys() & theirs.keys() if mine[k] != theirs[k])
            raise RuntimeError(
                f"{name}: {len(mine.keys() - theirs.keys())} tiles more, "
                f"{len(theirs.keys() - mine.keys())} fewer, {differ} differ"
            )
        counted["tiles"] += len(mine)
    return counted


# --- a field link -------------------------------------------------------------------------


class _Bucket:
    """The link's downstream bandwidth, shared by every connection: each chunk waits for its
    turn on the wire."""

    def __init__(self, mbit: float) -> None:
        self._seconds_per_byte = 8 / (mbit * 1e6)
        self._free_at = 0.0
        self._lock = threading.Lock()

    def send(self, size: int) -> None:
        with self._lock:
            start = max(self._free_at, time.perf_counter())
            self._free_at = start + size * self._seconds_per_byte
            done = self._free_at
        time.sleep(max(0.0, done - time.perf_counter()))


def _pump(
    source: socket.socket, target: socket.socket, bucket: _Bucket | None, delay: float
) -> None:
    try:
        while data := source.recv(64 * 1024):
            if bucket is not None:
                bucket.send(len(data))
            if delay:
                time.sleep(delay)
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def field_link(upstream_port: int, mbit: float, rtt_ms: float) -> Iterator[str]:
    """A TCP proxy to ``127.0.0.1:upstream_port`` that gives the server's bytes ``mbit``
    Mbit/s (all connections together) and holds the client's sends ``rtt_ms``; its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    bucket = _Bucket(mbit)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", upstream_port))
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up = (client, server, None, rtt_ms / 1000)
            down = (server, client, bucket, 0.0)
            for arguments in (up, down):
                threading.Thread(target=_pump, args=arguments, daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        listener.close()


def parse_link(text: str) -> tuple[float, float]:
    """``MBIT[:RTT_MS]``."""
    mbit, _, rtt = text.partition(":")
    return float(mbit), float(rtt or 0)


# --- runs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    a_seconds: float
    b_seconds: float
    a_bytes: int
    b_bytes: int
    first: str
    counted: dict[str, int]


def timed_a(portal: Portal, device: Path, folder: Path) -> tuple[float, Any]:
    fresh(folder)
    shutil.copytree(device, folder)
    began = time.perf_counter()
    result = apply_chain(portal, folder)
    return time.perf_counter() - began, result


def timed_b(portal: Portal, map_id: str, area_id: str, folder: Path) -> tuple[float, Any]:
    fresh(folder)
    began = time.perf_counter()
    found = download_whole(portal, map_id, area_id, folder)
    return time.perf_counter() - began, found


def one_run(
    portal: Portal, map_id: str, area_id: str, device: Path, index: int, expected_rows: int
) -> Run:
    a_folder, b_folder = WORK / "device-a", WORK / "device-b"
    order = ("A", "B") if index % 2 == 0 else ("B", "A")
    a_seconds = b_seconds = 0.0
    a_result: Any = None
    b_found: dict[str, Any] = {}
    for side in order:
        if side == "A":
            a_seconds, a_result = timed_a(portal, device, a_folder)
        else:
            b_seconds, b_found = timed_b(portal, map_id, area_id, b_folder)
    chained = len(package_state(device).files)  # type: ignore[union-attr]
    check_applied(a_result, chained)
    counted = check_same(a_folder, b_folder, expected_rows)
    return Run(
        a_seconds,
        b_seconds,
        int(a_result.scheduled_updates.bytes_downloaded),
        int(b_found["bytes"]),
        order[0],
        counted,
    )


def profile_both(portal: Portal, map_id: str, area_id: str, device: Path) -> list[str]:
    lines = []
    for label, call in (
        ("(A) apply the chain", lambda: timed_a(portal, device, WORK / "device-a")),
        (
            "(B) download whole and open",
            lambda: timed_b(portal, map_id, area_id, WORK / "device-b"),
        ),
    ):
        profiler = cProfile.Profile()
        profiler.runcall(call)
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(28)
        lines += ["", f"cProfile of {label} (client side, cumulative, top 28):", out.getvalue()]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--copies", type=int, default=4, help="copies of the extract's rows")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="one more (A) and (B), profiled")
    parser.add_argument(
        "--link",
        action="append",
        default=[],
        metavar="MBIT[:RTT_MS]",
        help="also run through a field link of this bandwidth (and round trip); repeatable",
    )
    args = parser.parse_args()
    print(f"Machine: {machine()}", flush=True)
    template = refresh_bench.template(args.data, args.copies)
    bbox = refresh_bench.area_bbox(args.copies)
    WORK.mkdir(parents=True, exist_ok=True)
    data, map_id = server_data(template)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [BIN / "offmaps", "serve", "--data", data, "--port", str(port)]
    env = {"OFFMAPS_AREA_KEEP_PACKAGES": str(KEEP), "OFFMAPS_AREA_SCHEDULER": "false"}
    with serving(command, f"{url}/conformance", log=WORK / "server.log", env=env):
        portal = Portal(url)
        try:
            portal.login(USER, PASSWORD)
            manager = OfflineMapAreaManager(portal, map_id)
            began = time.perf_counter()
            created = manager.create(
                title="Helsinki x4",
                bbox=tuple(bbox),  # type: ignore[arg-type]
                update_mode="download_scheduled_updates",
                wait=True,
                poll_seconds=0.1,
            )
            first_seconds = time.perf_counter() - began
            area_id = str(created["id"])
            device = WORK / "device-p1"
            _, first = timed_b(portal, map_id, area_id, device)
            state = package_state(device)
            if state is None or state.number != 1:
                raise RuntimeError(f"package 1 holds no scheduled-update state: {state}")
            rows_1 = sum(
                len(t)
                for name in state.files
                if name.endswith(".gpkg")
                for t in refresh_bench.feature_rows(device / name).values()
            )
            chain = build_chain(data, manager, area_id, bbox)
            plan = plan_updates(portal, state)
            expected_rows = rows_1 + sum(e["inserts"] - e["deletes"] for e in chain.edits)
            per_file: dict[str, int] = {}
            for entry in plan.get("files", []):
                per_file[str(entry["file"])] = per_file.get(str(entry["file"]), 0) + 1
            print(
                f"area {area_id}: first packaging {first_seconds:.2f} s, package 1 "
                f"{first['bytes']:,} bytes in {first['files']} files, {rows_1:,} rows; "
                f"refreshes {', '.join(f'{s:.2f}' for s in chain.refresh_seconds)} s; plan "
                f"from 1: {plan['choice']} ({plan.get('updates_bytes'):,} bytes of updates, "
                f"full {plan.get('full_bytes'):,}), update files per chained file {per_file}",
                flush=True,
            )
            if plan["choice"] != "updates":
                raise RuntimeError(f"the server's plan chose {plan['choice']}: {plan}")
            runs = []
            for index in range(args.runs):
                run = one_run(portal, map_id, area_id, device, index, expected_rows)
                print(
                    f"run {index + 1} ({run.first} first): (A) {run.a_seconds:.2f} s, (B) "
                    f"{run.b_seconds:.2f} s, (B)/(A) {run.b_seconds / run.a_seconds:.2f}x; "
                    f"checked {run.counted}",
                    flush=True,
                )
                runs.append(run)
            lines = report(runs, plan, chain, rows_1, expected_rows, first)
            if args.profile:
                lines += profile_both(portal, map_id, area_id, device)
            for text in args.link:
                mbit, rtt_ms = parse_link(text)
                lines += linked_runs(
                    (mbit, rtt_ms), port, map_id, area_id, device, args.runs, expected_rows
                )
        finally:
            portal.close()
    print("\n".join(lines))
    return 0


def linked_runs(
    link: tuple[float, float],
    port: int,
    map_id: str,
    area_id: str,
    device: Path,
    count: int,
    expected_rows: int,
) -> list[str]:
    """The same alternating runs through a field link; their lines of the report."""
    mbit, rtt_ms = link
    runs = []
    with field_link(port, mbit, rtt_ms) as url:
        portal = Portal(url)
        try:
            portal.login(USER, PASSWORD)
            for index in range(count):
                run = one_run(portal, map_id, area_id, device, index, expected_rows)
                print(
                    f"link {mbit:g} Mbit/s, {rtt_ms:g} ms: run {index + 1} ({run.first} first): "
                    f"(A) {run.a_seconds:.2f} s, (B) {run.b_seconds:.2f} s",
                    flush=True,
                )
                runs.append(run)
        finally:
            portal.close()
    a = [r.a_seconds for r in runs]
    b = [r.b_seconds for r in runs]
    ratios = [r.b_seconds / r.a_seconds for r in runs]
    return [
        "",
        f"Through a field link of {mbit:g} Mbit/s and {rtt_ms:g} ms round trip: (A) "
        f"{statistics.median(a):.2f} s ({min(a):.2f}-{max(a):.2f}), (B) "
        f"{statistics.median(b):.2f} s ({min(b):.2f}-{max(b):.2f}); (B)/(A) "
        f"{statistics.median(ratios):.2f}x (runs {', '.join(f'{x:.2f}' for x in ratios)}); "
        f"checked per run: {[r.counted for r in runs]}",
    ]


def report(
    runs: list[Run],
    plan: dict[str, Any],
    chain: Chain,
    rows_1: int,
    expected_rows: int,
    first: dict[str, Any],
) -> list[str]:
    a = [r.a_seconds for r in runs]
    b = [r.b_seconds for r in runs]
    ratios = [r.b_seconds / r.a_seconds for r in runs]
    ratio = statistics.median(ratios)
    e = chain.edits[0]
    return [
        "",
        f"Package 1: {first['bytes']:,} bytes ({rows_1:,} rows); {DAYS} days of edits, each "
        f"~{e['updates'] + e['deletes'] + e['inserts']} rows ({e['updates']} updates, "
        f"{e['deletes']} deletes, {e['inserts']} inserts), tiles on days {TILE_DAYS}: "
        f"{chain.tiles}; newest package: {expected_rows:,} rows",
        "Update files of the chain: "
        + ", ".join(f"{f['path']} {int(f['size']):,}" for f in plan["files"]),
        "",
        "| side | s (median, range) | bytes downloaded |",
        "|---|---:|---:|",
        f"| (A) sync applying the chain of {DAYS} | {statistics.median(a):.2f} "
        f"({min(a):.2f}-{max(a):.2f}) | {runs[0].a_bytes:,} |",
        f"| (B) download the newest package whole and open it | {statistics.median(b):.2f} "
        f"({min(b):.2f}-{max(b):.2f}) | {runs[0].b_bytes:,} |",
        "",
        f"(B)/(A): {ratio:.2f}x (runs {', '.join(f'{x:.2f}' for x in ratios)}), target >= 5x: "
        f"{'met' if ratio >= 5 else 'MISSED'}; bytes (B)/(A) "
        f"{runs[0].b_bytes / runs[0].a_bytes:.1f}x",
        f"checked per run: {[r.counted for r in runs]}",
    ]


if __name__ == "__main__":
    sys.exit(main())
