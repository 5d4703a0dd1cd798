"""``offmaps areas``: create, list, show, refresh, delete and download preplanned map areas of a
listening server, and bad input as one-line errors (docs/cli.md, docs/preplanned.md)."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi import FastAPI

from offmaps.cli import main
from offmaps.client import downloads as downloads_sdk
from offmaps.client.portal import Portal
from offmaps.errors import DownloadError
from offmaps.features.model import Update
from offmaps.offline.package import verify_package
from offmaps.services import Services
from tests.client.test_offline import offline_map
from tests.serverkit import PASSWORD, LiveServer

BBOX = "24.895,60.05,24.995,60.15"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def login(
    user: str, url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    code, _, err = run(capsys, "login", url, "-u", user, "--password-stdin")
    assert code == 0, err


def one_line(err: str, name: str) -> str:
    """The error printed, checked to be one line naming the error class."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{name}: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def at(
    live_server: LiveServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> list[str]:
    """``--server URL --map ID`` of a map with a basemap, signed in as its owner."""
    monkeypatch.setenv("OFFMAPS_CONFIG_DIR", str(tmp_path / "config"))
    map_id = offline_map(live_server)
    login("editor", live_server.url, monkeypatch, capsys)
    return ["--server", live_server.url, "--map", map_id]


def create(capsys: pytest.CaptureFixture[str], at: list[str], *extra: str) -> dict[str, Any]:
    code, out, err = run(
        capsys, "areas", "create", *at, "--title", "North district", "--json", *extra
    )
    assert code == 0, err
    area: dict[str, Any] = json.loads(out)
    return area


def test_an_author_creates_lists_shows_refreshes_and_deletes_an_area(
    at: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    area = create(capsys, at, "--bbox", BBOX, "--refresh", "1d", "--wait", "--description", "d")
    assert area["status"] == "complete"
    assert (area["title"], area["refresh"], area["description"]) == ("North district", "1d", "d")
    assert len(area["id"]) == 32

    code, out, _ = run(capsys, "areas", "list", *at, "--json")
    assert code == 0
    assert [(a["id"], a["title"], a["status"]) for a in json.loads(out)] == [
        (area["id"], "North district", "complete")
    ]
    code, out, _ = run(capsys, "areas", "list", *at)
    assert out.split() == [area["id"], "complete", "North", "district"]

    code, out, _ = run(capsys, "areas", "show", *at, "--area", area["id"])
    assert code == 0
    assert "package 1 of" in out
    assert "refresh 1d" in out
    code, out, _ = run(capsys, "areas", "show", *at, "--area", area["id"], "--json")
    assert json.loads(out)["package"]["number"] == 1

    code, out, err = run(capsys, "areas", "refresh", *at, "--area", area["id"], "--wait", "--json")
    assert code == 0, err
    assert json.loads(out)["latest"] == 2
    code, out, _ = run(capsys, "areas", "refresh", *at, "--area", area["id"])
    assert code == 0
    assert out.startswith(area["id"])

    code, out, _ = run(capsys, "areas", "delete", *at, "--area", area["id"], "--json")
    assert (code, json.loads(out)) == (0, {"id": area["id"], "deleted": True})
    code, _, err = run(capsys, "areas", "show", *at, "--area", area["id"])
    assert code == 1
    assert "deleted by its author" in one_line(err, "MapAreaDeletedError")
    code, _, err = run(capsys, "areas", "delete", *at, "--area", area["id"])
    assert code == 1
    one_line(err, "MapAreaDeletedError")


def test_an_area_from_a_polygon_file_in_another_crs_or_a_bookmark(
    at: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    live_server: LiveServer,
) -> None:
    # a square in ETRS-TM35FIN (EPSG:3067) around Helsinki
    square = [[385000, 6670000], [390000, 6670000], [390000, 6675000], [385000, 6675000]]
    aoi = tmp_path / "area.geojson"
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [[*square, square[0]]]}))
    area = create(capsys, at, "--aoi", str(aoi), "--aoi-crs", "EPSG:3067")
    assert area["source"] == {"kind": "polygon"}
    west, south = area["area"]["coordinates"][0][0][:2]
    assert 24.9 < west < 25.1
    assert 60.1 < south < 60.3

    server, map_id = live_server.server, at[3]
    editor = server.token("editor")
    document = server.client.get(f"/api/maps/{map_id}").json()
    document["bookmarks"] = [{"name": "Harbour", "extent": [24.9, 60.1, 24.95, 60.15]}]
    response = server.client.put(f"/api/maps/{map_id}", json=document, headers=editor)
    assert response.status_code == 204, response.text
    area = create(capsys, at, "--bookmark", "Harbour", "--min-scale", "50000")
    assert area["source"] == {"kind": "bookmark", "bookmark": "Harbour"}
    assert area["min_scale"] == 50000

    code, _, err = run(capsys, "areas", "create", *at, "--title", "x", "--bookmark", "Nowhere")
    assert code == 1
    assert "no bookmark 'Nowhere'" in one_line(err, "InvalidOfflineParametersError")


