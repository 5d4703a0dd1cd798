"""The tools docs/sync.md says can edit an offline package do, and their edits come home.

Each test takes the sample map offline from a real ``offmaps serve`` with the CLI, edits a
layer with geometry with one tool (the commands are the docs' own, run as written), syncs with
``offmaps sync`` and reads the row back from the server. Plain ``sqlite3`` fails on a layer
with geometry, as documented, and works on a table without one. A tool that is missing fails
the test (``make test`` installs them with scripts/clients.sh).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.data import data_path

ROOT = Path(__file__).resolve().parents[2]
SYNC_DOCS = ROOT / "docs" / "sync.md"
PASSWORD = "offmaps-sample"  # the sample users' (docs/server.md)
URL_IN_DOCS = "http://127.0.0.1:8000"
QGIS_PYTHON = "/usr/bin/python3"  # Debian's: the only one that sees QGIS (scripts/clients.sh)

GDAL_UPDATE = (
    "ogrinfo field-map/helsinki.gpkg -sql \"UPDATE sites SET condition = 'broken', "
    'geom = AsGPB(MakePoint(24.9442, 60.1692, 4326)) WHERE fid = (SELECT min(fid) FROM sites)"'
)
GDAL_INSERT = (
    'ogrinfo field-map/helsinki.gpkg -sql "INSERT INTO sites (name, kind, geom) VALUES '
    "('Added with ogrinfo', 'fire_hydrant', AsGPB(MakePoint(24.9464, 60.1714, 4326)))\""
)
GDAL_APPEND = "ogr2ogr -append field-map/helsinki.gpkg found.geojson -nln sites"
SPATIALITE_UPDATE = (
    'sqlite3 field-map/helsinki.gpkg ".load mod_spatialite" "UPDATE sites SET condition = '
    "'broken', geom = AsGPB(MakePoint(24.9443, 60.1693, 4326)) WHERE fid = (SELECT min(fid) "
    'FROM sites)"'
)
SQLITE_TABLE_UPDATE = (
    "sqlite3 field-map/helsinki.gpkg \"UPDATE inspections SET notes = 'rechecked from the "
    "field' WHERE fid = (SELECT min(fid) FROM inspections)\""
)
SQLITE_LAYER_UPDATE = (
    "sqlite3 field-map/helsinki.gpkg \"UPDATE sites SET condition = 'broken' WHERE fid = "
    '(SELECT min(fid) FROM sites)"'
)
SQLITE_ERROR = "Error: in prepare, no such function: ST_IsEmpty"


def offmaps_command() -> str:
    """The ``offmaps`` of the interpreter running the tests (the README's ``.venv/bin/offmaps``)."""
    return str(Path(sys.executable).with_name("offmaps"))


def readme_command(start: str, server: SampleServer | None = None) -> list[str]:
    """The one README command line ``.venv/bin/offmaps START...``, as its arguments, with this
    interpreter's ``offmaps``, and the server's URL and map id for the README's placeholders."""
    wanted = start.split()
    commands = [
        shlex.split(line, comments=True)
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith(".venv/bin/offmaps ")
    ]
    found = [words for words in commands if words[1:] == wanted] or [
        words for words in commands if words[1 : 1 + len(wanted)] == wanted
    ]
    assert len(found) == 1, f"README.md has {len(found)} commands `offmaps {start} ...`"
    words = found[0]
    words[0] = offmaps_command()
    if server is not None:
        words = [
            server.url if w == URL_IN_DOCS else server.map_id if w == "ID" else w for w in words
        ]
    return words


def documented(command: str) -> str:
    """``command`` after checking docs/sync.md shows it as written."""
    assert command in SYNC_DOCS.read_text(), f"docs/sync.md no longer shows: {command}"
    return command


def run(args: list[str] | str, *, cwd: Path, env: dict[str, str], stdin: str | None = None) -> str:
    """Run a command (a shell line when a string); its output, or the test fails with it."""
    done = subprocess.run(
        args,
        shell=isinstance(args, str),
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def require_tool(name: str) -> None:
    """Fail, not skip, when a tool the docs name is not installed."""
    if shutil.which(name) is None:
        pytest.fail(f"{name} is missing: run scripts/clients.sh (as root) to install it")


@dataclass(frozen=True)
class SampleServer:
    """``offmaps serve`` with the sample map, signed in to as the editor with ``offmaps login``."""

    url: str
    map_id: str
    env: dict[str, str]

    def generate(self, cwd: Path) -> Path:
        """Takes the sample map offline to ``cwd/field-map`` with the README's command."""
        cwd.mkdir(parents=True, exist_ok=True)
        run(readme_command("offline generate", self), cwd=cwd, env=self.env)
        return cwd / "field-map"

    def offmaps(self, *args: str, cwd: Path) -> str:
        """The output of ``offmaps ARGS``, signed in as the editor."""
        return run([offmaps_command(), *args], cwd=cwd, env=self.env)

    def status(self, package: Path) -> dict[str, Any]:
        """``offmaps sync status PACKAGE --json``: the package's one replica."""
        report = json.loads(self.offmaps("sync", "status", str(package), "--json", cwd=package))
        (replica,) = report["replicas"]
        return dict(replica)

    def feature(self, layer: str, global_id: str) -> dict[str, Any]:
        """A row of the sample service as the server has it (anonymous: the map is public)."""
        response = httpx.get(f"{self.url}/collections/helsinki.{layer}/items/{global_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_sample_server(folder: Path) -> Iterator[SampleServer]:
    """Serves the sample map from a fresh folder with the README's ``serve`` command (on a free
    port), signs in with its ``login`` command and finds the map's id with ``maps list``."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OFFMAPS_OSM_FILE": str(data_path("osm/Helsinki.osm.pbf")),
        "OFFMAPS_CONFIG_DIR": str(folder / "config"),
    }
    env.pop("OFFMAPS_DATA_DIR", None)  # the README's ./offmaps-data, in ``folder``
    port = _free_port()
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(
        [*readme_command("serve"), "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # the first start builds the sample from OSM
        while True:
            if process.poll() is not None:
                pytest.fail(f"offmaps serve stopped:\n{(folder / 'server.log').read_text()}")
            try:
                if httpx.get(f"{url}/conformance").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"offmaps serve did not start:\n{(folder / 'server.log').read_text()}")
            time.sleep(0.5)
        server = SampleServer(url, "", env)
        login = readme_command("login", server)
        run([*login, "--password-stdin"], cwd=folder, env=env, stdin=PASSWORD + "\n")
        maps = json.loads(run(readme_command("maps list", server), cwd=folder, env=env))
        (sample,) = maps
        yield SampleServer(url, str(sample["id"]), env)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def sample_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SampleServer]:
    """One sample server for the module's tests."""
    yield from start_sample_server(tmp_path_factory.mktemp("sample-server"))


def status_docs() -> str:
    """The section of docs/cli.md on ``offmaps sync status``."""
    cli_docs = (ROOT / "docs" / "cli.md").read_text()
    return cli_docs.split("## `offmaps sync status`")[1].split("\n## ")[0]


def first_row(package: Path, layer: str) -> str:
    """The global id of the layer's first row (by fid) in the package's replica."""
    with closing(sqlite3.connect(package / "helsinki.gpkg")) as conn:
        (global_id,) = conn.execute(f"SELECT globalid FROM {layer} ORDER BY fid LIMIT 1").fetchone()
    return str(global_id)


def sync(server: SampleServer, package: Path, pending: int) -> dict[str, Any]:
    """Checks ``pending`` edits wait in the outbox, syncs them with ``offmaps sync``, and
    returns the status after: every edit applied."""
    before = server.status(package)
    assert before["changes"]["pending"] == pending, before
    server.offmaps("sync", str(package), cwd=package.parent)
    after = server.status(package)
    assert after["changes"]["pending"] == 0, after
    assert after["changes"]["rejected"] == 0, after
    assert after["changes"]["applied"] == pending, after
    return after


def point(feature: dict[str, Any]) -> tuple[float, float]:
    """A feature's point, rounded to 4 decimals (GeoPackage stores doubles)."""
    x, y = feature["geometry"]["coordinates"]
    return round(x, 4), round(y, 4)


def test_the_readme_path_from_serve_to_sync_with_its_sdk_lines(
    sample_server: SampleServer, tmp_path: Path
) -> None:
    """The README's commands, as written, from a signed-in CLI to a synced edit."""
    server, env = sample_server, sample_server.env
    run(readme_command("offline estimate", server), cwd=tmp_path, env=env)
    package = server.generate(tmp_path)
    run(readme_command("package verify", server), cwd=tmp_path, env=env)
    site = first_row(package, "sites")
    readme = (ROOT / "README.md").read_text()
    (block,) = [part.split("```")[0] for part in readme.split("```python\n")[1:]]
    run([sys.executable, "-c", block], cwd=tmp_path, env=env)
    check = run(readme_command("sync status field-map --check", server), cwd=tmp_path, env=env)
    assert "device: 2 changes to upload" in check

    run(readme_command("sync field-map", server), cwd=tmp_path, env=env)
    status = json.loads(
        run(readme_command("sync status field-map --json", server), cwd=tmp_path, env=env)
    )
    (replica,) = status["replicas"]
    assert replica["changes"] == {
        "pending": 0, "applied": 2, "merged": 0, "conflict": 0, "rejected": 0
    }  # fmt: skip
    run(readme_command("conflicts list", server), cwd=tmp_path, env=env)
    home = server.feature("sites", site)
    assert home["properties"]["condition"] == "broken"
    assert point(home) == (24.9441, 60.1691)
    assert named(server, "Hydrant found in the field") == [(24.945, 60.17)]


def test_every_key_of_sync_status_json_is_in_docs_cli(
    sample_server: SampleServer, tmp_path: Path
) -> None:
    package = sample_server.generate(tmp_path)
    report = json.loads(
        sample_server.offmaps("sync", "status", str(package), "--check", "--json", cwd=tmp_path)
    )
    (replica,) = report["replicas"]
    section = status_docs()
    for key in sorted({*report, *replica, *replica["changes"], *report["updates"]}):
        assert f"`{key}`" in section, key
    assert replica["changes"]["pending"] == 0
    assert set(replica["changes"]) == {"pending", "applied", "merged", "conflict", "rejected"}


def _sites_file(path: Path, name: str, x: float, y: float, global_id: str | None) -> None:
    properties = {"name": name, "kind": "fire_hydrant"}
    if global_id is not None:
        properties["globalid"] = global_id
    feature = {"type": "Feature", "properties": properties}
    geometry = {"type": "Point", "coordinates": [x, y]}
    path.write_text(
        json.dumps({"type": "FeatureCollection", "features": [{**feature, "geometry": geometry}]})
    )


def named(server: SampleServer, name: str) -> list[tuple[float, float]]:
    """The points of the server's sites called ``name``."""
    found = httpx.get(
        f"{server.url}/collections/helsinki.sites/items", params={"filter": f"name = '{name}'"}
    )
    assert found.status_code == 200, found.text
    return [point(feature) for feature in found.json()["features"]]


def test_gdal_updates_and_inserts_with_ogrinfo_and_appends_with_ogr2ogr(
    sample_server: SampleServer, tmp_path: Path
) -> None:
    require_tool("ogrinfo")
    require_tool("ogr2ogr")
    package = sample_server.generate(tmp_path)
    site = first_row(package, "sites")
    found = tmp_path / "found.geojson"
    given = str(uuid.uuid4())
    _sites_file(found, "Found by GDAL", 24.9461, 60.1711, given)
    run(documented(GDAL_UPDATE), cwd=tmp_path, env=sample_server.env)
    run(documented(GDAL_INSERT), cwd=tmp_path, env=sample_server.env)
    run(documented(GDAL_APPEND), cwd=tmp_path, env=sample_server.env)
    # a file whose features have no globalid: ogr2ogr writes the text of the column's SQL
    # default, and the insert trigger gives the feature a UUID (docs/sync.md)
    _sites_file(found, "No globalid", 24.9465, 60.1715, None)
    run(GDAL_APPEND, cwd=tmp_path, env=sample_server.env)
    assert "with one that is not a UUID) it gets a new one" in SYNC_DOCS.read_text()

    after = sync(sample_server, package, pending=4)
    assert after["not_applied"] == []

    home = sample_server.feature("sites", site)
    assert (home["properties"]["condition"], point(home)) == ("broken", (24.9442, 60.1692))
    assert named(sample_server, "Added with ogrinfo") == [(24.9464, 60.1714)]
    assert point(sample_server.feature("sites", given)) == (24.9461, 60.1711)
    assert named(sample_server, "No globalid") == [(24.9465, 60.1715)]


def test_spatialite_updates_a_geometry_written_as_a_geopackage_blob(
    sample_server: SampleServer, tmp_path: Path
) -> None:
    require_tool("sqlite3")
    package = sample_server.generate(tmp_path)
    site = first_row(package, "sites")
    run(documented(SPATIALITE_UPDATE), cwd=tmp_path, env=sample_server.env)

    sync(sample_server, package, pending=1)
    home = sample_server.feature("sites", site)
    assert (home["properties"]["condition"], point(home)) == ("broken", (24.9443, 60.1693))


def test_a_spatialite_geometry_not_written_as_a_geopackage_blob_is_rejected(
    sample_server: SampleServer, tmp_path: Path
) -> None:
    require_tool("sqlite3")
    package = sample_server.generate(tmp_path)
    site = first_row(package, "sites")
    before = sample_server.feature("sites", site)
    without = SPATIALITE_UPDATE.replace(
        "AsGPB(MakePoint(24.9443, 60.1693, 4326))", "MakePoint(1, 2, 4326)"
    )
    run(without, cwd=tmp_path, env=sample_server.env)

    synced = sample_server.offmaps("sync", str(package), cwd=tmp_path)
    assert "sites: 0 uploaded (0 applied, 0 merged, 0 conflicts, 1 rejected)" in synced
    status = sample_server.status(package)
    (change,) = status["not_applied"]
    reason = "unreadable: the geometry is not a GeoPackage blob"
    assert f"{change['change_id']}: {reason}" in synced
    assert (change["status"], change["reason"]) == ("rejected", reason)
    section = status_docs()
    for key in change:
        assert f"`{key}`" in section, key
    assert f"`{reason}`" in SYNC_DOCS.read_text()
    assert sample_server.feature("sites", site) == before


def test_plain_sqlite3_cannot_edit_a_layer_with_geometry(
    sample_server: SampleServer, tmp_path: Path
) -> None:
    require_tool("sqlite3")
    package = sample_server.generate(tmp_path)
    rows = "SELECT fid, condition, hex(geom) FROM sites ORDER BY fid"
    with closing(sqlite3.connect(package / "helsinki.gpkg")) as conn:
        before = conn.execute(rows).fetchall()
    done = subprocess.run(
        documented(SQLITE_LAYER_UPDATE),
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert done.stderr.strip() == SQLITE_ERROR
    assert f"# {SQLITE_ERROR}" in SYNC_DOCS.read_text()
    assert sample_server.status(package)["changes"]["pending"] == 0
    with closing(sqlite3.connect(package / "helsinki.gpkg")) as conn:
        assert conn.execute(rows).fetchall() == before


def test_plain_sqlite3_edits_a_table_without_geometry(
    sample_server: SampleServer, tmp_path: Path
) -> None:
    require_tool("sqlite3")
    package = sample_server.generate(tmp_path)
    inspection = first_row(package, "inspections")
    run(documented(SQLITE_TABLE_UPDATE), cwd=tmp_path, env=sample_server.env)

    sync(sample_server, package, pending=1)
    home = sample_server.feature("inspections", inspection)
    assert home["properties"]["notes"] == "rechecked from the field"


QGIS_EDIT = """
import sys
from qgis.core import (QgsApplication, QgsFeature, QgsGeometry, QgsPointXY, QgsVectorLayer,
                       QgsVectorLayerUtils)

app = QgsApplication([], False)
app.initQgis()
layer = QgsVectorLayer(sys.argv[1] + "/helsinki.gpkg|layername=sites", "sites", "ogr")
assert layer.isValid(), "QGIS cannot open the replica"
fields = layer.fields()
features = sorted(layer.getFeatures(), key=lambda f: f.id())
first, second = features[0], features[1]
layer.startEditing()
layer.changeGeometry(first.id(), QgsGeometry.fromPointXY(QgsPointXY(24.9444, 60.1694)))
layer.changeAttributeValue(first.id(), fields.indexOf("condition"), "checked in QGIS")
layer.deleteFeature(second.id())
# what the GUI's Add Point Feature does, twice: the form's defaults (globalid: the text of the
# column's SQL default, the same for both), then the feature
for name, x, y in (("Added in QGIS", 24.9462, 60.1712), ("Added in QGIS too", 24.9463, 60.1713)):
    where = QgsGeometry.fromPointXY(QgsPointXY(x, y))
    added = QgsVectorLayerUtils.createFeature(layer, where, {fields.indexOf("name"): name})
    for index in range(fields.count()):  # the form accepts them as filled in
        assert QgsVectorLayerUtils.validateAttribute(layer, added, index)[0], fields[index].name()
    layer.addFeature(added)
# what a PyQGIS script does: a feature with only the fields it sets (the others NULL)
plain = QgsFeature(fields)
plain.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(24.9464, 60.1714)))
plain["name"] = "Added with PyQGIS"
layer.addFeature(plain)
assert layer.commitChanges(), layer.commitErrors()
print(second["globalid"])
del layer  # before exitQgis, or QGIS 3.22 crashes on the way out
app.exitQgis()
"""


def test_qgis_edits_moves_deletes_and_adds_features_of_a_layer(
    sample_server: SampleServer, tmp_path: Path
) -> None:
    if not Path(QGIS_PYTHON).exists():
        pytest.fail(f"{QGIS_PYTHON} is missing: run scripts/clients.sh (as root)")
    package = sample_server.generate(tmp_path)
    site = first_row(package, "sites")
    script = tmp_path / "qgis_edit.py"
    script.write_text(QGIS_EDIT)
    done = subprocess.run(
        [QGIS_PYTHON, str(script), str(package)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert done.returncode == 0, (
        f"QGIS could not edit the package (scripts/clients.sh installs QGIS):\n"
        f"{done.stdout}\n{done.stderr[-2000:]}"
    )
    deleted = done.stdout.strip().splitlines()[-1]
    assert "Leave `globalid` as the form fills it in" in SYNC_DOCS.read_text()

    # QGIS saves the geometry and the attribute in two updates; a delete; three new features
    after = sync(sample_server, package, pending=6)
    assert after["not_applied"] == []

    home = sample_server.feature("sites", site)
    assert (home["properties"]["condition"], point(home)) == ("checked in QGIS", (24.9444, 60.1694))
    gone = httpx.get(f"{sample_server.url}/collections/helsinki.sites/items/{deleted}")
    assert gone.status_code == 404
    assert named(sample_server, "Added in QGIS") == [(24.9462, 60.1712)]
    assert named(sample_server, "Added in QGIS too") == [(24.9463, 60.1713)]
    assert named(sample_server, "Added with PyQGIS") == [(24.9464, 60.1714)]


def test_the_offline_job_example_of_docs_server_builds_its_package(
    sample_server: SampleServer,
) -> None:
    text = (ROOT / "docs" / "server.md").read_text()
    section = text.split("## Offline jobs\n")[1].split("\n## ")[0]
    (example,) = [part.split("```")[0] for part in section.split("```json\n")[1:]]
    token = httpx.post(
        f"{sample_server.url}/oauth2/token",
        data={"grant_type": "password", "username": "editor", "password": PASSWORD},
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    started = httpx.post(
        f"{sample_server.url}/api/maps/{sample_server.map_id}/offline/jobs",
        headers={**auth, "Content-Type": "application/json"},
        content=example,
    )
    assert started.status_code == 201, started.text
    job = started.json()
    deadline = time.monotonic() + 300
    while job["status"] in ("pending", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        job = httpx.get(f"{sample_server.url}/api/jobs/{job['id']}", headers=auth).json()
    assert job["status"] == "succeeded", job
    files = {entry["path"] for entry in job["result"]["files"]}
    assert {"helsinki.gpkg", "basemap.pmtiles", "package.json"} <= files
    assert job["result"]["omitted"]["streets"] == "removed from the overrides"
    assert "buildings" in job["result"]["omitted"]
