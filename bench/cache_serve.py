"""Tile caches in S3: offmaps vs MapProxy 7's ``s3`` cache over HTTP, and presigned direct fetches.

1. Starts SeaweedFS for the bench alone (``scripts/seaweedfs.sh`` with its own state folder in
   bench/out/ and its own ports, away from the tests' 8433), with a bucket ``offmaps-bench``.
2. Fills it once (kept in bench/out/ for later runs) with the real tiles rendered from the
   OpenStreetMap extract of central Helsinki (bench/convert.py renders them): an offmaps tile
   cache ``helsinki`` whose source is the MBTiles archive of those tiles (bench/serve_tiles.py
   makes it), seeded over the whole area by ``offmaps cache seed`` with
   ``OFFMAPS_STORAGE_URL=s3://offmaps-bench/offmaps`` (blobs once per distinct content); and
   for MapProxy the TMS folder itself copied below ``mapproxy/`` (one object per tile,
   ``{z}/{x}/{row}.png``, the ``tms`` layout of its ``s3`` cache).
3. Counts what each server asks of S3 per tile: both servers run once more against a counting
   TCP proxy in front of SeaweedFS and are asked the same tiles one by one.
4. Serves them on loopback, ``offmaps serve --workers 2`` at ``/tiles/helsinki/{z}/{x}/{y}``
   against MapProxy's WSGI app under gunicorn (2 sync workers; 2 gthread workers of 4 threads)
   at its WMTS REST endpoint, both reading the same SeaweedFS. Checks that 50 random tiles are
   byte-identical to the folder's from all three, then ``wrk -t2 -c8`` over a fixed shuffled
   list of every tile, one warm-up and alternating runs: req/s, p50/p99, errors, ratio.
5. Presigned direct fetches against proxying: a client gets presigned GET URLs of every tile
   from ``POST /api/caches/helsinki/urls`` (timed on its own) and fetches the tiles straight
   from SeaweedFS, against the same tiles through ``GET /tiles/...`` of offmaps, and the 307
   answers of ``?redirect=presigned``: tiles/s with the same wrk client and concurrency.

Run under the bench lock: ``flock /work/notes/bench.lock .venv/bin/python bench/cache_serve.py``
(``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _http import WrkResult, free_port, publish_map, require_wrk, run_wrk, serving
from _measure import machine
from convert import BBOX, ZOOMS
from serve_tiles import MAPPROXY_YAML, gunicorn, mapproxy_path, offmaps_path, summary_row
from serve_tiles import prepare as prepare_archive

from offmaps.types import Tile

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
WORK = OUT / "cache-serve"
BIN = Path(sys.executable).parent
SEED = 20261207
CHECKED = 50
CACHE = "helsinki"
BUCKET = "offmaps-bench"
OFFMAPS_PREFIX = "offmaps"
MAPPROXY_PREFIX = "mapproxy"
# the admin identity scripts/seaweedfs.sh writes into its s3.json (test-only keys, loopback)
ACCESS_KEY, SECRET_KEY = "offmaps-test", "offmaps-test-secret-key"
READER, READER_PASSWORD = "bench-reader", "bench-reader-password"

# serve_tiles.py's MapProxy (WMTS REST, GLOBAL_WEBMERCATOR with origin sw, sources: []) over
# its s3 cache instead of the file cache; the tms layout names keys {directory}/{z}/{x}/{row}
_FILE_CACHE = "      type: file\n      directory_layout: tms\n      directory: {directory}\n"
_S3_CACHE = (
    "      type: s3\n"
    "      directory_layout: tms\n"
    f"      directory: {MAPPROXY_PREFIX}\n"
    f"      bucket_name: {BUCKET}\n"
    "      endpoint_url: {endpoint}\n"
    "      region_name: us-east-1\n"
)
MAPPROXY_S3_YAML = MAPPROXY_YAML.replace(_FILE_CACHE, _S3_CACHE)
if MAPPROXY_S3_YAML == MAPPROXY_YAML:
    raise RuntimeError("serve_tiles.py's MapProxy configuration changed: update cache_serve.py")
MAPPROXY_APP = """\
from mapproxy.wsgiapp import make_wsgi_app

