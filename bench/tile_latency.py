"""Tile latency under sync load: tile p50/p99/max alone, then while 20 devices sync.

The issue: "with 20 devices syncing, tile p99 went from 0.41 s to 4.5 s (max 6.5 s) on the
default single process. Tiles must stay fast while sync runs [...] target: p99 under load <= 3x
p99 idle."

1. The Helsinki sample map is built once (``bench/out/tile-latency/sample``); every round starts
   from a fresh copy of it, with ``--devices`` replicas (default 20) of the sample's editable
   layers registered for the sample editor through :func:`offmaps.services.build_services`, as
   taking the map offline would.
2. ``offmaps serve`` (uvicorn, one process, default settings) serves the copy on loopback.
3. Tiles: map viewers in this process (httpx, asyncio) ask the two archive tile layers of the
   sample map (``basemap``, MBTiles, and ``buildings``, PMTiles: every tile of both) a screen at
   a time: up to 6 tiles of one level and layer at once (a browser's connections per host),
   then a 50 ms pause, screens in a shuffled order. Half the viewers are anonymous (a public
   web map in a browser); the other half are signed in and send their token with every tile, as
   the SDK and QGIS do once signed in. Both are measured apart: anonymous archive tiles are
   answered before routing (``server/fastpath.py``), signed-in ones by the tile route. A third
   viewer (anonymous) asks the vector tiles built live from the feature layers the devices
   write into (``helsinki-vt``, zooms 14-16 over the map's initial extent). Every answer must
   be a 200.
4. Sync load, in a child process (so its own CPU is not this process's): ``--devices`` devices,
   each signed in through the token endpoint, each in a loop uploading a change set of
   ``--changes`` new inspections (``POST /api/replicas/{id}/changes``, every change must be
   applied) and downloading the server's changes since its last download
   (``GET /api/replicas/{id}/changes?since=G``, the whole NDJSON stream, ending in its end
   record), with no pause.
5. Each round: a 3 s warm-up of the viewers; the devices sign in; then ``--windows`` (default
   4) pairs of windows, each ``--seconds`` / windows long: the viewers alone (idle: the devices
   are paused, and have finished the syncs they were in), then while the devices sync (load:
   resumed 1 s before the window opens). Alternating short windows spread the load of the
   other programs on the machine over both phases. Tile p50/p99/max per kind and phase, the
   ratio p99 under load / p99 idle, and what the devices got done.

``--rounds`` rounds (default 3), each on a fresh copy and a fresh server; the machine is shared,
so every round is printed and the median and spread of the ratios summarised.

Run: ``.venv/bin/python bench/tile_latency.py`` (``--quick`` for a short smoke run;
``--py-spy`` records the server with py-spy during each load phase into
``bench/out/tile-latency/``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _http import free_port, serving
from _measure import fresh, machine

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "out" / "tile-latency"
BIN = Path(sys.executable).parent
SEED = 20_261_207
USER = "editor"  # the sample map's editor (offmaps.sample.webmap)
PASSWORD = "offmaps-sample"
SERVICE = "helsinki"
LAYERS = ("basemap", "buildings")  # the sample map's archive tile layers
LIVE_LAYER = f"{SERVICE}-vt"  # vector tiles built from the feature layers the devices edit
LIVE_ZOOMS = (14, 15, 16)
SCREEN = 6  # tiles a viewer asks at once (a browser opens 6 connections per host)
THINK = 0.05  # seconds between a viewer's screens
TARGET = 3.0


# --- setup ---------------------------------------------------------------------------------


def sample(data: Path) -> Path:
    """The sample map's data folder, built once from the OSM extract under ``data``."""
    from offmaps.sample.webmap import build_sample  # noqa: PLC0415

    built = WORK / "sample"
    if not (built / "webmaps").is_dir():
        fresh(built)
        build_sample(built, data / "osm" / "Helsinki.osm.pbf")
    return built


