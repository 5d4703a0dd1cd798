"""A deterministic upstream tile server on loopback for the seeding benchmark, in its own process.

Routes (rows from the top, as XYZ):

- ``/synthetic/{z}/{x}/{y}.png``: a made-up tile. Tiles that touch a "land" rectangle (roughly
  southern Finland, north of the Helsinki shore at 60.15°N) are one of 48 varied street-map-like
  PNGs (drawn once at start with Pillow, 3-25 KB) made unique per tile by a ``tEXt`` chunk
  naming the tile, so no two land tiles have the same bytes; every other tile is one and the
  same plain blue "sea" PNG, as real basemaps serve over water.
- ``/real/{z}/{x}/{y}.png``: the tile of a TMS folder (``--folder``, rows from the bottom), read
  from disk; 404 when the folder has none.
- ``/_stats``: JSON ``{"requests", "ok", "missing"}``: tile requests answered so far.

It is an asyncio server (uvloop) speaking just enough HTTP/1.1: keep-alive connections (httpx)
and one-request connections (``Connection: close``, urllib) alike. One process answers
~10,000 tiles per second on this machine, so it is not what a seeder waits for; ``--latency-ms``
delays every tile answer by the same fixed time, to model a distant upstream.

Run: ``python bench/_tile_upstream.py --port PORT [--folder DIR] [--latency-ms N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import random
import re
import struct
import zlib
from pathlib import Path
from typing import cast

import uvloop
from PIL import Image, ImageDraw

__all__ = ["LAND", "SEA_RGB", "is_sea", "main", "sea_png", "synthetic_tile"]

LAND = (19.0, 60.15, 32.0, 70.1)
"""West, south, east, north (degrees) of the land rectangle; tiles touching it are land."""
SEA_RGB = (170, 211, 223)
"""The sea's colour (OpenStreetMap's water)."""
BASES = 48
SEED = 20261207

_REQUEST = re.compile(rb"^GET (/[^ ]*) HTTP/1\.([01])\r\n", re.IGNORECASE)
_TILE = re.compile(r"^/(synthetic|real)/(\d+)/(\d+)/(\d+)\.png$")


def _tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    n = 2.0**z

    def lat(row: float) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * row / n))))

    return x / n * 360.0 - 180.0, lat(y + 1), (x + 1) / n * 360.0 - 180.0, lat(y)


def is_sea(z: int, x: int, y: int) -> bool:
    """Whether the synthetic upstream answers this tile with the one sea tile."""
    west, south, east, north = _tile_bounds(z, x, y)
    return east <= LAND[0] or west >= LAND[2] or north <= LAND[1] or south >= LAND[3]


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def sea_png() -> bytes:
    """The one sea tile: 256×256 of :data:`SEA_RGB`."""
    return _png(Image.new("RGB", (256, 256), SEA_RGB))


def _bases() -> list[bytes]:
    """Varied street-map-like tiles: blocks, parks, water, roads, a little noise."""
    rng = random.Random(SEED)
    found = []
    for _ in range(BASES):
        image = Image.new("RGB", (256, 256), (242, 239, 233))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(3, 30)):
            x, y = rng.randint(-40, 250), rng.randint(-40, 250)
            w, h = rng.randint(8, 90), rng.randint(8, 90)
            colour = rng.choice([(217, 208, 201), (205, 235, 176), SEA_RGB, (224, 223, 223)])
            draw.rectangle((x, y, x + w, y + h), fill=colour, outline=(196, 182, 171))
        for _ in range(rng.randint(2, 14)):
            points = [(rng.randint(-20, 276), rng.randint(-20, 276)) for _ in range(3)]
            width = rng.choice([2, 3, 5, 8])
            draw.line(points, fill=rng.choice([(255, 255, 255), (247, 250, 191)]), width=width)
        for _ in range(rng.randint(0, 400)):
            draw.point((rng.randrange(256), rng.randrange(256)), fill=(rng.randrange(256),) * 3)
        found.append(_png(image))
    return found


def _text_chunk(text: str) -> bytes:
    body = b"tEXt" + b"Comment\x00" + text.encode()
    return struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))


def synthetic_tile(bases: list[bytes], sea: bytes, z: int, x: int, y: int) -> bytes:
    """The synthetic upstream's bytes for a tile (deterministic)."""
    if is_sea(z, x, y):
        return sea
    base = bases[(x * 7919 + y * 104729 + z * 31) % len(bases)]
    # a valid PNG made unique per tile: a text chunk just before IEND (the last 12 bytes)
    return base[:-12] + _text_chunk(f"offmaps bench tile {z}/{x}/{y}") + base[-12:]


class _Upstream:
    def __init__(self, folder: Path | None, latency_s: float) -> None:
        self.folder = folder
        self.latency_s = latency_s
        self.bases = _bases()
        self.sea = sea_png()
        self.counts = {"requests": 0, "ok": 0, "missing": 0}

    def answer(self, path: str) -> tuple[int, bytes, str]:
        if path == "/_stats":
            return 200, json.dumps(self.counts).encode(), "application/json"
        found = _TILE.match(path)
        if found is None:
            return 404, b"not found", "text/plain"
        kind, z, x, y = found.group(1), *map(int, found.group(2, 3, 4))
        self.counts["requests"] += 1
        body: bytes | None = None
        if kind == "synthetic":
            if 0 <= x < 2**z and 0 <= y < 2**z:
                body = synthetic_tile(self.bases, self.sea, z, x, y)
        elif self.folder is not None:
            tile = self.folder / str(z) / str(x) / f"{2**z - 1 - y}.png"
            try:
                body = tile.read_bytes()
            except FileNotFoundError:
                body = None
        if body is None:
            self.counts["missing"] += 1
            return 404, b"no such tile", "text/plain"
        self.counts["ok"] += 1
        return 200, body, "image/png"


class _Connection(asyncio.Protocol):
    def __init__(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[tuple[str, bool] | None] = asyncio.Queue()
        self.writer: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # TCP (uvloop's own class)
        self.writer = asyncio.get_running_loop().create_task(self._write())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[: end + 4], self.buffer[end + 4 :]
            found = _REQUEST.match(head)
            if found is None:
                self.queue.put_nowait(("", False))
                self.queue.put_nowait(None)
                return
            lowered = head.lower()
            keep = (found.group(2) == b"1" and b"connection: close" not in lowered) or (
                b"connection: keep-alive" in lowered
            )
            self.queue.put_nowait((found.group(1).decode("latin-1"), keep))
            if not keep:
                self.queue.put_nowait(None)
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if self.writer is not None:
            self.writer.cancel()

    async def _write(self) -> None:
        transport = self.transport
        if transport is None:
            return
        while (item := await self.queue.get()) is not None:
            path, keep = item
            if not path:
                status, body, kind = 400, b"bad request", "text/plain"
            else:
                status, body, kind = self.upstream.answer(path)
                if self.upstream.latency_s and path != "/_stats":
                    await asyncio.sleep(self.upstream.latency_s)
            reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
            head = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
            )
            transport.write(head.encode() + body)
            if not keep:
                break
        transport.close()


async def _serve(port: int, upstream: _Upstream) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(upstream), "127.0.0.1", port, backlog=1024, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--folder", type=Path, help="a TMS folder served at /real/")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    upstream = _Upstream(args.folder, args.latency_ms / 1000)
    uvloop.run(_serve(args.port, upstream))


if __name__ == "__main__":
    main()
