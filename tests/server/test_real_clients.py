"""Real clients against a listening server: GDAL's OAPIF driver, and the CLI over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from offmaps.cli import cli
from tests.serverkit import PASSWORD, LiveServer

_GDAL_READ = """
import json, sys
import pyogrio, pyogrio.raw, shapely
url = sys.argv[1]
layers = [str(row[0]) for row in pyogrio.list_layers(url)]
meta, _, geometries, columns = pyogrio.raw.read(url, layer="city.sites")
names = dict(zip(meta["fields"], columns))["name"]
kinds = sorted({shapely.from_wkb(g).geom_type for g in geometries})
print(json.dumps({"layers": layers, "names": [str(n) for n in names], "kinds": kinds}))
"""


def test_gdal_lists_and_reads_the_collections(live_server: LiveServer) -> None:
    # GDAL runs in its own process: pyogrio holds the GIL while GDAL waits on HTTP, which
    # would starve the server thread if both ran here.
    done = subprocess.run(
        [sys.executable, "-c", _GDAL_READ, f"OAPIF:{live_server.url}/"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    read = json.loads(done.stdout)
    assert {"city.sites", "city.streets", "city.inspections"} <= set(read["layers"])
    assert sorted(read["names"]) == sorted(f"site {i}" for i in range(25))
    assert read["kinds"] == ["Point"]


def test_login_then_list_maps_as_json(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFMAPS_CONFIG_DIR", str(tmp_path / "config"))
    runner = CliRunner()
    anonymous = runner.invoke(cli, ["maps", "list", "--server", live_server.url, "--json"])
    assert anonymous.exit_code == 0, anonymous.output
    assert [m["title"] for m in json.loads(anonymous.output)] == ["Public"]
    login = runner.invoke(
        cli, ["login", live_server.url, "-u", "editor", "--password-stdin"], input=PASSWORD + "\n"
    )
    assert login.exit_code == 0, login.output
    assert (tmp_path / "config" / "credentials.json").stat().st_mode & 0o777 == 0o600
    listed = runner.invoke(cli, ["maps", "list", "--server", live_server.url, "--json"])
    maps = json.loads(listed.output)
    assert {m["title"] for m in maps} == {"Public", "Private"}
    assert {"id", "title", "owner", "snippet", "tags", "public", "modified"} <= set(maps[0])


def test_a_wrong_password_is_one_line_and_exit_1(live_server: LiveServer, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "offmaps.cli",
            "login",
            live_server.url,
            "-u",
            "editor",
            "--password-stdin",
        ],
        input="wrong password\n",
        capture_output=True,
        text=True,
        env={"OFFMAPS_CONFIG_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("InvalidCredentialsError:")