application = make_wsgi_app({config!r})
"""

OFFMAPS = "offmaps"
MP_SYNC = "MapProxy s3 sync"
MP_GTHREAD = "MapProxy s3 gthread"
DIRECT = "presigned, straight from SeaweedFS"
PROXIED = "offmaps GET /tiles"
REDIRECT = "offmaps ?redirect=presigned (307)"


# --- SeaweedFS and what is stored in it ----------------------------------------------------------


@contextlib.contextmanager
def seaweedfs(port: int) -> Iterator[str]:
    """The bench's own SeaweedFS (scripts/seaweedfs.sh), its data kept in bench/out; stopped at
    the end. Yields its S3 endpoint."""
    env = {
        **os.environ,
        "OFFMAPS_SEAWEEDFS_DIR": str(WORK / "seaweedfs"),
        "OFFMAPS_SEAWEEDFS_PORT": str(port),
        "WEED": str(BIN / "weed"),
    }
    script = ROOT / "scripts" / "seaweedfs.sh"
    started = subprocess.run(["bash", script], env=env, capture_output=True, text=True, check=False)
    if started.returncode != 0:
        raise RuntimeError(f"SeaweedFS did not start:\n{started.stderr}")
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, check=False)


def s3_client(endpoint: str) -> Any:
    """A boto3 client of the bench's SeaweedFS, as its admin."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(signature_version="s3v4", max_pool_connections=16),
    )


