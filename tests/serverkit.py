"""Test servers for every test that needs one: a server with sample data, listening or in-process,
and signed-in SDK tasks (a pytest plugin, loaded by tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from shapely.geometry import LineString, Point

from offmaps.catalog import Catalog
from offmaps.client import Portal
from offmaps.client.offline import OfflineMapTask, PortalItem
from offmaps.features import FieldType
from offmaps.features.model import Field, GeometryType, Insert, LayerSchema, Relationship
from offmaps.schemas import WebMap
from offmaps.server.app import create_app
from offmaps.server.problems import PROBLEM_MEDIA_TYPE
from offmaps.settings import ServerSettings

PASSWORD = "correct horse battery"

SITES = LayerSchema(
    "sites",
    (
        Field("name", FieldType.TEXT),
        Field("status", FieldType.TEXT),
        Field("osm_id", FieldType.INTEGER),
        Field("checked_on", FieldType.DATE),
    ),
    GeometryType.POINT,
    title="Sites",
)
INSPECTIONS = LayerSchema(
    "inspections",
    (Field("site_osm_id", FieldType.INTEGER), Field("result", FieldType.TEXT)),
)
STREETS = LayerSchema("streets", (Field("name", FieldType.TEXT),), GeometryType.LINESTRING)
PRIVATE = LayerSchema("secret", (Field("name", FieldType.TEXT),), GeometryType.POINT)


def assert_problem(response: Any, *statuses: int) -> dict[str, Any]:
    """Check a response is an RFC 9457 problem document with one of ``statuses``; return it."""
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    assert body["detail"]
    return body


def webmap_document(
    *, title: str, public: bool, layers: list[dict[str, Any]], tables: list[dict[str, Any]]
) -> dict[str, Any]:
    """A web map document over the test service."""
    return {
        "format_version": "1.0",
        "item": {"title": title, "tags": ["test"]},
        "basemap": {"title": "none", "layers": []},
        "operational_layers": layers,
        "tables": tables,
        "sharing": {"owner": "editor", "groups": ["crew"], "public": public},
    }


def feature_layer(layer: str, *, edit: bool) -> dict[str, Any]:
    """A feature layer entry of a web map."""
    return {
        "type": "feature",
        "id": layer,
        "title": layer,
        "service": "city",
        "layer": layer,
        "editing": {"create": edit, "update": edit, "delete": edit},
        "attachments_enabled": True,
    }


@dataclass
class Server:
    """A test server and what it holds."""

    client: TestClient
    catalog: Catalog
    data_dir: Path
    public_map: str
    private_map: str

    def token(self, user: str, scope: str | None = None) -> dict[str, str]:
        """Authorization headers for ``user``."""
        form = {"grant_type": "password", "username": user, "password": PASSWORD}
        if scope:
            form["scope"] = scope
        response = self.client.post("/oauth2/token", data=form)
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server with service ``city`` (sites, inspections, streets, secret) and two web maps.

    The public map shows sites (editable), inspections (editable) and streets (read only); the
    private one, shared with group ``crew``, shows ``secret``. Users: ``editor`` (maps:read,
    maps:write, features:edit, group crew), ``viewer`` (maps:read), ``admin`` (admin).
    """
    settings = ServerSettings(data_dir=tmp_path / "data", max_body_bytes=256 * 1024)
    app = create_app(settings)
    catalog: Catalog = app.state.services.catalog
    store = catalog.create_feature_service("city")
    for schema in (SITES, INSPECTIONS, STREETS, PRIVATE):
        store.create_layer(schema)
    store.add_relationship(
        Relationship("site_inspections", "sites", "osm_id", "inspections", "site_osm_id")
    )
    store.apply_edits(
        [
            Insert(
                "sites",
                {"name": f"site {i}", "status": "ok", "osm_id": i},
                Point(24.9 + i / 100, 60.1),
            )
            for i in range(25)
        ]
        + [
            Insert(
                "streets", {"name": "Mannerheimintie"}, LineString([(24.9, 60.1), (24.95, 60.2)])
            )
        ]
        + [Insert("secret", {"name": "vault"}, Point(24.94, 60.17))]
    )
    public = catalog.webmaps.create(
        WebMap.model_validate(
            webmap_document(
                title="Public",
                public=True,
                layers=[feature_layer("sites", edit=True), feature_layer("streets", edit=False)],
                tables=[
                    {
                        "id": "inspections",
                        "title": "Inspections",
                        "service": "city",
                        "layer": "inspections",
                        "editing": {"create": True, "update": True, "delete": True},
                    }
                ],
            )
        ),
        owner="editor",
    )
    private = catalog.webmaps.create(
        WebMap.model_validate(
            webmap_document(
                title="Private",
                public=False,
                layers=[feature_layer("secret", edit=False)],
                tables=[],
            )
        ),
        owner="editor",
    )
    users = app.state.services.users
    users.add_user(
        "editor", PASSWORD, scopes=("maps:read", "maps:write", "features:edit"), groups=("crew",)
    )
    users.add_user("viewer", PASSWORD, scopes=("maps:read",))
    users.add_user("admin", PASSWORD, scopes=("admin",))
    with TestClient(app) as client:
        yield Server(client, catalog, settings.data_dir, str(public.id), str(private.id))


@dataclass
class LiveServer:
    """A test server listening on a loopback port, for real HTTP clients (GDAL, the CLI)."""

    url: str
    server: Server


@pytest.fixture
def live_server(server: Server) -> Iterator[LiveServer]:
    """``server``, also served by uvicorn on a free loopback port in a thread."""
    import socket  # noqa: PLC0415
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415

    import uvicorn  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(server.client.app, host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", server)
    finally:
        running.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def portals() -> Iterator[list[Portal]]:
    """Connections made by a test, closed after it."""
    made: list[Portal] = []
    yield made
    for portal in made:
        portal.close()


@pytest.fixture
def task_for(portals: list[Portal]) -> Callable[[LiveServer, str], OfflineMapTask]:
    """Signs in as the editor and makes the task of a map."""

    def make(server: LiveServer, map_id: str) -> OfflineMapTask:
        portal = Portal(server.url)
        portals.append(portal)
        portal.login("editor", PASSWORD)
        return OfflineMapTask(PortalItem(portal, map_id))

    return make
