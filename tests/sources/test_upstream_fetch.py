"""UpstreamFetcher over real HTTP on loopback, through both of its clients: its own urllib3
pool (the default, what servers and seeds use) and an httpx client passed in. Every answer an
upstream may give maps to the same result and the same error on both."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from offmaps import __version__
from offmaps.errors import TileNotFoundError, UpstreamError
from offmaps.sources import UpstreamFetcher
from offmaps.types import Tile, TileFormat

PNG = b"\x89PNG\r\n\x1a\n" + b"tile"
MVT = b"\x1a\x05layer"  # starts as every non-empty Mapbox vector tile does
LIMIT = 4096
TILE = Tile(1, 2, 3)

Answer = Callable[[BaseHTTPRequestHandler], None]


def send(status: int, body: bytes = b"", **headers: str) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def chunked(parts: list[bytes]) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for part in parts:
            handler.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")

    return answer


def hang(handler: BaseHTTPRequestHandler) -> None:
    time.sleep(3)


def cut_short(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.write(PNG)
    handler.close_connection = True


class Server:
    """A loopback HTTP server answering each path with the answer set for it."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.user_agents: list[str] = []
        self.encodings: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner.user_agents.append(self.headers.get("User-Agent", ""))
                owner.encodings.append(self.headers.get("Accept-Encoding", ""))
                owner.answers.get(self.path, send(404))(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    found = Server()
    yield found
    found.close()


@pytest.fixture(params=["urllib3", "httpx"])
def fetcher_of(request: pytest.FixtureRequest) -> Iterator[Callable[..., UpstreamFetcher]]:
    made: list[UpstreamFetcher] = []
    client = httpx.Client(timeout=0.5) if request.param == "httpx" else None

    def make(template: str, tile_format: TileFormat = TileFormat.PNG) -> UpstreamFetcher:
        fetcher = UpstreamFetcher(
            template, tile_format, client=client, timeout_s=0.5, max_bytes=LIMIT
        )
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        fetcher.close()
    if client is not None:
        client.close()


def fetch(server: Server, make: Callable[..., UpstreamFetcher], answer: Answer) -> bytes:
    server.answers["/3/1/2.png"] = answer
    return make(server.base + "/{z}/{x}/{y}.png").fetch(TILE)


def test_a_tile_is_fetched_with_offmaps_user_agent(
    server: Server, fetcher_of: Callable[..., UpstreamFetcher]
) -> None:
    assert fetch(server, fetcher_of, send(200, PNG)) == PNG
    assert server.user_agents == [f"offmaps/{__version__}"]
    assert {"gzip", "deflate"} <= {part.strip() for part in server.encodings[0].split(",")}


def test_connections_are_kept_alive_between_tiles(
    server: Server, fetcher_of: Callable[..., UpstreamFetcher]
) -> None:
    ports: set[int] = set()

    def answer(handler: BaseHTTPRequestHandler) -> None:
        ports.add(handler.client_address[1])
        send(200, PNG)(handler)

    server.answers["/3/1/2.png"] = answer
    fetcher = fetcher_of(server.base + "/{z}/{x}/{y}.png")
    for _ in range(5):
        assert fetcher.fetch(TILE) == PNG
    assert len(ports) == 1


@pytest.mark.parametrize("status", [204, 404, 410])
def test_no_such_tile_is_tile_not_found(
    server: Server, fetcher_of: Callable[..., UpstreamFetcher], status: int
) -> None:
    with pytest.raises(TileNotFoundError):
        fetch(server, fetcher_of, send(status))


FAILURES: dict[str, tuple[Answer, str]] = {
    "server error": (send(500, b"boom"), "HTTP 500"),
    "unavailable": (send(503), "HTTP 503"),
    "forbidden": (send(403), "HTTP 403"),
    "declared oversize": (send(200, PNG + bytes(LIMIT)), f"over {LIMIT} bytes"),
    "streamed oversize": (chunked([PNG + bytes(1000)] * 5), f"over {LIMIT} bytes"),
    "jpeg for png": (send(200, b"\xff\xd8\xff\xe0" + bytes(20)), "jpg content, not png"),
    "html page": (send(200, b"<html>rate limited</html>"), "content"),
    "empty body": (send(200), "empty body"),
    "timeout": (hang, "timed out"),
    "cut short": (cut_short, "request failed"),
    "redirect loop": (send(302, Location="/3/1/2.png"), "request failed"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failing_upstream_is_an_upstream_error(
    server: Server, fetcher_of: Callable[..., UpstreamFetcher], failure: str
) -> None:
    answer, message = FAILURES[failure]
    started = time.monotonic()
    with pytest.raises(UpstreamError, match=message) as caught:
        fetch(server, fetcher_of, answer)
    assert "tile 3/1/2 from 127.0.0.1" in str(caught.value)
    assert time.monotonic() - started < 2.5  # a hanging upstream gives up at its timeout


def test_a_closed_port_is_an_upstream_error(fetcher_of: Callable[..., UpstreamFetcher]) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(UpstreamError, match="request failed"):
        fetcher_of(f"http://127.0.0.1:{port}/{{z}}/{{x}}/{{y}}.png").fetch(TILE)


def test_redirects_are_followed_on_the_same_host_and_to_another(
    server: Server, fetcher_of: Callable[..., UpstreamFetcher]
) -> None:
    other = Server()
    try:
        other.answers["/elsewhere.png"] = send(200, PNG + b"2")
        server.answers["/moved.png"] = send(200, PNG + b"1")
        assert fetch(server, fetcher_of, send(301, Location="/moved.png")) == PNG + b"1"
        location = other.base + "/elsewhere.png"
        assert fetch(server, fetcher_of, send(302, Location=location)) == PNG + b"2"
    finally:
        other.close()


def test_transfer_encoding_is_undone_and_gzipped_vector_tiles_are_unpacked(
    server: Server, fetcher_of: Callable[..., UpstreamFetcher]
) -> None:
    assert fetch(server, fetcher_of, send(200, gzip.compress(PNG), Content_Encoding="gzip")) == PNG
    server.answers["/3/1/2.pbf"] = send(200, gzip.compress(MVT))
    vector = fetcher_of(server.base + "/{z}/{x}/{y}.pbf", TileFormat.MVT)
    assert vector.fetch(TILE) == MVT


@pytest.fixture
def proxied(server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The server as the environment's HTTP proxy (set before any client is made)."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.base)
    monkeypatch.setenv("http_proxy", server.base)
    return server


def test_the_environments_proxy_is_used(
    proxied: Server, fetcher_of: Callable[..., UpstreamFetcher]
) -> None:
    # a proxy gets the whole URL in the request line; tiles.invalid is never resolved
    proxied.answers["http://tiles.invalid/3/1/2.png"] = send(200, PNG)
    assert fetcher_of("http://tiles.invalid/{z}/{x}/{y}.png").fetch(TILE) == PNG
