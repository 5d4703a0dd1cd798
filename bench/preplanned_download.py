"""Preplanned map areas (issue 18): 50 devices downloading the same package at once, from
``offmaps serve`` and from nginx serving the same files, same machine, same run.

1. The data folder of bench/preplanned_refresh.py (its template, built there once and borrowed
   as is: the OSM points, lines and multipolygons of Helsinki x4 in a feature service and the
   61,791 rendered tiles of bench/convert.py as an MBTiles layer) is copied afresh, a user with
   ``maps:write`` and ``features:edit`` is added, and ``offmaps serve --workers 2`` is started on
   loopback (untimed).
2. The area of preplanned_refresh.py (every copy and the rendered tiles) is created through
   ``POST /api/maps/{id}/areas`` and its package awaited (untimed; its seconds are printed).
3. Every file of the package is downloaded once from offmaps and checked against the listing's
   size and SHA-256, and written into a folder that Debian's nginx (started by the bench with a
   generated configuration: ``daemon off``, 2 worker processes as offmaps has 2 workers,
   ``sendfile on``, access log off, loopback port) serves at the same paths.
4. Each measurement: ``--devices`` (50) devices, threads spread over ``--procs`` (2) client
   processes, each device with its own keep-alive ``httpx.Client``, download every file of the
   package in the listing's order with ``package.json`` last (as the SDK does; offmaps with the
   bearer token), hashing every byte as it arrives; nothing is written to disk. Timed from the
   moment all devices are released at once (processes started, threads waiting) to the last
   device's last byte. Every file's bytes and SHA-256 are checked against the listing; any
   status other than 200, short file, wrong hash or exception counts as an error.
5. One warm-up of each server, then ``--rounds`` (3) rounds alternating offmaps, nginx.

Prints, per round and server: seconds, bytes, MB/s, errors, and the CPU seconds the server's
processes (the process group) and the clients used; then median MB/s of each server and the
ratio offmaps / nginx (target >= 0.5x). ``--wrk SECONDS`` (10) then runs ``wrk -t2 -c50``
over the same files on each server, twice, alternating (a client in C that does not hash; bytes
unchecked). ``--profile SECONDS`` records one more offmaps round with py-spy (when the venv has
it) into bench/out/preplanned-download/ and prints its top frames.

Run: ``flock /work/notes/bench.lock .venv/bin/python bench/preplanned_download.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import preplanned_refresh
from _http import free_port, serving
from _measure import fresh, machine

from offmaps.services import build_services
from offmaps.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
WORK = OUT / "preplanned-download"
BIN = Path(sys.executable).parent
COPIES = 4
USER = "bench"  # the owner of the template's web map
PASSWORD = "bench-download-password"
CHUNK = 1024 * 1024
MANIFEST = "package.json"

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 2;
user root;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
        }}
    }}
}}
"""


# --- the servers ----------------------------------------------------------------------------


def prepare(data: Path) -> tuple[Path, str]:
    """A fresh copy of preplanned_refresh.py's template with the bench user; the map's id."""
    template = preplanned_refresh.template(data, COPIES)
    served = fresh(WORK / "data")
    shutil.copytree(template, served)
    services = build_services(ServerSettings(data_dir=served))
    try:
        services.users.add_user(USER, PASSWORD, scopes=("maps:read", "maps:write", "features:edit"))
    finally:
        services.close()
    (webmap,) = (served / "webmaps").glob("*.json")
    return served, webmap.stem


def sign_in(base: str) -> str:
    """A bearer token of the bench user, from the OAuth2 token endpoint."""
    form = {"grant_type": "password", "username": USER, "password": PASSWORD}
    answer = httpx.post(f"{base}/oauth2/token", data=form, timeout=60.0)
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


