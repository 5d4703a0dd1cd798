"""The sample map served over HTTP, and one headless Chromium (Debian's) per test module."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from offmaps.errors import OffmapsError
from offmaps.sample.webmap import SAMPLE_PASSWORD, build_sample
from offmaps.state import SQLiteUserStore
from tests.data import data_path

CHROMIUM = os.environ.get("OFFMAPS_CHROMIUM", "/usr/bin/chromium")
"""The browser the tests drive: Debian's chromium (scripts/clients.sh installs it)."""
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",  # WebGL through SwiftShader, on machines without a GPU too
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # no name but loopback resolves: nothing the pages ask for can leave the machine
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


@dataclass(frozen=True)
class SampleSite:
    """The sample map served by a live server."""

    url: str
    map_id: str
    user: str = "editor"
    password: str = SAMPLE_PASSWORD
    data_dir: Path | None = None
    """The folder it serves (for tests that add users to it: the store is read at each
    sign-in)."""

    def add_user(self, name: str, scopes: tuple[str, ...]) -> None:
        """Add user ``name`` (the sample's password) with ``scopes``, unless it is there."""
        assert self.data_dir is not None, "a site made by the sample_site fixture"
        with SQLiteUserStore(self.data_dir / "users.sqlite") as users:
            try:
                users.get_user(name)
            except OffmapsError:
                users.add_user(name, self.password, scopes=scopes)


@pytest.fixture(scope="module")
def sample_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SampleSite]:
    """``offmaps serve`` in a process of its own, serving the sample map (built from the real
    Helsinki extract) on a free loopback port."""
    data_dir = tmp_path_factory.mktemp("webui") / "data"
    map_id = build_sample(data_dir, data_path("osm/Helsinki.osm.pbf"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "offmaps.cli", "serve", "--data", str(data_dir)]
    log = (data_dir.parent / "serve.log").open("wb")
    server = subprocess.Popen([*command, "--port", str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/conformance").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.fail(f"offmaps serve did not start: see {log.name}")
            time.sleep(0.1)
        yield SampleSite(url, map_id, data_dir=data_dir)
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests keep their screenshots: ``$OFFMAPS_WEBUI_SCREENSHOTS`` (the
    pictures of docs/webui.md are made so), else a temporary folder."""
    wanted = os.environ.get("OFFMAPS_WEBUI_SCREENSHOTS")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        return Path(wanted)
    return tmp_path_factory.mktemp("screenshots")
