"""``offmaps cache`` against a real loopback upstream: create, seed, rerun, stats, clean."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from offmaps.cli import main
from offmaps.server.app import create_app
from offmaps.settings import ServerSettings
from tests.serverkit import PASSWORD, LiveServer
from tests.upstream import PNG, TileServer


@pytest.fixture
def upstream() -> Iterator[TileServer]:
    server = TileServer()
    yield server
    server.close()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_seed_rerun_stats_and_clean(
    tmp_path: Path, upstream: TileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path)
    code, out, err = run(capsys, "cache", "create", "osm", "--source", upstream.url, "--data", data)
    assert (code, err) == (0, "")
    assert "created" in out
    code, out, _ = run(capsys, "cache", "list", "--data", data, "--json")
    assert [c["name"] for c in json.loads(out)] == ["osm"]
    world = ("--bbox", "-180,-85,180,85", "--zooms", "0-3")
    code, out, _ = run(
        capsys, "cache", "seed", "osm", *world, "--dry-run", "--json", "--data", data
    )
    assert json.loads(out)["to_fetch"] == 85
    assert upstream.asked == {}
    code, out, err = run(capsys, "cache", "seed", "osm", *world, "--json", "--data", data)
    assert code == 0, err
    assert json.loads(out)["fetched"] == 85
    assert sum(upstream.asked.values()) == 85
    code, out, _ = run(capsys, "cache", "seed", "osm", *world, "--json", "--data", data)
    assert json.loads(out)["skipped"] == 85
    assert sum(upstream.asked.values()) == 85  # nothing fetched twice
    code, out, _ = run(capsys, "cache", "stats", "osm", "--json", "--data", data)
    stats = json.loads(out)
    assert stats["tiles"] == 85
    assert stats["blobs"] == 85 - 5 + 1  # levels 0 and 1 are one 'sea' blob
    assert stats["dedup_saving"] == 4 * len(PNG + b"sea")
    assert [level["z"] for level in stats["levels"]] == [0, 1, 2, 3]
    code, out, _ = run(capsys, "cache", "verify", "osm", "--data", data)
    assert (code, out.split()[0]) == (0, "81")
    blobs = Path(data) / "tile-caches" / "blobs.sqlite"
    with closing(sqlite3.connect(blobs)) as conn, conn:  # one blob rots on disk
        conn.execute("UPDATE blobs SET data = x'00' WHERE rowid = (SELECT max(rowid) FROM blobs)")
    code, out, _ = run(capsys, "cache", "verify", "osm", "--data", data)
    assert (code, out.split()[:3]) == (1, ["81", "blobs", "checked,"])
    assert "1 damaged" in out
    code, out, _ = run(capsys, "cache", "seed", "osm", *world, "--json", "--data", data)
    assert json.loads(out)["fetched"] == 1  # the damaged tile, fetched again
    code, out, _ = run(capsys, "cache", "truncate", "osm", "--zooms", "3", "--data", data)
    assert out.strip() == "64 tiles removed"
    code, out, _ = run(capsys, "cache", "cleanup", "osm", "--max-bytes", "0", "--data", data)
    assert out.strip() == "21 tiles removed"
    code, out, _ = run(capsys, "cache", "gc", "--data", data)
    assert out.strip() == "81 blobs examined, 81 blobs deleted"
    code, out, _ = run(capsys, "cache", "delete", "osm", "--data", data)
    assert code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("cache", "seed", "nope", "--bbox", "0,0,1,1", "--zooms", "0-2"), "no tile cache 'nope'"),
        (("cache", "create", "x"), "give exactly one source"),
        (("cache", "create", "x", "--source", "ftp://a/{z}/{x}/{y}"), "http or https"),
        (("cache", "create", "../x", "--archive", "a.mbtiles"), "cache name"),
        (("cache", "create", "x", "--archive", "/no/such.mbtiles"), "cannot be read"),
        (("cache", "cleanup", "x"), "--older-than, --max-bytes"),
        (("cache", "cleanup", "x", "--older-than", "yesterday"), "an age such as 30d"),
        (("cache", "cleanup", "x", "--max-bytes", "lots"), "a size is a number"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    code, out, err = run(capsys, *args, "--data", str(tmp_path))
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert message in err


def test_a_missing_data_folder_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "cache", "list", "--data", str(tmp_path / "nope"))
    assert code == 1
    assert "no such data folder" in err


def test_seed_takes_an_area_in_another_crs(
    tmp_path: Path, upstream: TileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path)
    run(capsys, "cache", "create", "osm", "--source", upstream.url, "--data", data)
    # the Web Mercator square's south-west quarter: one tile at z1, four at z2
    quarter = ("--bbox", "-20037508,-20037508,-1,-1", "--aoi-crs", "EPSG:3857")
    args = ("cache", "seed", "osm", *quarter, "--zooms", "1-2", "--dry-run", "--json")
    code, out, err = run(capsys, *args, "--data", data)
    assert code == 0, err
    assert [(level["z"], level["tiles"]) for level in json.loads(out)["levels"]] == [(1, 1), (2, 4)]


def test_urls_prints_presigned_urls_the_server_serves(
    tmp_path: Path, upstream: TileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path)
    run(capsys, "cache", "create", "osm", "--source", upstream.url, "--data", data)
    world = ("--bbox", "-180,-85,180,85", "--zooms", "0-1")
    run(capsys, "cache", "seed", "osm", *world, "--data", data)
    code, _, err = run(capsys, "cache", "urls", "osm", *world, "--data", data)
    assert code == 1
    assert "--public-url" in err
    args = ("--public-url", "http://testserver", "--json", "--data", data)
    code, out, err = run(capsys, "cache", "urls", "osm", *world, *args)
    assert code == 0, err
    found = json.loads(out)
    assert [(u["z"], u["x"], u["y"]) for u in found] == [(0, 0, 0)] + [
        (1, x, y) for y in range(2) for x in range(2)
    ]
    with TestClient(create_app(ServerSettings(data_dir=tmp_path))) as client:
        for url in found:
            fetched = client.get(url["url"])
            assert fetched.status_code == 200
            assert fetched.content == PNG + b"sea"
            assert hashlib.sha256(fetched.content).hexdigest() == url["sha256"]


def test_the_same_commands_work_against_a_server(
    live_server: LiveServer,
    upstream: TileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OFFMAPS_CONFIG_DIR", str(tmp_path / "config"))
    users = live_server.server.client.app.state.services.users  # type: ignore[attr-defined]
    users.add_user("cacher", PASSWORD, scopes=("cache:write",))
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    code, _, err = run(capsys, "login", live_server.url, "-u", "cacher", "--password-stdin")
    assert code == 0, err
    at = ("--server", live_server.url)
    world = ("--bbox", "-180,-85,180,85", "--zooms", "0-3")
    code, out, err = run(capsys, "cache", "create", "osm", "--source", upstream.url, *at)
    assert code == 0, err
    code, out, _ = run(capsys, "cache", "list", *at, "--json")
    assert [c["name"] for c in json.loads(out)] == ["osm"]
    code, out, _ = run(capsys, "cache", "seed", "osm", *world, "--dry-run", "--json", *at)
    assert json.loads(out)["to_fetch"] == 85
    code, out, err = run(capsys, "cache", "seed", "osm", *world, "--json", *at)
    assert code == 0, err
    assert json.loads(out)["fetched"] == 85
    code, out, _ = run(capsys, "cache", "seed", "osm", *world, "--json", *at)
    assert json.loads(out)["skipped"] == 85
    assert sum(upstream.asked.values()) == 85
    code, out, _ = run(capsys, "cache", "stats", "osm", "--json", *at)
    assert json.loads(out)["blobs"] == 81
    code, out, _ = run(capsys, "cache", "urls", "osm", *world, "--json", *at)
    found = json.loads(out)
    assert len(found) == 85
    assert httpx.get(found[0]["url"]).content == PNG + b"sea"
    code, out, _ = run(capsys, "cache", "verify", "osm", *at)
    assert (code, out.split()[0]) == (0, "81")
    code, out, _ = run(capsys, "cache", "truncate", "osm", "--zooms", "3", *at)
    assert out.strip() == "64 tiles removed"
    code, out, _ = run(capsys, "cache", "cleanup", "osm", "--max-bytes", "0", *at)
    assert out.strip() == "21 tiles removed"
    code, out, _ = run(capsys, "cache", "gc", *at)
    assert out.strip() == "81 blobs examined, 81 blobs deleted"
    code, out, _ = run(capsys, "cache", "delete", "osm", *at)
    assert out.strip() == "deleted tile cache 'osm'"
    code, _, err = run(capsys, "cache", "stats", "osm", *at)
    assert code == 1
    assert "no tile cache 'osm'" in err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OFFMAPS_SEED_PROCESSES", "0"),
        ("OFFMAPS_SEED_PROCESSES", "many"),
        ("OFFMAPS_AUTH__TOKEN_LIFETIME_S", "x"),
    ],
)
def test_a_bad_setting_in_the_environment_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    variable: str, value: str,
) -> None:  # fmt: skip
    monkeypatch.setenv(variable, value)
    code, out, err = run(capsys, "cache", "list", "--data", str(tmp_path))
    assert (code, out) == (1, "")
    assert err.startswith(f"SettingsError: {variable}: ")
    assert len(err.strip().splitlines()) == 1
