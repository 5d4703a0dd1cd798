"""The conflicts page in a real browser: a conflict parked by a real sync (the device and the
office moved the same site and changed the same field), its three versions side by side and
drawn on the map (read from the pixels), resolved field by field, and checked through the API.

A caller whose token may list the review queue but not settle it (``offline:sync`` without
``features:edit``) sees the conflict and no button to resolve it; an admin sees every user's
conflicts and may resolve them; a refused resolve shows the API's problem.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from playwright.sync_api import Page
from shapely.geometry import Point

from offmaps.client import Portal
from offmaps.client.offline import OfflineMapTask, PortalItem
from offmaps.client.sync import OfflineMapSyncTask, SyncOfflineMapParameters
from offmaps.features.geopackage import GeoPackageStore
from offmaps.features.model import Update
from offmaps.offline.parameters import area_from_bbox
from tests.webui import test_browser as kit
from tests.webui.conftest import SampleSite

# the browser tests' fixtures, for this module too: one browser, the watch on every page
browser = kit.browser
watch = kit.watch
page = kit.page

pytestmark = pytest.mark.xdist_group("webui-conflicts")

SITES = "/collections/helsinki.sites/items"
DEVICE_COLOUR = (0x15, 0x65, 0xC0)  # conflicts.js: the device's version
SERVER_COLOUR = (0xE6, 0x51, 0x00)  # the server's
BASE_COLOUR = (0x61, 0x61, 0x61)  # the base's ring


@dataclass(frozen=True)
class Parked:
    """A conflict in the review queue, and what each side did."""

    conflict_id: str
    global_id: str
    device_condition: str
    server_condition: str
    device_point: tuple[float, float]
    server_point: tuple[float, float]


def _token(site: SampleSite, scope: str | None = None) -> dict[str, object]:
    form = {"grant_type": "password", "username": site.user, "password": site.password}
    if scope:
        form["scope"] = scope
    answer: dict[str, object] = httpx.post(f"{site.url}/oauth2/token", data=form).json()
    return answer


@pytest.fixture
def parked(sample_site: SampleSite, tmp_path: Path) -> Parked:
    """The editor takes a small area around a site offline, edits the site's condition and
    moves it on the device; the office does the same through OGC API Features; the sync parks
    the device's edit in the review queue. Each test parks its own (on the same site)."""
    first = httpx.get(f"{sample_site.url}{SITES}", params={"limit": 1}).json()["features"][0]
    gid = str(first["id"])
    lon, lat = first["geometry"]["coordinates"]
    folder = tmp_path / "device"
    mark = uuid.uuid4().hex[:6]  # values of this test's own, on the site earlier tests edited too
    device_condition = f"cracked (seen in the field, {mark})"
    server_condition = f"fine (office records, {mark})"
    with Portal(sample_site.url) as portal:
        portal.login(sample_site.user, sample_site.password)
        task = OfflineMapTask(PortalItem(portal, sample_site.map_id))
        area = area_from_bbox(lon - 0.001, lat - 0.0005, lon + 0.001, lat + 0.0005)
        parameters = task.create_default_generate_offline_map_parameters(area, max_scale=5000)
        task.generate_offline_map(parameters, folder).wait(poll_seconds=0.1)
        sync = OfflineMapSyncTask(folder, portal)
        (replica,) = sync.package.manifest.replicas
        device_point = (lon + 0.0003, lat + 0.0001)
        server_point = (lon - 0.0003, lat - 0.0001)
        with GeoPackageStore.open(folder / replica.file) as store:
            (found,) = [f for f in store.iter_features("sites") if str(f.global_id) == gid]
            store.apply_edits(
                [
                    Update(
                        "sites", found.global_id, {"condition": device_condition},
                        geometry=Point(*device_point), set_geometry=True,
                    )
                ]
            )  # fmt: skip
        token = _token(sample_site)["access_token"]
        patch = {
            "type": "Feature",
            "properties": {"condition": server_condition},
            "geometry": {"type": "Point", "coordinates": list(server_point)},
        }
        httpx.patch(
            f"{sample_site.url}{SITES}/{gid}",
            content=json.dumps(patch),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/merge-patch+json",
            },
        ).raise_for_status()
        result = sync.sync_offline_map(SyncOfflineMapParameters()).wait()
        assert result.layer_results["sites"].conflicts == 1, result
    queue = httpx.get(
        f"{sample_site.url}/api/conflicts", headers={"Authorization": f"Bearer {token}"}
    ).json()["conflicts"]
    (conflict,) = [c for c in queue if c["client"]["condition"] == device_condition]
    return Parked(
        conflict["id"], gid, device_condition, server_condition, device_point, server_point,
    )  # fmt: skip


