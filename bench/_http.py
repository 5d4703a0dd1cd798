"""Shared helpers of the HTTP serving benchmarks: free ports, servers in child processes, wrk."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from offmaps.schemas import WebMap
from offmaps.state.webmaps import FolderWebMapStore

__all__ = ["WrkResult", "free_port", "publish_map", "require_wrk", "run_wrk", "serving"]

# wrk runs one Lua state per thread; each thread walks the same fixed list of paths from its own
# starting point, and the main thread prints the numbers we need on one line in done()
_WRK_SCRIPT = """\
local paths = {}
local i = 0
local threads = 0

function setup(thread)
  thread:set("thread_index", threads)
  threads = threads + 1
end

function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  i = (thread_index or 0) * math.floor(#paths / 2)
end

function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK-RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d status=%d " ..
    "connect=%d read=%d write=%d timeout=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end
"""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(
    command: Sequence[str | Path],
    ready_url: str,
    *,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server in its own process group until the block ends (also on failure).

    Waits until ``ready_url`` answers 200; the server's output goes to ``log``. On exit the whole
    process group (the server and its workers, and nothing else) gets SIGTERM, then SIGKILL.
    """
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(part) for part in command],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    try:
        _wait_ready(process, ready_url, log, timeout)
        yield process
    finally:
        _stop(process)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready at {url} after {timeout:.0f} s:\n{_tail(log)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # workers may outlive a parent that exited at once: the group gets SIGKILL anyway
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @property
    def requests_per_s(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds

    def row(self, label: str) -> str:
        """One Markdown table row: label, req/s, p50, p99, non-2xx, socket errors."""
        return (
            f"| {label} | {self.requests_per_s:,.0f} | {self.p50_ms:.2f} | {self.p99_ms:.2f} "
            f"| {self.non_2xx} | {self.socket_errors} |"
        )


def require_wrk() -> str:
    """The path of wrk, or a clear error saying how to get it."""
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk not found: run `make bench-tools` (apt-get install -y wrk)")
    return found


def run_wrk(
    base_url: str,
    paths: Sequence[str],
    *,
    threads: int = 2,
    connections: int = 8,
    seconds: int = 15,
) -> WrkResult:
    """Load ``base_url`` with wrk, cycling through ``paths`` (keep-alive connections)."""
    wrk = require_wrk()
    with tempfile.TemporaryDirectory(prefix="offmaps-wrk-") as tmp:
        script, listing = Path(tmp, "paths.lua"), Path(tmp, "paths.txt")
        script.write_text(_WRK_SCRIPT)
        listing.write_text("".join(f"{p}\n" for p in paths))
        done = subprocess.run(
            [
                wrk,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                base_url,
                "--",
                str(listing),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    found = re.search(r"^WRK-RESULT (.*)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    values = {k: int(v) for k, v in (pair.split("=") for pair in found.group(1).split())}
    return WrkResult(
        requests=values["requests"],
        seconds=values["duration_us"] / 1e6,
        p50_ms=values["p50_us"] / 1000,
        p99_ms=values["p99_us"] / 1000,
        non_2xx=values["status"],
        socket_errors=values["connect"] + values["read"] + values["write"] + values["timeout"],
    )


def publish_map(
    data_dir: Path,
    *,
    basemap: Sequence[dict[str, object]] = (),
    layers: Sequence[dict[str, object]] = (),
) -> None:
    """Share layers in a public web map of an offmaps data folder: the server serves feature
    collections and tile layers through the web maps that show them."""
    document = {
        "format_version": "1.0",
        "item": {"title": "offmaps bench"},
        "basemap": {"title": "bench", "layers": list(basemap)},
        "operational_layers": list(layers),
        "sharing": {"public": True},
    }
    FolderWebMapStore(data_dir / "webmaps").create(WebMap.model_validate(document), owner="bench")
