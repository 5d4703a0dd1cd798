"""The web UI over HTTP: its pages and files, their security headers, the landing page's
negotiation, ``/api/me``, and the vendored front-end files against the npm lock file."""

from __future__ import annotations

import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from offmaps.offline.parameters import GenerateOfflineMapParameters, area_from_bbox
from offmaps.server.webui import CONTENT_SECURITY_POLICY, PAGES, STATIC_DIR
from tests.serverkit import Server, assert_problem

ROOT = Path(__file__).resolve().parents[2]
SERVER_PACKAGE = ROOT / "src" / "offmaps" / "server"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1][0] in {"script", "style"}:
            self.script_text += data.strip()


@pytest.mark.parametrize("path", [f"/ui/{name}" for name in PAGES])
def test_pages_have_a_strict_policy_and_no_inline_code(server: Server, path: str) -> None:
    response = server.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in policy
    assert "unsafe" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    parsed = _Tags()
    parsed.feed(response.text)
    assert parsed.script_text == ""  # no inline script or style element
    for tag, attributes in parsed.tags:
        assert "style" not in attributes, tag
        assert not any(name.startswith("on") for name in attributes), tag
        if tag == "script":
            assert attributes.get("type") == "module"
            assert not str(attributes["src"]).startswith(("http:", "https:", "//"))
    assert "http://" not in response.text
    assert "https://" not in response.text


def test_the_pages_own_files_load_nothing_from_elsewhere() -> None:
    for path in STATIC_DIR.glob("*.*"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), path.name
        # the token is kept in sessionStorage only
        assert not re.search(r"localStorage\s*[.\[]|document\.cookie", text), path.name


def test_static_files_carry_the_policy_and_modules_their_media_type(server: Server) -> None:
    response = server.client.get("/ui/static/vendor/maplibre-gl/maplibre-gl.mjs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    worker = server.client.get("/ui/static/vendor/maplibre-gl/maplibre-gl-worker.mjs")
    assert worker.status_code == 200
    assert server.client.get("/ui/static/app.css").headers["content-type"].startswith("text/css")
    assert server.client.get("/ui/static/../__init__.py").status_code == 404


def test_a_browser_asking_for_the_landing_page_gets_the_ui(server: Server) -> None:
    response = server.client.get("/", headers={"Accept": BROWSER_ACCEPT}, follow_redirects=False)
    assert response.status_code == 303
    # relative references, resolved against the request's own URL (a proxy's path kept)
    assert response.headers["location"] == "ui/"
    assert server.client.get("/ui", follow_redirects=False).headers["location"] == "ui/"
    assert server.client.get("/", headers={"Accept": BROWSER_ACCEPT}).url.path == "/ui/"


@pytest.mark.parametrize(
    "accept", [None, "*/*", "application/json", "application/json, text/html;q=0.5"]
)
def test_other_clients_still_get_the_json_landing_page(server: Server, accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}
    response = server.client.get("/", headers=headers, follow_redirects=False)
    assert response.status_code == 200
    assert response.json()["title"] == "offmaps"


def test_me_says_who_is_signed_in_with_which_scopes_and_groups(server: Server) -> None:
    me = server.client.get("/api/me", headers=server.token("editor")).json()
    assert me["subject"] == "editor"
    assert me["anonymous"] is False
    assert me["scopes"] == ["features:edit", "maps:read", "maps:write"]
    assert "offline:sync" in me["implied_scopes"]
    assert me["groups"] == ["crew"]
    nobody = server.client.get("/api/me").json()
    assert nobody["anonymous"] is True
    bad = server.client.get("/api/me", headers={"Authorization": "Bearer nonsense"})
    assert bad.status_code == 401


def test_docs_load_swagger_ui_from_the_server(server: Server) -> None:
    page = server.client.get("/docs").text
    assert "/docs/static/swagger-ui-bundle.js" in page
    assert not re.search(r"(src|href)=[\"']https?://", page)
    assert server.client.get("/docs/static/swagger-ui-bundle.js").status_code == 200


def test_vendored_files_are_the_locked_npm_packages_unchanged() -> None:
    manifest = json.loads((SERVER_PACKAGE / "webui" / "vendor.json").read_text())
    lock = json.loads((ROOT / "webui" / "package-lock.json").read_text())
    package = json.loads((ROOT / "webui" / "package.json").read_text())
    assert set(manifest) == set(package["dependencies"])
    for name, entry in manifest.items():
        # pinned exactly, and the copies come from the version the lock file holds
        assert package["dependencies"][name] == entry["version"]
        assert lock["packages"][f"node_modules/{name}"]["version"] == entry["version"]
        for relative, sha256 in entry["files"].items():
            digest = hashlib.sha256((SERVER_PACKAGE / relative).read_bytes()).hexdigest()
            assert digest == sha256, f"{relative} differs from {name} {entry['version']}"
    # the lock file names no download address: npm's own registry, as configured
    assert "resolved" not in json.dumps(lock)


def test_jobs_lists_the_callers_own_jobs_and_an_admin_every_job(server: Server) -> None:
    area = area_from_bbox(24.895, 60.05, 24.995, 60.15)
    body = {
        "parameters": GenerateOfflineMapParameters(area_of_interest=area).model_dump(mode="json")
    }
    editor = server.token("editor")
    started = server.client.post(
        f"/api/maps/{server.public_map}/offline/jobs", json=body, headers=editor
    )
    assert started.status_code == 201, started.text
    job_id = started.json()["id"]

    def listed(headers: dict[str, str]) -> list[tuple[str, str | None]]:
        jobs = server.client.get("/api/jobs", headers=headers).json()["jobs"]
        return [(job["id"], job["owner"]) for job in jobs]

    assert listed(editor) == [(job_id, "editor")]
    assert listed(server.token("admin")) == [(job_id, "editor")]
    # like a job's own route: signed in, with a scope that starts jobs
    assert_problem(server.client.get("/api/jobs", headers=server.token("viewer")), 403)
    assert_problem(server.client.get("/api/jobs"), 401)