def prepare_round(
    built: Path, served: Path, devices: int
) -> tuple[list[str], int, list[str], list[str]]:
    """A fresh copy of the sample with ``devices`` replicas registered for the editor; the
    replica ids, the generation they start from, the tile paths of the archive layers and those
    of the live vector tiles over the map's initial extent."""
    import morecantile  # noqa: PLC0415

    from offmaps.containers import open_reader  # noqa: PLC0415
    from offmaps.services import build_services  # noqa: PLC0415
    from offmaps.settings import ServerSettings  # noqa: PLC0415
    from offmaps.state.replicas import LayerScope  # noqa: PLC0415

    shutil.copytree(built, fresh(served))
    services = build_services(ServerSettings(data_dir=served))
    try:
        (webmap,) = services.catalog.webmaps.list()
        if webmap.initial_extent is None:
            raise RuntimeError("the sample map has no initial extent")
        west, south, east, north = webmap.initial_extent
        store = services.catalog.feature_service(SERVICE)
        generation = store.generation()
        replicas = [
            services.replicas.register(
                SERVICE,
                ("sites", "inspections"),
                generation,
                owner=USER,
                map_id=str(webmap.id),
                sync_direction="bidirectional",
                scope={"sites": LayerScope(), "inspections": LayerScope()},
            ).id
            for _ in range(devices)
        ]
    finally:
        services.close()
    paths: list[str] = []
    for layer in LAYERS:
        (archive,) = (served / "tiles").glob(f"{layer}.*")
        with open_reader(str(archive)) as reader:
            tiles = sorted((t.z, t.x, t.y) for t, _ in reader.iter_tiles())
        paths += [f"/tiles/{layer}/{z}/{x}/{y}" for z, x, y in tiles]
    quad = morecantile.tms.get("WebMercatorQuad")
    live = [
        f"/tiles/{LIVE_LAYER}/{t.z}/{t.x}/{t.y}"
        for t in quad.tiles(west, south, east, north, list(LIVE_ZOOMS))
    ]
    return replicas, generation, paths, live


def screens(paths: Sequence[str]) -> list[list[str]]:
    """The tile paths in screens: up to :data:`SCREEN` neighbouring tiles of one level and
    layer (paths come sorted by layer, level, column, row)."""
    groups: dict[str, list[str]] = {}
    for path in paths:
        groups.setdefault(path.rsplit("/", 2)[0], []).append(path)
    found: list[list[str]] = []
    for group in groups.values():
        found += [group[i : i + SCREEN] for i in range(0, len(group), SCREEN)]
    return found


def sign_in(client: httpx.Client | None, base: str) -> str:
    """A bearer token of the sample editor, from the OAuth2 token endpoint."""
    form = {"grant_type": "password", "username": USER, "password": PASSWORD}
    answer = httpx.post(f"{base}/oauth2/token", data=form, timeout=60.0)
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


# --- the tile viewers --------------------------------------------------------------------------


@dataclass
class Latencies:
    """Seconds of every tile answer of one kind of viewer in one phase."""

    seconds: list[float] = field(default_factory=list)
    errors: int = 0

    def quantile(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50(self) -> float:
        return self.quantile(0.50)

    @property
    def p99(self) -> float:
        return self.quantile(0.99)

    @property
    def max(self) -> float:
        return max(self.seconds)

    def add(self, other: Latencies) -> None:
        self.seconds += other.seconds
        self.errors += other.errors


KINDS = ("anonymous", "signed in", "live vector")
"""Viewers: archive tiles anonymous (the fast path) and signed in (the tile route), and
anonymous vector tiles built from the feature layers the devices write into."""


async def _viewer(
    client: httpx.AsyncClient,
    order: list[list[str]],
    headers: dict[str, str],
    deadline: float,
    out: Latencies,
) -> None:
    async def one(path: str) -> None:
        began = time.perf_counter()
        try:
            answer = await client.get(path, headers=headers)
            ok = answer.status_code == 200 and bool(answer.content)
        except httpx.HTTPError:
            ok = False
        out.seconds.append(time.perf_counter() - began)
        out.errors += not ok

    i = 0
    while time.perf_counter() < deadline:
        await asyncio.gather(*(one(path) for path in order[i % len(order)]))
        i += 1
        await asyncio.sleep(THINK)


async def _view(
    base: str,
    all_screens: dict[str, list[list[str]]],
    token: str,
    viewers: int,
    seconds: float,
    seed: int,
) -> dict[str, Latencies]:
    found = {kind: Latencies() for kind in KINDS}
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=SCREEN * len(KINDS) * viewers)
    async with httpx.AsyncClient(base_url=base, timeout=30.0, limits=limits) as client:
        tasks = []
        for n in range(viewers * len(KINDS)):
            kind = KINDS[n % len(KINDS)]
            order = all_screens[kind][:]
            random.Random(seed + n).shuffle(order)
            headers = {"Authorization": f"Bearer {token}"} if kind == "signed in" else {}
            tasks.append(_viewer(client, order, headers, deadline, found[kind]))
        await asyncio.gather(*tasks)
    return found


