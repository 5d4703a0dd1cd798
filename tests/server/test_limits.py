"""Sync and offline requests have their own bounded slots: tiles never wait behind them."""

from __future__ import annotations

import re
import threading
from typing import cast

import anyio
import httpx
import morecantile
import pytest
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from offmaps.schemas import WebMap
from offmaps.server.limits import SYNC_ROUTES, RouteClass, RouteLimits
from offmaps.services import Services
from offmaps.state.replicas import Replica
from tests.serverkit import Server, webmap_document

pytestmark = pytest.mark.anyio

VT = "city-vt"  # vector tiles built from the features: answered by the route, in the pool
TILE = morecantile.tms.get("WebMercatorQuad").tile(24.94, 60.17, 12)
TILE_URL = f"/tiles/{VT}/{TILE.z}/{TILE.x}/{TILE.y}"
SHARED_POOL = 40  # anyio's default thread limiter


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_tile_is_answered_while_more_devices_sync_than_the_pool_has_threads(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = webmap_document(
        title="Private",
        public=True,
        layers=[{"type": "vector_tile", "id": "vt", "title": "Tiles", "service": VT}],
        tables=[],
    )
    server.catalog.webmaps.replace(server.private_map, WebMap.model_validate(document))
    headers = server.token("editor")  # signed in: the tile goes through the route
    app = cast(FastAPI, server.client.app)
    services: Services = app.state.services
    registry = services.replicas
    inside: list[str] = []
    release = threading.Event()
    known = registry.get

    def held(replica_id: str) -> Replica:
        # a sync handler that holds its thread (a long merge, a lock) until released
        inside.append(replica_id)
        release.wait(timeout=120)
        return known(replica_id)

    monkeypatch.setattr(registry, "get", held)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answers: list[int] = []

        async def sync_request() -> None:
            answer = await client.get(f"/api/replicas/{'ab' * 16}", headers=headers)
            answers.append(answer.status_code)

        async with anyio.create_task_group() as devices:
            for _ in range(SHARED_POOL + 5):
                devices.start_soon(sync_request)
            while len(inside) < SYNC_ROUTES.slots:
                await anyio.sleep(0.01)
            try:
                with anyio.fail_after(60):  # a hang detector, not a timing
                    tile = await client.get(TILE_URL, headers=headers)
                assert tile.status_code == 200
                assert tile.headers["content-type"] == "application/vnd.mapbox-vector-tile"
                assert len(inside) == SYNC_ROUTES.slots  # the other devices wait their turn
            finally:
                release.set()
    assert len(answers) == SHARED_POOL + 5  # every device is answered in the end
    assert set(answers) == {404}  # (no such replica)


async def test_other_requests_pass_while_a_class_has_every_slot_taken() -> None:
    gate = anyio.Event()
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["path"])
        if scope["path"] == "/slow/1":
            await gate.wait()

    async def nothing() -> Message:
        return {}

    async def drop(message: Message) -> None:
        pass

    limits = RouteLimits(app, [RouteClass("slow", re.compile("^/slow/"), slots=1)])

    async def call(path: str) -> None:
        await limits({"type": "http", "path": path, "headers": []}, nothing, drop)

    async with anyio.create_task_group() as group:
        group.start_soon(call, "/slow/1")
        while "/slow/1" not in seen:
            await anyio.sleep(0.01)
        group.start_soon(call, "/slow/2")
        await call("/tiles/a/0/0/0")
        assert seen == ["/slow/1", "/tiles/a/0/0/0"]  # /slow/2 waits for the slot
        assert limits.limiters["slow"].borrowed_tokens == 1
        gate.set()
    assert seen == ["/slow/1", "/tiles/a/0/0/0", "/slow/2"]
    assert limits.limiters["slow"].borrowed_tokens == 0


def test_a_route_class_needs_a_slot() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        pass

    with pytest.raises(ValueError, match="at least one slot"):
        RouteLimits(app, [RouteClass("none", SYNC_ROUTES.path, slots=0)])
