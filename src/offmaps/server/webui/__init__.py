"""The web UI: plain HTML pages and small ES modules served by ``offmaps serve`` under ``/ui``.

Every file the pages load comes from this package (:data:`STATIC_DIR`): our own modules and
styles, and MapLibre GL JS copied from npm by ``webui/build.mjs`` (``vendor.json`` lists the
copies with their versions and SHA-256). Nothing is loaded from the internet, so the pages work on
a laptop with no network (docs/webui.md).

The pages hold no data: they call the API with the bearer token of the signed-in user, kept in
the tab's ``sessionStorage`` (gone with the tab, never in ``localStorage`` nor a URL). As the
token travels in a header and never in a cookie, a page of another site cannot make requests
as the user (no CSRF). Pages and their files are sent with :data:`CONTENT_SECURITY_POLICY`: scripts
only from this server and no inline script or style.

An API route the pages need, which no other router had, comes with them: ``GET /api/me`` (the
caller, their scopes and groups); the jobs page lists ``GET /api/jobs`` (server/rest/offline.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as ASGIScope

from offmaps.access import implied_scopes
from offmaps.server.rest.deps import PrincipalDep

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "PAGES",
    "SECURITY_HEADERS",
    "STATIC_DIR",
    "UI_PREFIX",
    "LandingNegotiation",
    "install_webui",
]

UI_PREFIX = "/ui"
"""Where the pages are served."""
STATIC_DIR = Path(__file__).parent / "static"
"""The pages' scripts, styles and vendored libraries, served under ``/ui/static``."""
_PAGES_DIR = Path(__file__).parent / "pages"

PAGES = {
    "": "home.html",
    "signin": "signin.html",
    "map": "map.html",
    "jobs": "jobs.html",
    "conflicts": "conflicts.html",
    "caches": "caches.html",
    "areas": "areas.html",
    "offline": "offline.html",
}
"""The pages, by their path under :data:`UI_PREFIX`, and their HTML file."""

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "font-src 'self'",
        "connect-src 'self'",
        # MapLibre's tile workers: a module script of this server (no blob: needed)
        "worker-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
"""The policy of the pages: everything from this server, no inline script, no plug-in, no frame."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
"""The headers of every page and file of the web UI."""


class _UIStaticFiles(StaticFiles):
    """The UI's files, with :data:`SECURITY_HEADERS`."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(SECURITY_HEADERS)
        # our modules change with the package: revalidate (ETag) rather than keep stale copies
        response.headers["Cache-Control"] = "no-cache"
        return response


def _wants_html(accept: str) -> bool:
    """Whether an ``Accept`` header asks for HTML before JSON (a browser's navigation)."""
    best: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (item.strip() for item in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        best[media.lower()] = max(best.get(media.lower(), 0.0), quality)
    html = best.get("text/html", 0.0)
    return html > 0 and html >= best.get("application/json", 0.0)


class LandingNegotiation:
    """``GET /`` from a browser (``Accept`` preferring ``text/html``) goes to the web UI;
    other clients get the JSON landing page (OGC API Common) as before."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/" and scope["method"] in {"GET", "HEAD"}:
            headers = dict(scope["headers"])
            if _wants_html(headers.get(b"accept", b"").decode("latin-1")):
                # relative: right behind a proxy that serves the server under a path too
                response = RedirectResponse(f"{UI_PREFIX[1:]}/", status_code=303)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _page_route(router: APIRouter, path: str, html: str) -> None:
    @router.get(f"{UI_PREFIX}/{path}", include_in_schema=False, name=f"webui:{path or 'home'}")
    def page() -> HTMLResponse:
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        return HTMLResponse(html, headers=headers)


_HEADER_MARK = "<!-- offmaps:header -->"
"""Where a page takes the top bar every signed-in page shares (``pages/_header.html``)."""


def _page_html(path: str, name: str) -> str:
    """A page's HTML with the shared top bar in place, its own link marked current."""
    html = (_PAGES_DIR / name).read_text(encoding="utf-8")
    header = (_PAGES_DIR / "_header.html").read_text(encoding="utf-8")
    link = f'href="{path or "./"}"'
    header = header.replace(f"<a {link}>", f'<a {link} aria-current="page">', 1)
    return html.replace(_HEADER_MARK, header.rstrip("\n"), 1)


def _router() -> APIRouter:
    router = APIRouter()
    for path, name in PAGES.items():
        _page_route(router, path, _page_html(path, name))

    @router.get(UI_PREFIX, include_in_schema=False)
    def ui_root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PREFIX[1:]}/", status_code=308)

    @router.get("/api/me", summary="The caller: name, scopes and groups", tags=["auth"])
    def me(principal: PrincipalDep) -> dict[str, Any]:
        return {
            "subject": principal.subject,
            "anonymous": principal.anonymous,
            "scopes": sorted(principal.scopes),
            "implied_scopes": sorted(implied_scopes(principal.scopes) - principal.scopes),
            "groups": sorted(principal.groups),
        }

    return router


def install_webui(app: FastAPI) -> None:
    """Serve the web UI's pages and files on ``app`` with ``GET /api/me``,
    and send browsers asking for ``/`` to the UI."""
    app.include_router(_router())
    app.mount(f"{UI_PREFIX}/static", _UIStaticFiles(directory=STATIC_DIR), name="webui-static")
    app.add_middleware(LandingNegotiation)
