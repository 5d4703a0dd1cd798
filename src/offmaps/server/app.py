"""``create_app(settings)``: the map server as one FastAPI application."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import RouteContext
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offmaps import __version__
from offmaps.access import Principal
from offmaps.errors import OffmapsError
from offmaps.server.auth import (
    WRITE_METHODS,
    GatedRoute,
    TokenService,
    WriteGate,
    auth_router,
    current_principal,
)
from offmaps.server.fastpath import TileFastPath
from offmaps.server.graphql import graphql_router
from offmaps.server.limits import RouteLimits
from offmaps.server.links import base_url
from offmaps.server.metrics import metrics_router
from offmaps.server.openapi import install_docs, install_openapi
from offmaps.server.problems import install_problem_handlers, problem_response
from offmaps.server.ratelimit import WriteRateLimiter
from offmaps.server.rest.areas import areas_router
from offmaps.server.rest.attachments import attachments_router
from offmaps.server.rest.caches import caches_router
from offmaps.server.rest.deps import get_catalog
from offmaps.server.rest.features import features_router
from offmaps.server.rest.offline import offline_router
from offmaps.server.rest.storage import storage_router
from offmaps.server.rest.sync import sync_router
from offmaps.server.rest.tiles import tiles_router
from offmaps.server.rest.webmaps import webmaps_router
from offmaps.server.webui import install_webui
from offmaps.services import Services, build_services
from offmaps.settings import ServerSettings

__all__ = ["CLEANUP_EVERY_S", "CONFORMANCE", "create_app"]

_log = logging.getLogger(__name__)

CONFORMANCE = (
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/landing-page",
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/json",
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-common-2/1.0/conf/collections",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/create-replace-delete",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/update",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/features",
    "http://www.opengis.net/spec/ogcapi-features-5/1.0/conf/schemas",
    "http://www.opengis.net/spec/ogcapi-features-5/1.0/conf/core-roles-features",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/oas30",
)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by header or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLargeError
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLargeError:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(413, f"the request body is over {self.limit:,} bytes")
        await response(scope, receive, send)


class _BodyTooLargeError(Exception):
    pass


def _check_tile_access(
    request: Request, principal: Annotated[Principal, Depends(current_principal)]
) -> None:
    # tile layers are read through web maps, like feature collections
    name = request.path_params.get("name")
    if name is not None:
        get_catalog(request).check_tiles(principal, str(name))


def _write_gate_problems(route: RouteContext, method: str) -> tuple[int, ...]:
    # the write gate answers a gated write request before its route: a bad token, the rate limit
    gated = isinstance(route.original_route, GatedRoute) and method in WRITE_METHODS
    return (401, 429) if gated else ()


CLEANUP_EVERY_S = 300.0
"""How often a server removes what it has kept longer than ``job_keep_s`` (at most)."""


async def _clean_periodically(services: Services) -> None:
    """Remove ended jobs, their files and stale uploads once they are older than
    ``job_keep_s``, looking every :data:`CLEANUP_EVERY_S` (or a quarter of the age, if less)."""
    every = min(CLEANUP_EVERY_S, services.settings.job_keep_s / 4)
    while True:
        await asyncio.sleep(every)
        try:
            await run_in_threadpool(services.cleanup)
        except (OffmapsError, OSError):  # a failing store: log it, try again next round
            _log.exception("cannot remove expired jobs and uploads")


async def _refresh_areas_periodically(services: Services) -> None:
    """Start the packaging of every preplanned map area whose scheduled refresh is due,
    looking every ``area_scheduler_tick_s``; each due refresh is claimed by one process."""
    while True:
        await asyncio.sleep(services.settings.area_scheduler_tick_s)
        try:
            await run_in_threadpool(services.areas.refresh_due, time.time())
        except (OffmapsError, OSError):  # a failing store: log it, try again next round
            _log.exception("cannot start the scheduled refreshes of map areas")


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """The map server for ``settings`` (by default from ``OFFMAPS_*`` environment variables)."""
    settings = settings or ServerSettings()
    services = build_services(settings)
    tokens = TokenService(settings, settings.data_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_clean_periodically(services))]
        if settings.area_scheduler:
            tasks.append(asyncio.create_task(_refresh_areas_periodically(services)))
        yield
        for task in tasks:
            task.cancel()
        services.close()

    app = FastAPI(
        title="offmaps",
        version=__version__,
        description="Web maps, feature and tile services, ready to be taken offline.",
        lifespan=lifespan,
        docs_url=None,  # served from the package by install_docs, not from a CDN
        redoc_url=None,
    )
    app.state.services = services
    app.state.tile_sources = services.catalog.tile_sources
    app.state.tokens = tokens
    # write requests' callers, checked by GatedRoute routes before a body is read
    app.state.write_gate = WriteGate(tokens, WriteRateLimiter(settings.limits))
    app.state.public_url = settings.public_url
    install_problem_handlers(app)

    @app.get("/", summary="Landing page", tags=["ogc"])
    def landing(request: Request) -> dict[str, Any]:
        base = base_url(request)
        return {
            "title": "offmaps",
            "description": "Web maps, feature and tile services, ready to be taken offline.",
            "links": [
                {"rel": "self", "type": "application/json", "href": f"{base}/"},
                {
                    "rel": "service-desc",
                    "type": "application/vnd.oai.openapi+json;version=3.0",
                    "href": f"{base}/openapi.json",
                },
                {"rel": "service-doc", "type": "text/html", "href": f"{base}/docs"},
                {
                    "rel": "conformance",
                    "type": "application/json",
                    "href": f"{base}/conformance",
                },
                {"rel": "data", "type": "application/json", "href": f"{base}/collections"},
                {
                    "rel": "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes",
                    "type": "application/json",
                    "href": f"{base}/tileMatrixSets",
                },
            ],
        }

    @app.get("/conformance", summary="Conformance classes", tags=["ogc"])
    def conformance() -> dict[str, list[str]]:
        return {"conformsTo": list(CONFORMANCE)}

    catalog = services.catalog
    app.include_router(auth_router(tokens, services.users))
    app.include_router(features_router())
    app.include_router(attachments_router())
    app.include_router(tiles_router(dependencies=[Depends(_check_tile_access)]))
    app.include_router(webmaps_router())
    app.include_router(offline_router())
    app.include_router(areas_router())
    app.include_router(caches_router())
    app.include_router(storage_router())
    app.include_router(metrics_router())
    app.include_router(sync_router())
    app.include_router(graphql_router())  # auth per root field, before anything runs
    install_openapi(app, rules=[_write_gate_problems])
    install_docs(app)
    install_webui(app)  # the pages under /ui, and browsers asking for / sent there
    app.add_middleware(RouteLimits)  # sync and offline requests in their own slots
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(
        TileFastPath, sources=catalog.tile_sources, public=catalog.public_tile_layers
    )
    return app
