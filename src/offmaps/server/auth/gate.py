"""The write gate: who sends a write request, and may they, before anything reads its body.

FastAPI reads and parses a request's body (JSON, multipart forms) before it runs a route's
dependencies, so a malformed body would be answered 422 (or 400) before a missing token is
answered 401, telling an anonymous caller about a route's body and letting them make the server
parse anything. Routes of :class:`GatedRoute` (``APIRouter(route_class=GatedRoute)``) run the
application's :class:`WriteGate` (``app.state.write_gate``) once the router has chosen them and
before their handler reads anything: for a write request (``POST``, ``PUT``, ``PATCH``,
``DELETE``) it

1. finds the caller from the ``Authorization`` header (401 for a bad token),
2. counts the request against the write rate limit of the caller (``user:NAME``, or
   ``ip:ADDRESS`` without a valid token): 429 with ``Retry-After`` over it,
3. checks the route's :class:`~offmaps.server.auth.ScopeRequirement` (in its or its router's
   ``dependencies``): 401 for an anonymous caller, 403 for a missing scope,

and only then hands the request to the route. The caller it found is kept in the request's
state, so the route's dependencies do not verify the token again. Read requests pass untouched.
"""

from __future__ import annotations

import functools

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from offmaps.access import Principal
from offmaps.errors import InvalidTokenError, OffmapsError
from offmaps.server.auth.dependencies import (
    PRINCIPAL_STATE,
    WRITE_METHODS,
    ScopeRequirement,
    principal_of,
)
from offmaps.server.auth.tokens import TokenService
from offmaps.server.problems import domain_problem
from offmaps.server.ratelimit import WriteRateLimiter

__all__ = ["GatedRoute", "WriteGate", "requirements_of"]


def requirements_of(route: APIRoute) -> tuple[ScopeRequirement, ...]:
    """The scope requirements among a route's dependencies (its own and its router's, at any
    depth)."""
    found: list[ScopeRequirement] = []

    def visit(dependant: Dependant) -> None:
        for sub in dependant.dependencies:
            if isinstance(sub.call, ScopeRequirement):
                found.append(sub.call)
            visit(sub)

    visit(route.dependant)
    return tuple(found)


class WriteGate:
    """Checks the caller of write requests for :class:`GatedRoute` routes.

    Args:
        tokens: verifies bearer tokens.
        limiter: the write rate limit.
    """

    def __init__(self, tokens: TokenService, limiter: WriteRateLimiter) -> None:
        self.tokens = tokens
        self.limiter = limiter

    def admit(self, scope: Scope, requirements: tuple[ScopeRequirement, ...]) -> Principal:
        """The caller of the write request ``scope``, counted and checked.

        Raises:
            InvalidTokenError: a bad token, or an anonymous caller where a requirement needs
                one signed in.
            RateLimitError: over the write rate limit.
            InsufficientScopeError: a scope is missing.
        """
        raw = dict(scope["headers"]).get(b"authorization")
        try:
            principal = principal_of(self.tokens, None if raw is None else raw.decode("latin-1"))
        except InvalidTokenError:
            self.limiter.hit(f"ip:{_client_host(scope)}")  # guessing tokens is writing too
            raise
        if principal.anonymous:
            self.limiter.hit(f"ip:{_client_host(scope)}")
        else:
            self.limiter.hit(f"user:{principal.subject}")
        for requirement in requirements:
            requirement.check(principal, scope["method"])
        return principal


class GatedRoute(APIRoute):
    """A route whose write requests pass the application's :class:`WriteGate` before the
    route reads their body (without a gate in ``app.state.write_gate``, its dependencies
    still check the caller, after the body)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Admit a write request through the gate, then handle it as any route."""
        gate = _gate_of(scope)
        if gate is not None and scope["method"] in WRITE_METHODS & (self.methods or set()):
            try:
                principal = gate.admit(scope, self.requirements)
            except OffmapsError as exc:
                await domain_problem(exc)(scope, receive, send)
                return
            scope.setdefault("state", {})[PRINCIPAL_STATE] = principal
        await super().handle(scope, receive, send)

    @functools.cached_property
    def requirements(self) -> tuple[ScopeRequirement, ...]:
        """The scope requirements among the route's dependencies (its router's too)."""
        return requirements_of(self)


def _gate_of(scope: Scope) -> WriteGate | None:
    app = scope.get("app")
    gate = getattr(getattr(app, "state", None), "write_gate", None)
    return gate if isinstance(gate, WriteGate) else None


def _client_host(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