def view(
    base: str,
    all_screens: dict[str, list[list[str]]],
    token: str,
    viewers: int,
    seconds: float,
    seed: int,
) -> dict[str, Latencies]:
    """Run the viewers for ``seconds``; tile latencies by kind of viewer."""
    return asyncio.run(_view(base, all_screens, token, viewers, seconds, seed))


# --- the syncing devices (child process) -------------------------------------------------------


def _change_set(replica: str, changes: int, counter: int, rng: random.Random) -> bytes:
    wall = int(time.time() * 1000)
    today = datetime.now(UTC).date().isoformat()
    items = []
    for n in range(changes):
        items.append(
            {
                "change_id": str(uuid.uuid4()),
                "layer": "inspections",
                "global_id": str(uuid.uuid4()),
                "kind": "insert",
                "version_vector": {replica: counter + n + 1},
                "hlc": f"{wall:013d}.{n:06d}.{replica}",
                "values": {
                    "site_osm_id": rng.randrange(1, 10**10),
                    "inspected_on": today,
                    "inspector": f"device {replica[:6]}",
                    "result": rng.choice(("ok", "broken", "missing")),
                    "notes": "checked under load " * rng.randrange(1, 6),
                },
            }
        )
    body = {"change_set_id": str(uuid.uuid4()), "replica_id": replica, "changes": items}
    return json.dumps(body).encode()


@dataclass
class DeviceCounts:
    uploads: int = 0
    downloads: int = 0
    rows_down: int = 0
    errors: list[str] = field(default_factory=list)
    upload_seconds: list[float] = field(default_factory=list)
    download_seconds: list[float] = field(default_factory=list)


@dataclass
class Control:
    """What the parent asks of the devices: sync (``running`` set), pause, or stop."""

    running: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: bool = False
    busy: int = 0  # devices in the middle of a sync


async def _device(
    client: httpx.AsyncClient,
    replica: str,
    token: str,
    since: int,
    changes: int,
    control: Control,
    counts: DeviceCounts,
    seed: int,
) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {token}"}
    counter = 0
    while True:
        await control.running.wait()
        if control.stopped:
            return
        control.busy += 1
        try:
            since, counter = await _sync_once(
                client, replica, headers, since, changes, counter, counts, rng
            )
        finally:
            control.busy -= 1


async def _sync_once(
    client: httpx.AsyncClient,
    replica: str,
    headers: dict[str, str],
    since: int,
    changes: int,
    counter: int,
    counts: DeviceCounts,
    rng: random.Random,
) -> tuple[int, int]:
    """One sync of one device: upload a change set, download what changed since ``since``;
    the generation to download from next time, and the device's edit counter."""
    body = _change_set(replica, changes, counter, rng)
    counter += changes
    began = time.perf_counter()
    answer = await client.post(
        f"/api/replicas/{replica}/changes",
        content=body,
        headers={**headers, "Content-Type": "application/json"},
    )
    counts.upload_seconds.append(time.perf_counter() - began)
    if answer.status_code != 200:
        counts.errors.append(f"upload {answer.status_code}: {answer.text[:200]}")
        await asyncio.sleep(0.5)
        return since, counter
    statuses = {r["status"] for r in answer.json()["results"]}
    if statuses != {"applied"}:
        counts.errors.append(f"upload answered {sorted(statuses)}")
    counts.uploads += 1
    began = time.perf_counter()
    lines = 0
    last = b""
    async with client.stream(
        "GET", f"/api/replicas/{replica}/changes", params={"since": since}, headers=headers
    ) as stream:
        if stream.status_code != 200:
            counts.errors.append(f"download {stream.status_code}")
            await asyncio.sleep(0.5)
            return since, counter
        async for line in stream.aiter_lines():
            if lines == 0:
                since = int(json.loads(line)["generation"])
            lines += 1
            last = line.encode()
    counts.download_seconds.append(time.perf_counter() - began)
    if b'"sha256"' not in last:
        counts.errors.append("a download ended without its end record")
    counts.downloads += 1
    counts.rows_down += max(0, lines - 2)
    return since, counter