def create_area(base: str, map_id: str, token: str) -> dict[str, Any]:
    """Create the area and wait for its first package; the area's document."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {
        "title": "bench download",
        "bbox": preplanned_refresh.area_bbox(COPIES),
        "update_mode": "download_scheduled_updates",
    }
    started = time.perf_counter()
    with httpx.Client(base_url=base, headers=headers, timeout=60.0) as client:
        answer = client.post(f"/api/maps/{map_id}/areas", json=body)
        if answer.status_code != 201:
            raise RuntimeError(f"create answered {answer.status_code}: {answer.text}")
        href = answer.headers["location"]
        while True:
            area: dict[str, Any] = client.get(href).json()
            if area["status"] == "complete":
                break
            if area["status"] == "failed" or time.perf_counter() - started > 900:
                raise RuntimeError(f"packaging did not complete: {area}")
            time.sleep(1.0)
    print(f"area packaged in {time.perf_counter() - started:.1f} s (untimed)")
    return area


def nginx_root(base: str, token: str, files: list[dict[str, Any]]) -> Path:
    """Download every file once from offmaps, check it, and lay it out for nginx."""
    root = fresh(WORK / "nginx-root")
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=120.0) as client:
        for entry in files:
            target = root / entry["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with client.stream("GET", entry["href"]) as answer, target.open("wb") as out:
                if answer.status_code != 200:
                    raise RuntimeError(f"{entry['path']}: offmaps answered {answer.status_code}")
                for chunk in answer.iter_bytes(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != entry["sha256"] or target.stat().st_size != entry["size"]:
                raise RuntimeError(f"{entry['path']}: not the listed bytes")
    return root


def nginx_command(root: Path, port: int) -> list[str | Path]:
    """Debian's nginx with a generated configuration, in the foreground."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise RuntimeError("nginx not found: run `make bench-tools` (apt-get install -y nginx)")
    work = fresh(WORK / "nginx")
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / "tmp" / name).mkdir(parents=True)
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=work, port=port, root=root))
    return [nginx, "-p", work, "-c", conf]