def s3_env(endpoint: str) -> dict[str, str]:
    """The environment of an offmaps process whose storage is the bench's bucket, and of
    MapProxy's (boto3 reads the AWS_* keys)."""
    return {
        "OFFMAPS_STORAGE_URL": f"s3://{BUCKET}/{OFFMAPS_PREFIX}",
        "OFFMAPS_S3_ENDPOINT_URL": endpoint,
        "OFFMAPS_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "OFFMAPS_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def offmaps(*args: str | Path, env: dict[str, str]) -> str:
    """Run the offmaps command line; its stdout."""
    done = subprocess.run(
        [BIN / "offmaps", *map(str, args)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"offmaps {' '.join(map(str, args))} failed:\n{done.stderr}")
    return done.stdout


def fill_offmaps(data: Path, archive: Path, tiles: int, env: dict[str, str]) -> None:
    """An offmaps cache of the archive in S3, seeded over the whole area (once)."""
    zooms = f"{ZOOMS[0]}-{ZOOMS[1]}"
    bbox = ",".join(map(str, BBOX))
    listed = json.loads(offmaps("cache", "list", "--json", "--data", data, env=env))
    if not any(cache["name"] == CACHE for cache in listed):
        offmaps("cache", "create", CACHE, "--archive", archive, "--zooms", zooms, "--data", data,
                env=env)  # fmt: skip
    stats = json.loads(offmaps("cache", "stats", CACHE, "--json", "--data", data, env=env))
    if stats["tiles"] != tiles:
        print(f"seeding the offmaps cache in S3 ({tiles:,} tiles, once) ...", flush=True)
        began = time.perf_counter()
        offmaps("cache", "seed", CACHE, "--bbox", bbox, "--zooms", zooms, "--data", data, env=env)
        stats = json.loads(offmaps("cache", "stats", CACHE, "--json", "--data", data, env=env))
        print(f"  seeded in {time.perf_counter() - began:.0f} s")
    if stats["tiles"] != tiles:
        raise RuntimeError(f"the offmaps cache holds {stats['tiles']} tiles, not {tiles}")
    print(
        f"offmaps cache in S3: {stats['tiles']:,} tiles in {stats['blobs']:,} distinct blobs "
        f"({stats['blob_bytes'] / 1e6:.0f} MB; {stats['bytes'] / 1e6:.0f} MB of tiles)"
    )
    if not any((data / "webmaps").glob("*.json")):  # tiles are served through web maps
        layer = {"type": "raster_tile", "id": CACHE, "title": "Helsinki", "service": CACHE}
        publish_map(data, basemap=[layer])
    users = json.loads(offmaps("users", "list", "--json", "--data", data, env=env))
    if not any(user["name"] == READER for user in users):
        subprocess.run(
            [BIN / "offmaps", "users", "add", READER, "--scopes", "cache:read", "--data", data,
             "--password-stdin"],
            input=f"{READER_PASSWORD}\n", text=True, capture_output=True, check=True,
        )  # fmt: skip


def tile_key(tile: Tile) -> str:
    """The key of a tile in MapProxy's s3 cache (tms layout, rows from the bottom)."""
    return f"{MAPPROXY_PREFIX}/{tile.z}/{tile.x}/{2**tile.z - 1 - tile.y}.png"


def fill_mapproxy(s3: Any, folder: Path, tiles: list[Tile]) -> None:
    """The TMS folder copied into the bucket as MapProxy's s3 cache lays it out (once)."""
    stored = 0
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=f"{MAPPROXY_PREFIX}/"
    ):
        stored += page.get("KeyCount", 0)
    if stored != len(tiles):
        print(f"copying {len(tiles):,} tiles into MapProxy's s3 cache (once) ...", flush=True)
        began = time.perf_counter()

        def put(tile: Tile) -> None:
            row = 2**tile.z - 1 - tile.y
            data = (folder / str(tile.z) / str(tile.x) / f"{row}.png").read_bytes()
            s3.put_object(Bucket=BUCKET, Key=tile_key(tile), Body=data, ContentType="image/png")

        with ThreadPoolExecutor(8) as pool:
            for _ in pool.map(put, tiles):
                pass
        print(f"  copied in {time.perf_counter() - began:.0f} s")
    print(f"MapProxy s3 cache: {len(tiles):,} objects below {MAPPROXY_PREFIX}/")


def mapproxy_app(endpoint: str, name: str) -> Path:
    """MapProxy's configuration (s3 cache at ``endpoint``) and WSGI module; their folder."""
    where = WORK / name
    where.mkdir(parents=True, exist_ok=True)
    config = where / "mapproxy.yaml"
    config.write_text(MAPPROXY_S3_YAML.format(endpoint=endpoint))
    (where / "mapproxy_app.py").write_text(MAPPROXY_APP.format(config=str(config)))
    return where


# --- counting what a server asks of S3 -------------------------------------------------------

_REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/1\.[01]\r\n")


@dataclass
class Counts:
    """Requests (by method) and TCP connections a counting proxy passed on."""

    connections: int = 0
    methods: Counter[str] = field(default_factory=Counter)

    def reset(self) -> None:
        self.connections = 0
        self.methods.clear()


class CountingProxy:
    """A TCP proxy on loopback in front of S3 that counts connections and request lines.

    It passes bytes on unchanged, so SigV4 signatures (which name the proxy's host) still hold.
    Only the client's side is read for request lines: the servers under count send GETs and
    HEADs, which carry no body in which a request line could hide.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self.port = free_port()
        self.counts = Counts()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self._loop
        )
        self._server = started.result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counts.connections += 1
        up_reader, up_writer = await asyncio.open_connection(self._host, self._port)

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, count: bool
        ) -> None:
            tail = b""
            try:
                while chunk := await source.read(65536):
                    if count:
                        text = tail + chunk
                        for found in _REQUEST_LINE.finditer(text):
                            self.counts.methods[found.group(1).decode()] += 1
                        # a request line split between reads is seen once in the next text
                        cut = text.rfind(b"\r\n")
                        tail = text[cut:] if cut >= 0 else text
                    sink.write(chunk)
                    await sink.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    sink.close()

        await asyncio.gather(
            pipe(reader, up_writer, count=True), pipe(up_reader, writer, count=False)
        )


def count_s3_requests(
    endpoint: str, data: Path, order: list[Tile], tiles: int, *, log: Path
) -> dict[str, str]:
    """Run each server once more against a counting proxy, ask it ``tiles`` tiles one by one
    (after one warm-up tile) and return what it asked of S3 per tile."""
    sample = order[1 : tiles + 1]
    found: dict[str, str] = {}
    with CountingProxy(endpoint) as proxy:
        env = s3_env(proxy.endpoint)
        port = free_port()
        setups: dict[str, tuple[list[str | Path], str, Any]] = {
            f"{OFFMAPS} GET /tiles": (
                [BIN / OFFMAPS, "serve", "--data", data, "--port", str(port), "--workers", "2"],
                f"http://127.0.0.1:{port}",
                offmaps_path,
            ),
            MP_SYNC: (
                gunicorn(mapproxy_app(proxy.endpoint, "mapproxy-counted"), port),
                f"http://127.0.0.1:{port}",
                mapproxy_path,
            ),
        }
        for name, (command, base, path) in setups.items():
            with serving(command, base + path(order[0]), log=log, env=env), httpx.Client() as http:
                http.get(base + path(order[0]))
                time.sleep(0.5)
                proxy.counts.reset()
                for tile in sample:
                    if http.get(base + path(tile)).status_code != 200:
                        raise RuntimeError(f"{name}: no tile {tile} through the counting proxy")
                time.sleep(0.5)
                counted = proxy.counts
                per = ", ".join(
                    f"{n / len(sample):.2f} {method}"
                    for method, n in sorted(counted.methods.items())
                )
                found[name] = (
                    f"{per or 'no request'}; {counted.connections / len(sample):.2f} new "
                    "TCP connections"
                )
                print(f"S3 requests per tile, {name}: {found[name]} ({len(sample)} tiles)")
    return found


# --- checks and runs -------------------------------------------------------------------------


def expected_bytes(folder: Path, tile: Tile) -> bytes:
    row = 2**tile.z - 1 - tile.y
    return (folder / str(tile.z) / str(tile.x) / f"{row}.png").read_bytes()


def check_same_bytes(
    folder: Path, sample: list[Tile], urls: dict[str, Any], *, follow: bool = False
) -> None:
    """Every way of getting a tile returns the folder's bytes for every tile of the sample.

    ``urls`` maps a name to a function of a tile giving the full URL to GET.
    """
    with httpx.Client(timeout=10.0, follow_redirects=follow) as client:
        for tile in sample:
            expected = expected_bytes(folder, tile)
            for name, url in urls.items():
                got = client.get(url(tile))
                if got.status_code != 200:
                    raise RuntimeError(f"{tile}: {name} answered {got.status_code}")
                if got.content != expected:
                    raise RuntimeError(f"{tile}: {name} returned other bytes than the folder")
    print(f"byte-identical to the folder from {', '.join(urls)}: {len(sample)} of {len(sample)}")


def alternate(
    bases: dict[str, str], paths: dict[str, list[str]], runs: int, seconds: int
) -> dict[str, list[WrkResult]]:
    """One warm-up run each, then ``runs`` rounds of one run each, in turn."""
    for name, base in bases.items():
        warm = run_wrk(base, paths[name], seconds=min(seconds, 5))
        print(f"{name} warm-up: {warm.requests_per_s:,.0f} req/s", flush=True)
    print("| setup | req/s | p50 ms | p99 ms | non-2xx | socket errors |")
    print("|---|---:|---:|---:|---:|---:|")
    results: dict[str, list[WrkResult]] = {name: [] for name in bases}
    for run in range(runs):
        for name, base in bases.items():
            result = run_wrk(base, paths[name], seconds=seconds)
            results[name].append(result)
            print(result.row(f"{name} run {run + 1}"), flush=True)
    print("| setup | req/s of each run | median | p50 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|")
    for name, measured in results.items():
        print(summary_row(name, measured))
    return results


def median_rate(results: list[WrkResult]) -> float:
    return statistics.median(r.requests_per_s for r in results)


def presigned_urls(base: str, tiles: int) -> tuple[dict[Tile, str], float, int]:
    """Every tile's presigned GET URL from ``POST /api/caches/{name}/urls`` (pages of 10,000
    over the area), signed in as a ``cache:read`` user. Returns the URLs, the seconds the
    pages took (the token excluded) and the pages."""
    west, south, east, north = BBOX
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    body: dict[str, Any] = {
        "area": {"geometry": {"type": "Polygon", "coordinates": [ring]}},
        "min_zoom": ZOOMS[0],
        "max_zoom": ZOOMS[1],
        "limit": 10_000,
        "expires_s": 3600,
    }
    found: dict[Tile, str] = {}
    pages = 0
    with httpx.Client(base_url=base, timeout=120.0) as client:
        token = client.post(
            "/oauth2/token",
            data={"grant_type": "password", "username": READER, "password": READER_PASSWORD},
        )
        token.raise_for_status()
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        began = time.perf_counter()
        after = None
        while True:
            page = client.post(f"/api/caches/{CACHE}/urls", json={**body, "after": after},
                               headers=headers)  # fmt: skip
            page.raise_for_status()
            pages += 1
            for item in page.json()["urls"]:
                found[Tile(item["x"], item["y"], item["z"])] = item["url"]
            after = page.json()["next"]
            if after is None:
                break
        seconds = time.perf_counter() - began
    if len(found) != tiles:
        raise RuntimeError(f"got presigned URLs of {len(found)} tiles, not {tiles}")
    return found, seconds, pages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 each: a smoke run")
    parser.add_argument("--runs", type=int, default=3, help="measured runs of each setup")
    parser.add_argument("--seconds", type=int, default=15, help="length of one wrk run")
    parser.add_argument("--seaweedfs-port", type=int, default=8633, help="the bench's S3 port")
    parser.add_argument("--count", type=int, default=200, help="tiles asked through the proxy")
    parser.add_argument(
        "--parts", default="count,serve,presigned", help="some of count,serve,presigned"
    )
    args = parser.parse_args()
    runs, seconds = (1, 3) if args.quick else (args.runs, args.seconds)
    count = min(args.count, 50) if args.quick else args.count
    parts = set(args.parts.split(","))
    require_wrk()
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"Machine: {machine()}")

    folder, served, tiles = prepare_archive(args.data)
    archive = served / "tiles" / "helsinki.mbtiles"
    order = tiles[:]
    random.Random(SEED).shuffle(order)
    sample = random.Random(SEED + 1).sample(tiles, min(CHECKED, len(tiles)))
    data = WORK / "offmaps-data"
    data.mkdir(parents=True, exist_ok=True)

    with seaweedfs(args.seaweedfs_port) as endpoint:
        print(f"SeaweedFS at {endpoint} (weed {BIN / 'weed'}), bucket {BUCKET}")
        s3 = s3_client(endpoint)
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=BUCKET)
        env = s3_env(endpoint)
        fill_offmaps(data, archive, len(tiles), env)
        fill_mapproxy(s3, folder, tiles)
        print(
            f"{len(tiles):,} tiles (z{min(t.z for t in tiles)}-{max(t.z for t in tiles)}), "
            f"wrk -t2 -c8 -d{seconds}s, {runs} measured run(s) each, alternating"
        )
        if "count" in parts:
            count_s3_requests(endpoint, data, order, count, log=WORK / "counted.log")

        ports = {name: free_port() for name in (OFFMAPS, MP_SYNC, MP_GTHREAD)}
        app_dir = mapproxy_app(endpoint, "mapproxy")
        commands: dict[str, list[str | Path]] = {
            OFFMAPS: [
                *(BIN / "offmaps", "serve", "--data", data, "--port", str(ports[OFFMAPS])),
                *("--workers", "2"),
            ],
            MP_SYNC: gunicorn(app_dir, ports[MP_SYNC]),
            MP_GTHREAD: gunicorn(app_dir, ports[MP_GTHREAD], threads=4),
        }
        bases = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        path_of = {OFFMAPS: offmaps_path, MP_SYNC: mapproxy_path, MP_GTHREAD: mapproxy_path}
        with contextlib.ExitStack() as servers:
            for name in commands if "serve" in parts else (OFFMAPS,):
                ready = bases[name] + path_of[name](order[0])
                log = WORK / f"{name.replace(' ', '-')}.log"
                servers.enter_context(serving(commands[name], ready, log=log, env=env))
            if "serve" in parts:
                print("\n## offmaps vs MapProxy's s3 cache, both reading SeaweedFS")
                check_same_bytes(
                    folder,
                    sample,
                    {name: (lambda t, n=name: bases[n] + path_of[n](t)) for name in commands},
                )
                results = alternate(
                    bases,
                    {name: [path_of[name](t) for t in order] for name in commands},
                    runs,
                    seconds,
                )
                median = {name: median_rate(rs) for name, rs in results.items()}
                faster = max((MP_SYNC, MP_GTHREAD), key=median.__getitem__)
                errors = sum(r.non_2xx + r.socket_errors for rs in results.values() for r in rs)
                print(f"errors in all measured runs: {errors}")
                print(
                    f"offmaps / MapProxy s3 cache ({faster}) = "
                    f"{median[OFFMAPS] / median[faster]:.2f}x (target >= 3x)"
                )
            if "presigned" in parts:
                print("\n## presigned direct fetches vs proxying through offmaps")
                presigned(bases[OFFMAPS], endpoint, folder, order, sample, runs, seconds)
    return 0


def presigned(
    base: str,
    endpoint: str,
    folder: Path,
    order: list[Tile],
    sample: list[Tile],
    runs: int,
    seconds: int,
) -> None:
    """Part 5: tiles/s fetched with presigned URLs straight from S3 vs through offmaps."""
    urls, listed_s, pages = presigned_urls(base, len(order))
    print(
        f"presigned URLs of {len(urls):,} tiles in {pages} pages: {listed_s:.2f} s "
        f"({len(urls) / listed_s:,.0f} URLs/s)"
    )
    origin = urlsplit(endpoint)
    for url in urls.values():
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) != (origin.scheme, origin.netloc):
            raise RuntimeError(f"a presigned URL not at {endpoint}: {url}")
    check_same_bytes(
        folder,
        sample,
        {
            DIRECT: lambda t: urls[t],
            PROXIED: lambda t: base + offmaps_path(t),
            REDIRECT: lambda t: base + offmaps_path(t) + "?redirect=presigned",
        },
        follow=True,
    )

    def direct_path(tile: Tile) -> str:
        parts = urlsplit(urls[tile])
        return f"{parts.path}?{parts.query}"

    results = alternate(
        {DIRECT: endpoint, PROXIED: base, REDIRECT: base},
        {
            DIRECT: [direct_path(t) for t in order],
            PROXIED: [offmaps_path(t) for t in order],
            REDIRECT: [offmaps_path(t) + "?redirect=presigned" for t in order],
        },
        runs,
        seconds,
    )
    rate = {name: median_rate(rs) for name, rs in results.items()}
    per_url = listed_s / len(urls)
    amortised = 1 / (per_url + 1 / rate[DIRECT])
    one_by_one = 1 / (1 / rate[REDIRECT] + 1 / rate[DIRECT])
    print(f"direct / proxied = {rate[DIRECT] / rate[PROXIED]:.2f}x tiles/s (URLs not counted)")
    print(
        f"with the URL listing amortised over every tile ({per_url * 1e6:.0f} us a URL, one "
        f"client): {amortised:,.0f} tiles/s, {amortised / rate[PROXIED]:.2f}x proxied"
    )
    print(
        f"a redirect then a direct fetch per tile (1/(1/{rate[REDIRECT]:,.0f} + "
        f"1/{rate[DIRECT]:,.0f})): {one_by_one:,.0f} tiles/s, "
        f"{one_by_one / rate[PROXIED]:.2f}x proxied"
    )


if __name__ == "__main__":
    sys.exit(main())