async def _devices(base: str, replicas: list[str], since: int, changes: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=len(replicas))
    async with httpx.AsyncClient(base_url=base, timeout=120.0, limits=limits) as client:
        tokens = [sign_in(None, base) for _ in replicas]  # every device signs in
        counts = [DeviceCounts() for _ in replicas]
        control = Control()
        loop = asyncio.get_running_loop()
        tasks = [
            asyncio.create_task(_device(client, r, t, since, changes, control, c, SEED + n))
            for n, (r, t, c) in enumerate(zip(replicas, tokens, counts, strict=True))
        ]
        print("ready", flush=True)  # paused
        while True:  # the parent says when to sync, pause and stop
            command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if command == "resume":
                control.running.set()
            elif command == "pause":
                control.running.clear()
                while control.busy:  # every device ends the sync it is in
                    await asyncio.sleep(0.01)
            else:
                break
            print(command, flush=True)
        control.stopped = True
        control.running.set()
        await asyncio.gather(*tasks)
    uploads = [s for c in counts for s in c.upload_seconds]
    downloads = [s for c in counts for s in c.download_seconds]
    return {
        "uploads": sum(c.uploads for c in counts),
        "downloads": sum(c.downloads for c in counts),
        "rows_down": sum(c.rows_down for c in counts),
        "errors": [e for c in counts for e in c.errors][:10],
        "error_count": sum(len(c.errors) for c in counts),
        "upload_p50": statistics.median(uploads) if uploads else 0.0,
        "download_p50": statistics.median(downloads) if downloads else 0.0,
    }


def devices_role(base: str, replicas: list[str], since: int, changes: int) -> None:
    """Child process: sign every device in, then sync, pause and stop as told on stdin (each
    command acknowledged on stdout once done); prints what the devices got done."""
    print(json.dumps(asyncio.run(_devices(base, replicas, since, changes))), flush=True)


# --- a round ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    idle: dict[str, Latencies]
    load: dict[str, Latencies]
    devices: dict[str, Any]
    seconds: float
    load_avg: float


def _tell(child: subprocess.Popen[str], command: str) -> None:
    """Send the devices a command and wait until they have carried it out."""
    if child.stdin is None or child.stdout is None:
        raise RuntimeError("no pipes to the syncing devices")
    child.stdin.write(f"{command}\n")
    child.stdin.flush()
    if child.stdout.readline().strip() != command:
        raise RuntimeError(f"the syncing devices did not {command}")