def _open_conflict(page: Page, conflict_id: str) -> None:
    page.wait_for_selector("body[data-queue-ready]")
    button = page.locator(f"tr[data-conflict='{conflict_id}']").get_by_role("button")
    button.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector(f"body[data-conflict-ready='{conflict_id}']", timeout=30_000)


def _map_pixels_of(page: Page) -> NDArray[np.int16]:
    # as the map page's tests read theirs: once drawn, from a screenshot of the canvas
    page.evaluate(
        "() => new Promise((done) => { const map = window.offmapsConflictMap; const check = () =>"
        " map.loaded() && map.areTilesLoaded() && !map.isMoving()"
        " ? setTimeout(done, 50) : setTimeout(check, 25);"
        " check(); })"
    )
    shot = page.locator("#conflict-map canvas").screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=np.int16)


def test_a_parked_conflict_is_shown_and_resolved_field_by_field(
    page: Page, sample_site: SampleSite, parked: Parked, screenshots: Path
) -> None:
    kit._sign_in(page, sample_site, "/ui/conflicts")
    page.wait_for_url("**/ui/conflicts")
    _open_conflict(page, parked.conflict_id)
    rows = page.locator("#versions tbody tr")
    fields = {row.get_attribute("data-field"): row for row in rows.all()}
    assert {"condition", "geom"} <= set(fields), fields.keys()
    condition = fields["condition"]
    assert "conflict" in condition.locator("th").inner_text()
    cells = condition.locator("td").all_inner_texts()
    assert cells[1].startswith(parked.device_condition)
    assert cells[1].endswith("changed")
    assert cells[2].startswith(parked.server_condition)
    assert cells[2].endswith("changed")
    geometry = fields["geom"].locator("td").all_inner_texts()
    assert f"{parked.device_point[0]:.6f}" in geometry[1]
    assert f"{parked.server_point[0]:.6f}" in geometry[2]
    # the map's basemap under the versions: the OSM rendering, many colours
    with_basemap = _map_pixels_of(page)
    assert len(np.unique(with_basemap.reshape(-1, 3), axis=0)) > 200
    page.locator("#conflict").scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "webui-conflicts.png", full_page=True)
    # the three geometries drawn, on the background alone (the basemap hidden by keyboard):
    # the device's and the server's discs, the base's ring
    page.get_by_label("Basemap: OpenStreetMap (rendered locally)").focus()
    page.keyboard.press("Space")
    pixels = _map_pixels_of(page)
    assert kit._near(pixels, DEVICE_COLOUR) > 50
    assert kit._near(pixels, SERVER_COLOUR) > 50
    assert kit._near(pixels, BASE_COLOUR) > 30
    # hiding a version through the legend's checkbox (by keyboard) takes it off the map
    page.get_by_label("Server: the row as the server has it").focus()
    page.keyboard.press("Space")
    assert kit._near(_map_pixels_of(page), SERVER_COLOUR) == 0
    page.keyboard.press("Space")

    # field by field, by keyboard: the device's condition, the server's position
    page.locator("#keep-client-condition").focus()
    page.keyboard.press("Space")
    assert page.locator("#keep-server-geom").is_checked()  # the server's, unless picked
    page.get_by_role("button", name="Resolve with the fields picked").focus()
    page.keyboard.press("Enter")
    message = page.locator("#resolve-message")
    message.filter(has_text="Resolved").wait_for()
    assert page.locator("#resolve").is_hidden()  # settled: nothing left to resolve
    # the queue, refreshed, no longer lists it
    page.locator(f"tr[data-conflict='{parked.conflict_id}']").wait_for(state="detached")

    # through the API: the row has the values picked, and the conflict is settled
    token = _token(sample_site)["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    row = httpx.get(f"{sample_site.url}{SITES}/{parked.global_id}").json()
    assert row["properties"]["condition"] == parked.device_condition
    assert row["geometry"]["coordinates"] == pytest.approx(list(parked.server_point))
    queue = httpx.get(f"{sample_site.url}/api/conflicts", headers=headers).json()["conflicts"]
    assert parked.conflict_id not in [c["id"] for c in queue]
    settled = httpx.get(f"{sample_site.url}/api/conflicts/{parked.conflict_id}", headers=headers)
    assert settled.json()["status"] == "resolved"


def _use_token(page: Page, site: SampleSite, answer: dict[str, object]) -> None:
    # a session as the sign-in page keeps one, with a token asked for narrower scopes
    page.goto(f"{site.url}/ui/signin")
    session = {
        "token": answer["access_token"],
        "scope": answer["scope"],
        "username": site.user,
        "expiresAt": int(time.time() * 1000) + 600_000,
    }
    page.evaluate("(s) => sessionStorage.setItem('offmaps.session', JSON.stringify(s))", session)


def test_a_caller_who_may_not_resolve_sees_the_conflict_and_no_resolve_button(
    page: Page, sample_site: SampleSite, parked: Parked, watch: kit.Watch
) -> None:
    # the editor's token narrowed to reading the queue: offline:sync without features:edit
    answer = _token(sample_site, "maps:read offline:sync")
    assert "features:edit" not in str(answer["scope"]).split()
    _use_token(page, sample_site, answer)
    page.goto(f"{sample_site.url}/ui/conflicts")
    _open_conflict(page, parked.conflict_id)
    assert parked.device_condition in page.locator("#versions tbody").inner_text()
    assert page.get_by_role("button", name="Resolve with the fields picked").count() == 0
    assert page.get_by_role("button", name="Keep the device's edit").count() == 0
    assert page.get_by_role("radio").count() == 0
    assert page.locator("#resolve").is_hidden()

    # a token that may not even read the queue: the API's refusal, said on the page
    watch.allowed.add(("/api/conflicts", 403))
    _use_token(page, sample_site, _token(sample_site, "maps:read"))
    page.goto(f"{sample_site.url}/ui/conflicts")
    message = page.locator("#queue-message")
    message.filter(has_text="Could not list the conflicts").wait_for()
    assert "offline:sync" in message.inner_text()
    assert page.locator("#queue").is_hidden()


def test_an_admin_resolves_any_conflict_and_a_refusal_shows_the_apis_problem(
    page: Page, sample_site: SampleSite, parked: Parked, watch: kit.Watch
) -> None:
    resolve_path = f"/api/conflicts/{parked.conflict_id}/resolve"
    watch.allowed.add((resolve_path, 409))
    # the editor's conflict, seen by an admin, who may resolve it
    admin = SampleSite(sample_site.url, sample_site.map_id, user="admin")
    kit._sign_in(page, admin, "/ui/conflicts")
    page.wait_for_url("**/ui/conflicts")
    _open_conflict(page, parked.conflict_id)
    # the office edits the row again while the page shows the conflict
    token = _token(sample_site)["access_token"]
    httpx.patch(
        f"{sample_site.url}{SITES}/{parked.global_id}",
        content=json.dumps({"properties": {"name": "renamed meanwhile"}}),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/merge-patch+json",
        },
    ).raise_for_status()
    assert page.get_by_role("radio").count() == 4  # device or server, for both fields
    page.get_by_role("button", name="Keep the device's edit").click()
    message = page.locator("#resolve-message")
    message.filter(has_text="Could not resolve the conflict").wait_for()
    assert "the row changed since the conflict" in message.inner_text()
    assert "error" in str(message.get_attribute("class"))
    assert page.locator(f"tr[data-conflict='{parked.conflict_id}']").is_visible()