@pytest.mark.parametrize(
    ("args", "error", "says"),
    [
        (["--bbox", "1,2,3"], "InvalidAOIError", "four numbers"),
        (["--bbox", "0,10,1,5"], "InvalidAOIError", "south must be less than north"),
        (["--bbox", "a,b,c,d"], "InvalidAOIError", "four numbers"),
        ([], "InvalidAOIError", "one of --bbox"),
        (["--bbox", BBOX, "--bookmark", "b"], "InvalidAOIError", "one of --bbox"),
        (["--bbox", BBOX, "--refresh", "61 * * * *"], "InvalidOfflineParametersError", "parse"),
        (["--bbox", BBOX, "--refresh", "daily"], "InvalidOfflineParametersError", "refresh"),
        (
            ["--bbox", BBOX, "--min-scale", "1000", "--max-scale", "5000"],
            "InvalidOfflineParametersError",
            "max_scale",
        ),
        (["--aoi", "/nonexistent.geojson"], "InvalidAOIError", "cannot read"),
        (["--bbox", BBOX, "--thumbnail", "/nonexistent.png"], "InvalidOfflineParametersError", ""),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(
    at: list[str], capsys: pytest.CaptureFixture[str], args: list[str], error: str, says: str
) -> None:
    code, out, err = run(capsys, "areas", "create", *at, "--title", "x", *args)
    assert code == 1
    assert says in one_line(err, error)
    assert out == ""
    code, out, _ = run(capsys, "areas", "list", *at, "--json")
    assert json.loads(out) == []


def test_only_the_owner_creates_or_deletes_and_signing_in_is_needed(
    at: list[str],
    capsys: pytest.CaptureFixture[str],
    live_server: LiveServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    area = create(capsys, at, "--bbox", BBOX)
    services: Services = cast(FastAPI, live_server.server.client.app).state.services
    services.users.add_user("other", PASSWORD, scopes=("maps:read", "maps:write"))
    login("other", live_server.url, monkeypatch, capsys)
    code, _, err = run(capsys, "areas", "create", *at, "--title", "x", "--bbox", BBOX)
    assert code == 1
    one_line(err, "AccessDeniedError")
    code, _, err = run(capsys, "areas", "delete", *at, "--area", area["id"])
    assert code == 1
    one_line(err, "AccessDeniedError")
    login("viewer", live_server.url, monkeypatch, capsys)
    code, _, err = run(capsys, "areas", "delete", *at, "--area", area["id"])
    assert code == 1
    one_line(err, "InsufficientScopeError")

    monkeypatch.setenv("OFFMAPS_CONFIG_DIR", str(tmp_path / "nobody"))
    code, _, err = run(capsys, "areas", "create", *at, "--title", "x", "--bbox", BBOX)
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    code, out, _ = run(capsys, "areas", "list", *at, "--json")  # a public map's areas
    assert [a["id"] for a in json.loads(out)] == [area["id"]]


def test_a_download_cut_midway_continues_when_run_again(
    at: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    area = create(capsys, at, "--bbox", BBOX, "--wait")
    fetch = downloads_sdk.fetch_file
    cut: list[str] = []

    def cutting(portal: Portal, entry: Mapping[str, Any], folder: Path, **kw: Any) -> Path:
        if entry["path"] == "city.gpkg" and not cut:  # half of it arrives, then the line drops
            cut.append(entry["path"])
            with portal.stream(str(entry["href"]), {}) as response:
                data = response.read()
            (folder / "city.gpkg.part").write_bytes(data[: len(data) // 2])
            raise DownloadError(f"city.gpkg: the download stopped; {kw['again']}")
        return fetch(portal, entry, folder, **kw)

    monkeypatch.setattr("offmaps.client.offline.fetch_file", cutting)
    out_dir = tmp_path / "device"
    args = ["areas", "download", *at, "--area", area["id"], "--out", str(out_dir)]
    code, _, err = run(capsys, *args)
    assert code == 1
    assert "run the same command again" in one_line(err, "DownloadError")
    assert (out_dir / "city.gpkg.part").exists()
    assert not (out_dir / "package.json").exists()

    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["package"] == 1
    assert set(summary["layers"]) == {"basemap", "sites"}
    assert verify_package(out_dir).ok

    code, _, err = run(capsys, *args)  # whole already: the folder is not empty
    assert code == 1
    one_line(err, "InvalidOfflineParametersError")

    code, out, err = run(capsys, *args[:-1], str(tmp_path / "light"), "--no-basemap")
    assert code == 0, err
    assert "left out: basemap: the basemap is not included" in out
    assert verify_package(tmp_path / "light").ok


def test_a_download_while_packaging_is_a_one_line_409(
    at: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path, held: threading.Event
) -> None:
    area = create(capsys, at, "--bbox", BBOX)
    assert area["status"] == "packaging"
    out_dir = tmp_path / "device"
    args = ["areas", "download", *at, "--area", area["id"], "--out", str(out_dir)]
    code, _, err = run(capsys, *args)
    assert code == 1
    assert "still packaging" in one_line(err, "MapAreaBusyError")
    code, _, err = run(capsys, "areas", "refresh", *at, "--area", area["id"])
    assert code == 1
    one_line(err, "MapAreaBusyError")
    held.set()
    deadline = time.monotonic() + 60
    while (
        json.loads(run(capsys, "areas", "show", *at, "--area", area["id"], "--json")[1])["status"]
        != "complete"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    code, _, err = run(capsys, *args)
    assert code == 0, err


def test_sync_brings_a_scheduled_package_to_the_newest(
    at: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path, live_server: LiveServer
) -> None:
    area = create(
        capsys, at, "--bbox", BBOX, "--update-mode", "download_scheduled_updates", "--wait"
    )
    out_dir = tmp_path / "device"
    code, _, err = run(
        capsys, "areas", "download", *at, "--area", area["id"], "--out", str(out_dir)
    )
    assert code == 0, err
    code, out, err = run(capsys, "sync", "run", str(out_dir))
    assert code == 0, err
    assert "package 1: the newest of its area" in out
    store = live_server.server.catalog.feature_service("city")
    site = next(iter(store.iter_features("sites")))
    store.apply_edits([Update("sites", site.global_id, {"status": "seen from the CLI"})])
    code, _, err = run(capsys, "areas", "refresh", *at, "--area", area["id"], "--wait")
    assert code == 0, err
    code, out, err = run(capsys, "sync", "run", str(out_dir), "--json")
    assert code == 0, err
    scheduled = json.loads(out)["scheduled_updates"]
    assert (scheduled["choice"], scheduled["from_number"], scheduled["to_number"]) in {
        ("updates", 1, 2),
        ("full", 1, 2),
    }
    assert verify_package(out_dir).ok
