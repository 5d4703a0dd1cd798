"""A deterministic XYZ tile server on loopback (a real HTTP upstream, for seeds that run in
other processes, where a mock transport cannot follow)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PNG = b"\x89PNG\r\n\x1a\n"


def tile_png(z: int, x: int, y: int) -> bytes:
    """The server's tile: level 0-1 tiles are all 'sea' (one content), the others distinct."""
    return PNG + (b"sea" if z <= 1 else f"{z}/{x}/{y}".encode())


class TileServer:
    """Serves :func:`tile_png` at ``/{z}/{x}/{y}.png`` and counts what it is asked.

    Args:
        status: the HTTP status of a tile (200 by default); other answers carry no tile.
    """

    def __init__(self, status: Callable[[int, int, int], int] = lambda z, x, y: 200) -> None:
        self.asked: Counter[str] = Counter()
        self.status = status
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    owner.asked[self.path] += 1
                z, x, y = (int(part) for part in self.path.removesuffix(".png").split("/")[1:])
                code = owner.status(z, x, y)
                body = tile_png(z, x, y) if code == 200 else b"no"
                self.send_response(code)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/{{z}}/{{x}}/{{y}}.png"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def requests(self) -> int:
        """Tile requests answered so far."""
        return sum(self.asked.values())

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