def group_cpu_seconds(pgid: int) -> tuple[float, float]:
    """User and system CPU seconds of the live processes of a process group (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        # after the name: state ppid pgrp session ... utime(14th) stime(15th) of the whole line
        if int(fields[2]) == pgid:
            user += int(fields[11])
            system += int(fields[12])
    return user / ticks, system / ticks


# --- a lighter client: wrk ----------------------------------------------------------------

_WRK_LUA = """\
local paths = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
end
function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK-BYTES requests=%d bytes=%d duration_us=%d errors=%d\\n",
    summary.requests, summary.bytes, summary.duration,
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def wrk_rate(
    base: str, paths: list[str], headers: dict[str, str], seconds: int, connections: int
) -> str:
    """wrk with 2 threads and as many connections as devices, cycling through the files: the
    servers' rate with a client that neither parses in Python nor hashes (bytes unchecked)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return "wrk not found (make bench-tools)"
    script, listing = WORK / "wrk.lua", WORK / "wrk-paths.txt"
    script.write_text(_WRK_LUA)
    listing.write_text("".join(f"{path}\n" for path in paths))
    header = [arg for k, v in headers.items() for arg in ("-H", f"{k}: {v}")]
    done = subprocess.run(
        [
            *(wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "60s", *header),
            *("-s", str(script), base, "--", str(listing)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    found = [line for line in done.stdout.splitlines() if line.startswith("WRK-BYTES ")]
    if done.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    values = {k: int(v) for k, v in (pair.split("=") for pair in found[0].split()[1:])}
    rate = values["bytes"] / (values["duration_us"] / 1e6) / 1e6
    return f"{rate:,.0f} MB/s ({values['requests']:,} requests, {values['errors']} errors)"


# --- the devices ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceResult:
    """What one device got: bytes, files checked, errors with their reasons."""

    bytes: int
    files: int
    errors: list[str]


def download_all(
    client: httpx.Client, urls: list[tuple[str, int, str]], headers: dict[str, str]
) -> DeviceResult:
    """Every file of the package in order: its bytes hashed and checked as they arrive."""
    got, files, errors = 0, 0, []
    for url, size, sha256 in urls:
        digest = hashlib.sha256()
        length = 0
        try:
            with client.stream("GET", url, headers=headers) as answer:
                if answer.status_code != 200:
                    errors.append(f"{url}: {answer.status_code}")
                    continue
                for chunk in answer.iter_raw():  # as read from the socket
                    digest.update(chunk)
                    length += len(chunk)
        except httpx.HTTPError as error:
            errors.append(f"{url}: {error!r}")
            continue
        got += length
        if length != size or digest.hexdigest() != sha256:
            errors.append(f"{url}: {length} bytes, sha256 {digest.hexdigest()[:12]}")
            continue
        files += 1
    return DeviceResult(got, files, errors)


def client_process(
    devices: int,
    urls: list[tuple[str, int, str]],
    headers: dict[str, str],
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """``devices`` threads, each a device with its own client, released together by ``go``."""
    found: list[DeviceResult] = []
    lock = threading.Lock()
    waiting = threading.Barrier(devices + 1)

    def device() -> None:
        with httpx.Client(timeout=300.0) as client:
            waiting.wait()
            result = download_all(client, urls, headers)
        with lock:
            found.append(result)

    threads = [threading.Thread(target=device) for _ in range(devices)]
    for thread in threads:
        thread.start()
    waiting.wait()  # every thread has its client
    ready.put(os.getpid())
    go.wait()
    for thread in threads:
        thread.join()
    usage = os.times()
    results.put(([(r.bytes, r.files, r.errors) for r in found], usage.user + usage.system))


@dataclass(frozen=True)
class Round:
    """One measurement of one server."""

    seconds: float
    bytes: int
    files: int
    errors: list[str]
    server_user: float
    server_system: float
    client_cpu: float

    @property
    def server_cpu(self) -> float:
        return self.server_user + self.server_system

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6


def measure(
    urls: list[tuple[str, int, str]],
    headers: dict[str, str],
    *,
    devices: int,
    procs: int,
    server_pgid: int,
) -> Round:
    """``devices`` devices download every file at once; timed from their release to the end."""
    context = multiprocessing.get_context("fork")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    shares = [devices // procs + (1 if i < devices % procs else 0) for i in range(procs)]
    children = [
        context.Process(target=client_process, args=(n, urls, headers, ready, go, results))
        for n in shares
        if n
    ]
    for child in children:
        child.start()
    for _ in children:
        ready.get(timeout=120)
    cpu_before = group_cpu_seconds(server_pgid)
    started = time.perf_counter()
    go.set()
    found, client_cpu = [], 0.0
    for _ in children:
        part, cpu = results.get(timeout=1800)
        found += part
        client_cpu += cpu
    seconds = time.perf_counter() - started
    user_after, system_after = group_cpu_seconds(server_pgid)
    for child in children:
        child.join()
    errors = [e for _, _, errs in found for e in errs]
    if len(found) != devices:
        errors.append(f"{devices - len(found)} devices gave no result")
    return Round(
        seconds,
        sum(b for b, _, _ in found),
        sum(f for _, f, _ in found),
        errors,
        user_after - cpu_before[0],
        system_after - cpu_before[1],
        client_cpu,
    )


def row(name: str, number: str, result: Round, files: int) -> str:
    return (
        f"| {name} | {number} | {result.seconds:.2f} | {result.bytes / 1e6:,.0f} "
        f"| {result.mb_per_s:,.0f} | {result.files}/{files} | {len(result.errors)} "
        f"| {result.server_user:.1f} + {result.server_system:.1f} | {result.client_cpu:.1f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="offmaps serve --workers")
    parser.add_argument(
        "--wrk", type=int, default=10, help="seconds of each wrk run after the rounds (0: none)"
    )
    parser.add_argument(
        "--profile", type=int, default=0, help="py-spy this many seconds of one more round"
    )
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {machine()}")
    served, map_id = prepare(args.data)
    ports = {"offmaps": free_port(), "nginx": free_port()}
    bases = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    offmaps = [
        *(BIN / "offmaps", "serve", "--data", served, "--port", str(ports["offmaps"])),
        *("--workers", str(args.workers)),
    ]
    ready = f"{bases['offmaps']}/api/maps/{map_id}/areas"
    with serving(offmaps, ready, log=WORK / "offmaps.log") as server:
        token = sign_in(bases["offmaps"])
        area = create_area(bases["offmaps"], map_id, token)
        package = area["package"]
        files = sorted(package["files"], key=lambda e: e["path"] == MANIFEST)
        total = sum(e["size"] for e in files)
        print(f"package {package['number']}: {len(files)} files, {total / 1e6:.1f} MB:")
        for entry in files:
            print(f"  {entry['path']}: {entry['size']:,} bytes")
        root = nginx_root(bases["offmaps"], token, files)
        urls = {
            "offmaps": [(e["href"], e["size"], e["sha256"]) for e in files],
            "nginx": [(f"{bases['nginx']}/{e['path']}", e["size"], e["sha256"]) for e in files],
        }
        headers = {"offmaps": {"Authorization": f"Bearer {token}"}, "nginx": {}}
        nginx = nginx_command(root, ports["nginx"])
        with serving(nginx, urls["nginx"][0][0], log=WORK / "nginx.log") as peer:
            pgids = {"offmaps": server.pid, "nginx": peer.pid}

            def one(name: str) -> Round:
                return measure(
                    urls[name],
                    headers[name],
                    devices=args.devices,
                    procs=args.procs,
                    server_pgid=pgids[name],
                )

            print(
                f"{args.devices} devices x {len(files)} files ({total / 1e6:.1f} MB) at once, "
                f"{args.procs} client processes, offmaps --workers {args.workers}, nginx 2 "
                "worker processes"
            )
            for name in pgids:
                warm = one(name)
                print(f"{name} warm-up: {warm.mb_per_s:,.0f} MB/s, {len(warm.errors)} errors")
            print(
                "| server | round | s | MB | MB/s | files checked | errors "
                "| server CPU s (user + sys) | client CPU s |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            results: dict[str, list[Round]] = {name: [] for name in pgids}
            expected = args.devices * len(files)
            for number in range(args.rounds):
                for name in pgids:
                    result = one(name)
                    results[name].append(result)
                    print(row(name, str(number + 1), result, expected), flush=True)
                    for error in result.errors[:5]:
                        print(f"  {name} error: {error}")
            if args.wrk:
                for number in range(2):
                    for name in pgids:
                        paths = [url.removeprefix(bases[name]) for url, _, _ in urls[name]]
                        rate = wrk_rate(bases[name], paths, headers[name], args.wrk, args.devices)
                        print(f"wrk -t2 -c{args.devices} {name} run {number + 1}: {rate}")
            if args.profile:
                profile(server.pid, args.profile, one)
    median = {name: statistics.median(r.mb_per_s for r in rs) for name, rs in results.items()}
    errors = sum(len(r.errors) for rs in results.values() for r in rs)
    checked = sum(r.files for rs in results.values() for r in rs)
    for name, value in median.items():
        spread = ", ".join(f"{r.mb_per_s:,.0f}" for r in results[name])
        gigabytes = sum(r.bytes for r in results[name]) / 1e9
        server = sum(r.server_cpu for r in results[name]) / gigabytes
        system = sum(r.server_system for r in results[name]) / gigabytes
        client = sum(r.client_cpu for r in results[name]) / gigabytes
        print(
            f"{name}: median {value:,.0f} MB/s ({spread}); CPU s per GB: server {server:.2f} "
            f"(sys {system:.2f}), "
            f"clients {client:.2f}"
        )
    print(f"files checked (size and SHA-256): {checked:,}; errors: {errors}")
    print(f"offmaps / nginx = {median['offmaps'] / median['nginx']:.2f}x (target >= 0.5x)")
    return 1 if errors else 0


def profile(pid: int, seconds: int, one: Any) -> None:
    """py-spy the offmaps server (its whole process group's Python) during one more round."""
    spy = BIN / "py-spy"
    if not spy.exists():
        print("py-spy is not in the venv: no profile")
        return
    target = fresh(WORK / "offmaps-profile.txt")
    log = (WORK / "py-spy.log").open("wb")
    recorder = subprocess.Popen(
        [
            *(spy, "record", "--pid", str(pid), "--subprocesses", "--format", "raw"),
            *("--duration", str(seconds), "--output", target, "--nonblocking"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    time.sleep(1.0)
    result = one("offmaps")
    recorder.wait(timeout=seconds + 60)
    log.close()
    print(f"profiled round: {result.mb_per_s:,.0f} MB/s; py-spy's stacks in {target}")
    leaves: Counter[str] = Counter()
    for line in target.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1]
        if not leaf.startswith("Condition.wait"):  # idle pool threads waiting for work
            leaves[leaf] += int(count)
    samples = sum(leaves.values())
    print(f"busy samples of the server's processes (idle pool threads left out): {samples:,}")
    for frame, count in leaves.most_common(12):
        print(f"  {count / samples:6.1%} {frame}")


if __name__ == "__main__":
    sys.exit(main())
