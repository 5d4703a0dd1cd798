"""The caller of a request, and the scopes a route needs, as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from offmaps.access import (
    Principal,
    Scope,
    check_scopes,
)
from offmaps.errors import (
    InsufficientScopeError,
    InvalidTokenError,
)
from offmaps.server.auth.tokens import TokenService

__all__ = ["current_principal", "require_scopes"]


def current_principal(request: Request) -> Principal:
    """The caller of ``request``, from its ``Authorization: Bearer`` header.

    Without the header the caller is anonymous. The :class:`TokenService` is
    ``request.app.state.tokens``.

    Raises:
        InvalidTokenError: the header is not ``Bearer <token>``, or the token is not valid.
    """
    tokens: TokenService = request.app.state.tokens
    header = request.headers.get("authorization")
    if header is None:
        return tokens.anonymous
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidTokenError("the Authorization header must be 'Bearer <token>'")
    return tokens.verify(token)


def require_scopes(*scopes: str) -> Callable[[Principal], Principal]:
    """A dependency giving the caller if their token has every one of ``scopes`` (or ``admin``).

    Raises:
        InvalidUserError: at definition, for an unknown scope.
    """
    required = check_scopes(scopes)

    def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        missing = [s for s in required if not principal.has(s)]
        if missing and not principal.has(Scope.ADMIN):
            names = " ".join(missing)
            if principal.anonymous:
                raise InvalidTokenError(f"log in: this needs the {names} scope")
            raise InsufficientScopeError(f"this needs the {names} scope", required=required)
        return principal

    return dependency
