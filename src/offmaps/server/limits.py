"""Bounded concurrency for classes of routes, so that tiles never wait behind sync.

One ``offmaps serve`` process answers every request on one event loop, and runs synchronous
handlers (and synchronous dependencies) in anyio's default thread pool: 40 threads shared by
every route. Sync requests (uploads merged under their feature service's lock, downloads of
thousands of rows) and offline map requests hold their threads for long, most of them waiting
on the same locks, and compete with the event loop for the GIL: twenty devices syncing at once
can hold half the pool, and a few more all of it, while a tile needs a free thread for each of
its own synchronous steps.

:class:`RouteLimits` gives a class of routes its own bounded number of slots. A request of the
class waits for a free slot before it enters the application (on the event loop, holding no
thread), and keeps it until its response is sent; the others queue in order. So no more than
that many requests of the class ever hold threads of the shared pool or run at once, whatever
the number of devices, and tiles, features and everything else keep the rest of the pool.
Devices over the limit are slowed, never refused: their work runs under the same feature
service lock anyway, so more at once would not finish sooner.

:data:`SYNC_ROUTES` is the class of the sync API (``/api/replicas/...``, ``/api/conflicts...``)
and the offline map API of a web map (``/api/maps/{id}/offline/...``: capabilities, estimates,
starting jobs). docs/performance.md says how they were measured.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["SYNC_ROUTES", "RouteClass", "RouteLimits"]


@dataclass(frozen=True)
class RouteClass:
    """Routes that share a bounded number of slots.

    Attributes:
        name: what the class is called (in errors and statistics).
        path: the request paths of the class.
        slots: how many of its requests may be in the application at once.
    """

    name: str
    path: re.Pattern[str]
    slots: int


SYNC_ROUTES = RouteClass(
    "sync",
    re.compile(r"^/api/(?:replicas/|conflicts(?:/|$)|maps/[^/]+/offline/)"),
    slots=8,
)
"""Sync and offline map requests: 8 at once, a fifth of the shared thread pool."""


class RouteLimits:
    """Let at most ``slots`` requests of each route class into ``app`` at once.

    Requests of no class pass straight through. A request matching several classes counts
    against the first.

    Args:
        app: the application behind.
        classes: the route classes and their slots.
    """

    def __init__(self, app: ASGIApp, classes: Sequence[RouteClass] = (SYNC_ROUTES,)) -> None:
        for route_class in classes:
            if route_class.slots < 1:
                raise ValueError(f"route class {route_class.name!r} needs at least one slot")
        self.app = app
        self.classes = tuple(classes)
        self.limiters = {c.name: anyio.CapacityLimiter(c.slots) for c in self.classes}
        """The slots of each class, by name: ``borrowed_tokens`` are the requests inside."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            for route_class in self.classes:
                if route_class.path.match(path):
                    # a borrower per request: one task may send several (HTTP/2, tests)
                    limiter = self.limiters[route_class.name]
                    borrower = object()
                    await limiter.acquire_on_behalf_of(borrower)
                    try:
                        await self.app(scope, receive, send)
                    finally:
                        limiter.release_on_behalf_of(borrower)
                    return
        await self.app(scope, receive, send)
