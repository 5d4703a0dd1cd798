"""The web UI in a real browser (Debian's Chromium, headless, driven by Playwright): sign in,
the sample map's tiles and features drawn (read from the pixels), identify, and never a request
outside the server's origin.

One browser per module; each test has its own browser context (a fresh tab session).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from offmaps.offline.parameters import GenerateOfflineMapParameters, area_from_bbox
from tests.webui.conftest import CHROMIUM, CHROMIUM_ARGS, SampleSite

# one browser for the module: its tests run on one xdist worker (`make pytest`: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("webui-browser")

BACKGROUND = (0xF4, 0xF1, 0xEA)  # the map's background layer (map.js)
SITE_COLOUR = (0xC2, 0x18, 0x5B)  # feature layers' points
STREET_COLOUR = (0x15, 0x65, 0xC0)  # feature layers' lines
HIGHLIGHT_COLOUR = (0xFF, 0x98, 0x00)  # the ring around identified features

# collects, in the page, the Content-Security-Policy violations the browser reports
_CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless; a missing browser fails the tests (never skips them)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no browser at {CHROMIUM}: run `bash scripts/clients.sh` (as root)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watch:
    """What a page did that it must not: requests elsewhere, errors, CSP violations."""

    origin: str
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    allowed: set[tuple[str, int]] = field(default_factory=set)
    """Error answers a test expects, as (path, status)."""

    def request(self, request: Request) -> None:
        # seen, not intercepted: routing every tile through Python slows the map tenfold.
        # Nothing would reach another host anyway: the browser resolves no name but loopback
        # (CHROMIUM_ARGS), and the pages' policy allows connections to their server only.
        parts = urlsplit(request.url)
        if (
            parts.scheme not in {"data", "blob"}
            and f"{parts.scheme}://{parts.netloc}" != self.origin
        ):
            self.foreign.append(request.url)

    def console(self, message: ConsoleMessage) -> None:
        # error answers are checked by `response`, with the test's expectations
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(f"console: {message.text}")

    def response(self, response: Response) -> None:
        path = urlsplit(response.url).path
        if response.status >= 400 and (path, response.status) not in self.allowed:
            self.errors.append(f"{response.status} from {response.url}")


@pytest.fixture
def watch(sample_site: SampleSite) -> Watch:
    """What the test's page did; a test adds the error answers it expects to ``allowed``."""
    return Watch(sample_site.url)