def run_round(
    n: int,
    built: Path,
    devices: int,
    changes: int,
    viewers: int,
    seconds: float,
    windows: int,
    spy: bool,
) -> Round:
    served = WORK / "served"
    replicas, generation, paths, live = prepare_round(built, served, devices)
    archive = screens(paths)
    all_screens = {"anonymous": archive, "signed in": archive, "live vector": screens(live)}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [BIN / "offmaps", "serve", "--data", served, "--port", str(port)]
    load_avg = os.getloadavg()[0]
    idle = {kind: Latencies() for kind in KINDS}
    load = {kind: Latencies() for kind in KINDS}
    window = seconds / windows
    with serving(command, f"{base}/conformance", log=WORK / f"server-{n}.log") as server:
        token = sign_in(None, base)
        view(base, all_screens, token, viewers, 3.0, SEED)  # warm-up
        child = subprocess.Popen(
            [
                *(sys.executable, __file__, "--role", "devices", "--url", base),
                *("--changes", str(changes), "--since", str(generation)),
                *("--replicas", ",".join(replicas)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            if child.stdout is None or child.stdout.readline().strip() != "ready":
                raise RuntimeError("the syncing devices did not start")
            for w in range(windows):
                for phase, label in ((idle, "idle"), (load, "load")):
                    if label == "load":
                        _tell(child, "resume")
                        time.sleep(1.0)  # every device is in its sync loop
                    recorder = None
                    if spy and label == "load" and w == 0:
                        recorder = subprocess.Popen(
                            [
                                *(BIN / "py-spy", "record", "--pid", str(server.pid)),
                                *("--threads", "--gil", "--duration", str(round(window))),
                                *("--format", "speedscope"),
                                *("--output", str(WORK / f"load-{n}.speedscope.json")),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    got = view(base, all_screens, token, viewers, window, SEED + 10 * n + w)
                    for kind in KINDS:
                        phase[kind].add(got[kind])
                    if recorder is not None:
                        recorder.wait(timeout=60)
                    if label == "load":
                        _tell(child, "pause")
            if child.stdin is not None:
                child.stdin.write("stop\n")
                child.stdin.flush()
            out, _ = child.communicate(timeout=300)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    if child.returncode != 0:
        raise RuntimeError(f"the syncing devices failed ({child.returncode})")
    done = json.loads(out.strip().splitlines()[-1])
    return Round(idle, load, done, seconds, load_avg)


def _ms(value: float) -> str:
    return f"{value * 1000:,.0f}" if value >= 0.01 else f"{value * 1000:.1f}"


def report_round(n: int, found: Round) -> list[str]:
    lines = []
    d = found.devices
    for kind in KINDS:
        idle, load = found.idle[kind], found.load[kind]
        lines.append(
            f"| {n} ({found.load_avg:.1f}) | {kind} | {len(idle.seconds):,} | {_ms(idle.p50)} "
            f"| {_ms(idle.p99)} | {_ms(idle.max)} | {len(load.seconds):,} | {_ms(load.p50)} "
            f"| {_ms(load.p99)} | {_ms(load.max)} | {load.p99 / idle.p99:.1f} "
            f"| {idle.errors + load.errors} | {d['uploads']:,} / {d['downloads']:,} "
            f"({d['rows_down']:,} rows) | {d['error_count']} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--devices", type=int, default=20, help="devices syncing at once")
    parser.add_argument("--changes", type=int, default=25, help="changes per uploaded set")
    parser.add_argument("--viewers", type=int, default=1, help="tile viewers of each kind")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--windows", type=int, default=4, help="idle/load windows per phase")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each on a fresh server")
    parser.add_argument("--quick", action="store_true", help="one 6 s round: a smoke run")
    parser.add_argument("--py-spy", action="store_true", help="record the server under load")
    hidden = argparse.SUPPRESS
    parser.add_argument("--role", choices=("devices",), help=hidden)
    parser.add_argument("--url", help=hidden)
    parser.add_argument("--replicas", help=hidden)
    parser.add_argument("--since", type=int, default=0, help=hidden)
    args = parser.parse_args()
    if args.role == "devices":
        devices_role(args.url, args.replicas.split(","), args.since, args.changes)
        return 0
    # a SIGTERM (timeout, kill) leaves through SystemExit: servers and devices are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    rounds, seconds, windows = (
        (1, 6.0, 2) if args.quick else (args.rounds, args.seconds, args.windows)
    )
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {machine()}", flush=True)
    built = sample(args.data)
    print(
        f"{args.viewers} anonymous, {args.viewers} signed-in and {args.viewers} live vector tile "
        f"viewers, screens of up to "
        f"{SCREEN} tiles; {args.devices} devices syncing sets of {args.changes} inserts and "
        f"downloading, no pause; {seconds:.0f} s per phase in {windows} alternating idle and "
        f"load windows, {rounds} round(s)",
        flush=True,
    )
    header = [
        "| round (load avg) | viewer | idle tiles | p50 ms | p99 ms | max ms | loaded tiles "
        "| p50 ms | p99 ms | max ms | p99 load/idle | tile errors | uploads / downloads "
        "| sync errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(header), flush=True)
    found: list[Round] = []
    for n in range(1, rounds + 1):
        one = run_round(
            n, built, args.devices, args.changes, args.viewers, seconds, windows, args.py_spy
        )
        found.append(one)
        print("\n".join(report_round(n, one)), flush=True)
        if one.devices["errors"]:
            print(f"  sync errors (first): {one.devices['errors'][:3]}", flush=True)
    failures = 0
    for kind in KINDS:
        ratios = [r.load[kind].p99 / r.idle[kind].p99 for r in found]
        median = statistics.median(ratios)
        met = "met" if median <= TARGET else "MISSED"
        spread = ", ".join(f"{ratio:.1f}" for ratio in ratios)
        print(
            f"{kind} viewers: p99 under load / p99 idle = {median:.1f} (median of {spread}); "
            f"target <= {TARGET:.0f}: {met}"
        )
        failures += sum(r.idle[kind].errors + r.load[kind].errors for r in found)
    print(f"tile errors in all rounds: {failures}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as error:
        print(f"bench/tile_latency.py failed: {error}", file=sys.stderr)
        sys.exit(1)
