"""The caller of a request, and the scopes a route needs, as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Iterable
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

__all__ = [
    "PRINCIPAL_STATE",
    "WRITE_METHODS",
    "ScopeRequirement",
    "current_principal",
    "principal_of",
    "require_scopes",
]

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""The methods of write requests: checked for auth before anything reads their body."""

PRINCIPAL_STATE = "offmaps_principal"
"""The request state attribute holding the caller, once known (the write gate sets it)."""


def principal_of(tokens: TokenService, authorization: str | None) -> Principal:
    """The caller a request's ``Authorization`` header stands for (anonymous without one).

    Raises:
        InvalidTokenError: the header is not ``Bearer <token>``, or the token is not valid.
    """
    if authorization is None:
        return tokens.anonymous
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidTokenError("the Authorization header must be 'Bearer <token>'")
    return tokens.verify(token)


def current_principal(request: Request) -> Principal:
    """The caller of ``request``, from its ``Authorization: Bearer`` header.

    Without the header the caller is anonymous. The :class:`TokenService` is
    ``request.app.state.tokens``; a caller the write gate found already is not verified again.

    Raises:
        InvalidTokenError: the header is not ``Bearer <token>``, or the token is not valid.
    """
    known = getattr(request.state, PRINCIPAL_STATE, None)
    if isinstance(known, Principal):
        return known
    tokens: TokenService = request.app.state.tokens
    principal = principal_of(tokens, request.headers.get("authorization"))
    setattr(request.state, PRINCIPAL_STATE, principal)
    return principal


class ScopeRequirement:
    """What a route needs of its caller: a FastAPI dependency giving the caller, and a rule
    the write gate (:class:`offmaps.server.auth.WriteGate`) checks before the body is read.

    Args:
        scopes: scopes the caller's token must have (``admin`` has them all).
        signed_in: refuse anonymous callers whatever scopes they are granted.
        methods: the methods the requirement applies to (default: all of the route's).
        any_of: one of ``scopes`` is enough (routes shared by two kinds of work, such as
            the job routes).

    Raises:
        InvalidUserError: an unknown scope.
    """

    def __init__(
        self,
        scopes: Iterable[str],
        *,
        signed_in: bool = False,
        methods: Iterable[str] = (),
        any_of: bool = False,
    ) -> None:
        self.scopes = check_scopes(scopes)
        self.signed_in = signed_in
        self.methods = frozenset(m.upper() for m in methods)
        self.any_of = any_of

    def applies_to(self, method: str) -> bool:
        """Whether a request of ``method`` must meet the requirement."""
        return not self.methods or method.upper() in self.methods

    def check(self, principal: Principal, method: str) -> None:
        """Refuse ``principal`` unless they meet the requirement for a ``method`` request.

        Raises:
            InvalidTokenError: an anonymous caller (they should log in).
            InsufficientScopeError: the token lacks a scope.
        """
        if not self.applies_to(method) or principal.has(Scope.ADMIN):
            return
        missing = [s for s in self.scopes if not principal.has(s)]
        if self.any_of and len(missing) < len(self.scopes):
            missing = []
        if principal.anonymous and (self.signed_in or missing):
            names = " ".join(self.scopes)
            raise InvalidTokenError(f"log in: this needs a signed-in user with {names}")
        if missing:
            names = " or ".join(missing) if self.any_of else " ".join(missing)
            raise InsufficientScopeError(f"this needs the {names} scope", required=self.scopes)

    def __call__(
        self, request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Principal:
        self.check(principal, request.method)
        return principal

    def __repr__(self) -> str:
        return (
            f"ScopeRequirement({list(self.scopes)!r}, signed_in={self.signed_in}, "
            f"methods={sorted(self.methods)!r}, any_of={self.any_of})"
        )


def require_scopes(
    *scopes: str, signed_in: bool = False, methods: Iterable[str] = (), any_of: bool = False
) -> ScopeRequirement:
    """A dependency giving the caller if their token has every one of ``scopes`` (with
    ``any_of``, one of them; ``admin`` has them all); with ``signed_in``, never an anonymous
    caller; with ``methods``, only for requests of those methods. Put it in a route's (or
    router's) ``dependencies`` so the write gate checks it before the body is read.

    Raises:
        InvalidUserError: at definition, for an unknown scope.
    """
    return ScopeRequirement(scopes, signed_in=signed_in, methods=methods, any_of=any_of)