@pytest.fixture
def page(browser: Browser, sample_site: SampleSite, watch: Watch) -> Iterator[Page]:
    """A new tab of a new browser context; fails the test if the page asked anything of
    another origin, logged an error, or broke its Content-Security-Policy."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.on("request", watch.request)
    context.add_init_script(_CSP_LISTENER)
    opened = context.new_page()
    opened.on("console", watch.console)
    opened.on("response", watch.response)
    opened.on("pageerror", lambda error: watch.errors.append(f"page error: {error}"))
    try:
        yield opened
        violations: list[str] = []
        if not opened.is_closed():
            try:
                violations = opened.evaluate("window.__cspViolations || []")
            except PlaywrightError:  # the page is navigating: nothing to read
                violations = []
        assert watch.foreign == [], f"requests outside {sample_site.url}"
        assert watch.errors == []
        assert violations == [], "Content-Security-Policy violations"
    finally:
        context.close()


def _sign_in(page: Page, site: SampleSite, start: str = "/") -> None:
    page.goto(site.url + start)
    page.wait_for_url("**/ui/signin**")
    page.get_by_label("User name").fill(site.user)
    page.get_by_label("Password").fill(site.password)
    page.get_by_role("button", name="Sign in").click()


def _open_map(page: Page, site: SampleSite) -> None:
    _sign_in(page, site, f"/ui/map?id={site.map_id}")
    page.wait_for_url(f"**/ui/map?id={site.map_id}")
    page.wait_for_selector("body[data-map-ready]", timeout=60_000)


def _map_pixels(page: Page) -> NDArray[np.int16]:
    # once every tile is loaded and drawn (`loaded()` is false while a change waits for its
    # frame), read the map's pixels from a screenshot of its canvas. Polled with timers: an
    # idle map in headless Chromium may wait seconds for the frame `triggerRepaint` asks for
    page.evaluate(
        "() => new Promise((done) => { const map = window.offmapsMap; const check = () =>"
        " map.loaded() && map.areTilesLoaded() && !map.isMoving()"
        " ? setTimeout(done, 50) : setTimeout(check, 25); check(); })"
    )
    shot = page.locator("#map canvas").screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=np.int16)


def _near(pixels: NDArray[np.int16], colour: tuple[int, int, int], tolerance: int = 12) -> int:
    return int((np.abs(pixels - np.array(colour)).max(axis=2) <= tolerance).sum())


def _changed(pixels: NDArray[np.int16], before: NDArray[np.int16], tolerance: int = 8) -> int:
    return int((np.abs(pixels - before).max(axis=2) > tolerance).sum())


def _show_only(page: Page, *titles: str) -> None:
    # with the keyboard: focus each box of the layer list and press space to toggle it
    for box in page.locator("#layers input:not([disabled])").all():
        title = page.locator(f"label[for='{box.get_attribute('id')}']").inner_text()
        if box.is_checked() != (title in titles):
            box.focus()
            page.keyboard.press("Space")


def test_signing_in_shows_who_i_am_and_the_maps(
    page: Page, sample_site: SampleSite, screenshots: Path, watch: Watch
) -> None:
    watch.allowed.add(("/oauth2/token", 400))  # the wrong password, first
    response = page.goto(sample_site.url + "/")
    assert response is not None
    page.wait_for_url("**/ui/signin**")
    assert "script-src 'self'" in page.evaluate(
        "fetch(location.href).then((r) => r.headers.get('content-security-policy'))"
    )
    page.screenshot(path=screenshots / "webui-signin.png")
    page.get_by_label("User name").fill(sample_site.user)
    page.get_by_label("Password").fill("wrong password")
    page.get_by_label("Password").press("Enter")
    assert "Could not sign in" in page.get_by_role("alert").inner_text()
    page.get_by_label("Password").fill(sample_site.password)
    page.get_by_label("Password").press("Enter")
    page.wait_for_url("**/ui/")
    page.wait_for_selector("#maps a")
    assert page.locator("#me-name").inner_text() == "editor"
    scopes = page.locator("#me-scopes li").all_inner_texts()
    assert {"maps:read", "maps:write", "features:edit"} <= set(scopes)
    assert page.locator("#me-groups li").all_inner_texts() == ["field-crew"]
    assert "Helsinki field inspections" in page.locator("#maps a").all_inner_texts()
    page.screenshot(path=screenshots / "webui-maps.png")
    # the token is the tab's alone: in sessionStorage, not in localStorage, cookies or the URL
    stored = page.evaluate("JSON.parse(sessionStorage.getItem('offmaps.session')).token")
    assert stored.count(".") == 2
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    assert stored not in page.url
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/signin")
    assert page.evaluate("sessionStorage.length") == 0


def test_the_sample_map_draws_its_tiles_and_features(
    page: Page, sample_site: SampleSite, screenshots: Path
) -> None:
    _open_map(page, sample_site)
    assert page.locator("#map-status").inner_text() == "5 of 6 layers loaded"
    page.screenshot(path=screenshots / "webui-map.png")
    online_only = page.get_by_label("OpenStreetMap (live, online only)")
    assert online_only.is_disabled()

    _show_only(page)
    nothing = _map_pixels(page)
    area = nothing.shape[0] * nothing.shape[1]
    # the background, and the map's controls over it
    assert _near(nothing, BACKGROUND, 2) > area * 0.95

    _show_only(page, "Basemap")
    basemap = _map_pixels(page)
    # the OSM basemap rendered by Mapnik: many colours over a third of the view
    assert len(np.unique(basemap.reshape(-1, 3), axis=0)) > 200
    assert _changed(basemap, nothing) > area // 3

    _show_only(page, "Inspection sites")
    sites = _map_pixels(page)
    assert _near(sites, SITE_COLOUR) > 2000  # hundreds of sites drawn as discs
    assert _near(sites, STREET_COLOUR) == 0

    _show_only(page, "Streets")
    streets = _map_pixels(page)
    assert _near(streets, STREET_COLOUR) > 5000
    assert _near(streets, SITE_COLOUR) == 0

    _show_only(page, "Buildings")
    buildings = _map_pixels(page)
    assert _changed(buildings, nothing) > area // 10
    assert _near(buildings, SITE_COLOUR) == _near(buildings, STREET_COLOUR) == 0


def test_identify_shows_a_sites_attributes(
    page: Page, sample_site: SampleSite, screenshots: Path
) -> None:
    site = httpx.get(
        f"{sample_site.url}/collections/helsinki.sites/items", params={"limit": 1}
    ).json()
    _open_map(page, sample_site)
    _show_only(page, "Inspection sites", "Basemap")
    first = site["features"][0]
    lon, lat = first["geometry"]["coordinates"]
    page.evaluate(f"window.offmapsMap.jumpTo({{center: [{lon}, {lat}], zoom: 17}})")
    _map_pixels(page)
    # by keyboard: the button identifies what is at the map's centre
    page.get_by_role("button", name="Identify at the map centre").focus()
    page.keyboard.press("Enter")
    found = page.locator("#identify")
    assert found.locator("h3").first.inner_text() == "Inspection sites"
    shown = []  # the attributes of every feature identified (sites may share a spot)
    for section in found.locator("section").all():
        names = section.locator("dt").all_inner_texts()
        values = section.locator("dd").all_inner_texts()
        shown.append(dict(zip(names, values, strict=True)))
    assert str(first["properties"]["osm_id"]) in [one.get("osm_id") for one in shown]
    assert {"name", "osm_id"} <= set(shown[0])
    assert _near(_map_pixels(page), HIGHLIGHT_COLOUR) > 50  # and ringed on the map
    found.scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "webui-map-identify.png")
    # and with the mouse, on the same site
    page.evaluate("document.getElementById('identify').replaceChildren()")
    page.locator("#map").click()
    assert found.locator("h3").first.inner_text() == "Inspection sites"


def test_identify_shows_and_saves_a_sites_attachments(page: Page, sample_site: SampleSite) -> None:
    """A site with a photo: identify lists its attachments, shows the picture (fetched with the
    token) and saves it by keyboard."""
    form = {
        "grant_type": "password",
        "username": sample_site.user,
        "password": sample_site.password,
    }
    token = httpx.post(f"{sample_site.url}/oauth2/token", data=form).json()["access_token"]
    site = httpx.get(
        f"{sample_site.url}/collections/helsinki.sites/items", params={"limit": 1, "offset": 5}
    ).json()["features"][0]
    picture = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(picture, "JPEG")
    added = httpx.post(
        f"{sample_site.url}/collections/helsinki.sites/items/{site['id']}/attachments",
        files={"file": ("red.jpg", picture.getvalue(), "image/jpeg")},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert added.status_code == 201, added.text
    _open_map(page, sample_site)
    _show_only(page, "Inspection sites", "Basemap")
    lon, lat = site["geometry"]["coordinates"]
    page.evaluate(f"window.offmapsMap.jumpTo({{center: [{lon}, {lat}], zoom: 18}})")
    _map_pixels(page)
    page.get_by_role("button", name="Identify at the map centre").focus()
    page.keyboard.press("Enter")
    found = page.locator("#identify")
    save = found.get_by_role("button", name=re.compile(r"^Save red\.jpg"))
    save.wait_for(timeout=15_000)
    shown = found.locator("img.attachment[alt='red.jpg']")
    shown.wait_for(timeout=15_000)
    assert shown.evaluate("(img) => img.complete && img.naturalWidth") == 40
    with page.expect_download() as download:
        save.focus()
        page.keyboard.press("Enter")
    assert download.value.suggested_filename == "red.jpg"
    assert download.value.path().read_bytes() == picture.getvalue()


def _start_offline_job(site: SampleSite) -> str:
    # a small area of the sample map, taken offline by the editor through the API
    form = {"grant_type": "password", "username": site.user, "password": site.password}
    token = httpx.post(f"{site.url}/oauth2/token", data=form).json()["access_token"]
    area = area_from_bbox(24.944, 60.168, 24.946, 60.169)
    parameters = GenerateOfflineMapParameters(area_of_interest=area, max_scale=5000)
    response = httpx.post(
        f"{site.url}/api/maps/{site.map_id}/offline/jobs",
        json={"parameters": parameters.model_dump(mode="json")},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_jobs_are_followed_to_their_end_and_their_files_downloaded(
    page: Page, sample_site: SampleSite, screenshots: Path
) -> None:
    job_id = _start_offline_job(sample_site)
    _sign_in(page, sample_site, "/ui/jobs")
    page.wait_for_url("**/ui/jobs")
    row = page.locator(f"tr[data-job='{job_id}']")
    # the page follows the job by itself until it has ended
    row.locator("td.job-succeeded").wait_for(timeout=60_000)
    assert row.get_by_role("progressbar").get_attribute("value") == "1"
    assert not page.locator("th.owner").is_visible()  # an editor's own jobs only
    page.screenshot(path=screenshots / "webui-jobs.png")
    buttons = row.get_by_role("button")
    assert buttons.count() > 0
    with page.expect_download() as download:
        buttons.first.focus()
        page.keyboard.press("Enter")
    assert download.value.suggested_filename == "helsinki.gpkg"
    assert download.value.path().read_bytes().startswith(b"SQLite format 3\x00")
    assert httpx.get(f"{sample_site.url}/api/jobs").status_code == 401  # signed in only


def test_an_admin_sees_every_job_with_its_owner(page: Page, sample_site: SampleSite) -> None:
    job_id = _start_offline_job(sample_site)
    admin = SampleSite(sample_site.url, sample_site.map_id, user="admin")
    _sign_in(page, admin, "/ui/jobs")
    page.wait_for_url("**/ui/jobs")
    row = page.locator(f"tr[data-job='{job_id}']")
    row.wait_for()
    assert page.locator("th.owner").is_visible()
    assert row.locator("td").nth(2).inner_text() == "editor"


def test_an_expired_session_returns_to_sign_in_and_back_to_the_map(
    page: Page, sample_site: SampleSite
) -> None:
    _sign_in(page, sample_site)
    page.wait_for_url("**/ui/")
    page.evaluate(
        "() => { const s = JSON.parse(sessionStorage.getItem('offmaps.session'));"
        " s.expiresAt = 0; sessionStorage.setItem('offmaps.session', JSON.stringify(s)); }"
    )
    page.goto(f"{sample_site.url}/ui/map?id={sample_site.map_id}")
    page.wait_for_url("**/ui/signin?next=**")
    assert page.evaluate("sessionStorage.length") == 0
    page.get_by_label("User name").fill(sample_site.user)
    page.get_by_label("Password").fill(sample_site.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/ui/map?id={sample_site.map_id}")
    # the page names the map once its document is read: wait for it, then check it
    page.get_by_role("heading", level=1, name="Helsinki field inspections").wait_for()
    assert page.get_by_role("heading", level=1).inner_text() == "Helsinki field inspections"


def test_sign_in_goes_back_to_pages_of_the_ui_only(page: Page, sample_site: SampleSite) -> None:
    _sign_in(page, sample_site, "/ui/signin?next=//elsewhere.example/ui/")
    page.wait_for_url(f"{sample_site.url}/ui/")


def test_the_watch_sees_what_leaves_the_origin(
    page: Page, sample_site: SampleSite, watch: Watch
) -> None:
    page.goto(f"{sample_site.url}/ui/signin")
    # a resource the policy blocks: reported as a violation, and seen as a request
    page.evaluate("new Image().src = 'http://elsewhere.example/pixel.png'")
    page.wait_for_function("window.__cspViolations.length > 0")
    assert page.evaluate("window.__cspViolations") == ["img-src http://elsewhere.example/pixel.png"]
    page.evaluate("window.__cspViolations = []")
    # a navigation (no policy governs it), which resolves no name: seen as a request
    with pytest.raises(PlaywrightError):
        page.goto("http://elsewhere.example/")
    assert watch.foreign == ["http://elsewhere.example/pixel.png", "http://elsewhere.example/"]
    assert all("elsewhere.example" in error for error in watch.errors)
    watch.foreign.clear()
    watch.errors.clear()
