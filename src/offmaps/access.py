"""Who is calling and what they may do: principals, scopes and the sharing rules of items.

Layer 1 of DESIGN.md: pure values and rules, no I/O. The HTTP edge turns a token into a
:class:`Principal`; services, GraphQL and workers check access with the same functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from offmaps.errors import (
    AccessDeniedError,
    InsufficientScopeError,
    InvalidTokenError,
    InvalidUserError,
)

__all__ = [
    "IMPLIED_SCOPES",
    "Principal",
    "Scope",
    "anonymous_principal",
    "can_read",
    "check_can_read",
    "check_can_write",
    "check_scopes",
    "implied_scopes",
    "parse_scopes",
]


class Scope(StrEnum):
    """What a token lets its bearer do (docs/server.md#scopes)."""

    MAPS_READ = "maps:read"
    """See the web maps, layers, features and tiles shared with you."""
    MAPS_WRITE = "maps:write"
    """Create web maps, and change or delete your own."""
    FEATURES_EDIT = "features:edit"
    """Edit features of editable layers, online or by syncing an offline map."""
    OFFLINE_SYNC = "offline:sync"
    """Take maps offline and sync them: start generate jobs (each registers replicas), follow
    and download your jobs, and use your replicas (``/api/replicas``, ``/api/conflicts``).
    ``features:edit`` includes it, as ArcGIS's editing roles include taking maps offline; give
    it alone to someone who takes maps offline only to read them."""
    CACHE_READ = "cache:read"
    """See the tile caches, their statistics and your cache jobs, get presigned URLs to
    download their tiles, and export them (a job whose files you download)."""
    CACHE_WRITE = "cache:write"
    """Create, seed, clean and delete tile caches, upload tiles to them, and import tile
    archives into them (includes ``cache:read``)."""
    ADMIN = "admin"
    """Everything, on every item and every user's jobs and replicas."""


IMPLIED_SCOPES: Mapping[Scope, frozenset[Scope]] = MappingProxyType(
    {
        Scope.FEATURES_EDIT: frozenset({Scope.OFFLINE_SYNC}),
        Scope.CACHE_WRITE: frozenset({Scope.CACHE_READ}),
    }
)
"""Scopes that a scope includes: a token with ``features:edit`` may also take maps offline.
(``admin`` is checked apart: it passes every check.)"""


def implied_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """``scopes`` with every scope they include (:data:`IMPLIED_SCOPES`)."""
    found = {str(scope) for scope in scopes}
    for scope in list(found):
        if scope in IMPLIED_SCOPES:
            found.update(implied.value for implied in IMPLIED_SCOPES[Scope(scope)])
    return frozenset(found)


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """``scopes`` sorted and without duplicates, if every one is known.

    Raises:
        InvalidUserError: for an unknown scope.
    """
    known = {s.value for s in Scope}
    found = set()
    for scope in scopes:
        if scope not in known:
            names = ", ".join(s.value for s in Scope)
            raise InvalidUserError(f"unknown scope {str(scope)[:80]!r} (known: {names})")
        found.add(str(scope))
    return tuple(sorted(found))


def parse_scopes(text: str) -> tuple[str, ...]:
    """Scopes from a comma- or space-separated list, as :func:`check_scopes` returns them.

    Raises:
        InvalidUserError: for an unknown scope.
    """
    return check_scopes(part for part in re.split(r"[\s,]+", text) if part)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, a client, or nobody (anonymous).

    Attributes:
        subject: the user name (``client:ID`` for OAuth2 clients; ``anonymous`` for nobody).
        scopes: what the caller's token lets them do.
        groups: the groups the caller belongs to, for web map sharing.
        anonymous: whether the request came without a token.
    """

    subject: str
    scopes: frozenset[str]
    groups: frozenset[str] = frozenset()
    anonymous: bool = False

    def has(self, scope: str) -> bool:
        """Whether the token carries ``scope``, itself or through a scope that includes it
        (:data:`IMPLIED_SCOPES`; ``admin`` is not expanded here)."""
        return str(scope) in self.scopes or str(scope) in implied_scopes(self.scopes)


def anonymous_principal(scopes: Iterable[str]) -> Principal:
    """The caller without a token, holding ``scopes``."""
    return Principal("anonymous", frozenset(scopes), frozenset(), anonymous=True)


def can_read(
    principal: Principal, sharing_owner: str | None, sharing_groups: Iterable[str], public: bool
) -> bool:
    """Whether ``principal`` may see an item shared this way.

    ``admin`` sees everything. Otherwise the token needs ``maps:read``, and the item must be
    public, owned by the caller, or shared with one of their groups.
    """
    if principal.has(Scope.ADMIN):
        return True
    if not principal.has(Scope.MAPS_READ):
        return False
    if public:
        return True
    if principal.anonymous:
        return False
    return principal.subject == sharing_owner or not principal.groups.isdisjoint(sharing_groups)


def check_can_read(
    principal: Principal, sharing_owner: str | None, sharing_groups: Iterable[str], public: bool
) -> None:
    """Refuse unless :func:`can_read`.

    Raises:
        InvalidTokenError: an anonymous caller (they should log in).
        AccessDeniedError: the item is not shared with the caller.
    """
    if can_read(principal, sharing_owner, sharing_groups, public):
        return
    if principal.anonymous:
        raise InvalidTokenError("log in: this item is not public")
    raise AccessDeniedError("this item is not shared with you")


def check_can_write(principal: Principal, sharing_owner: str | None) -> None:
    """Refuse unless ``principal`` may change (or, with owner ``None``, create) an item.

    Writing needs ``maps:write`` and being the owner; ``admin`` may write anything.

    Raises:
        InvalidTokenError: an anonymous caller (they should log in).
        InsufficientScopeError: the token lacks ``maps:write``.
        AccessDeniedError: the caller does not own the item.
    """
    if principal.has(Scope.ADMIN):
        return
    if not principal.has(Scope.MAPS_WRITE):
        if principal.anonymous:
            raise InvalidTokenError("log in: this needs the maps:write scope")
        raise InsufficientScopeError(
            "this needs the maps:write scope", required=(Scope.MAPS_WRITE.value,)
        )
    if sharing_owner is not None and sharing_owner != principal.subject:
        raise AccessDeniedError("only the owner of this item may change it")
