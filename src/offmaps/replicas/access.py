"""Who may sync a replica and settle its conflicts: the same rules for REST and GraphQL.

A replica is synced by the user who took it offline (its owner) or an admin, who alone may use
replicas registered without an owner; others are told it does not exist, so ids do not leak.
The review queue shows a user their own conflicts (admins every one); settling one needs
``features:edit``.
"""

from __future__ import annotations

from offmaps.access import Principal, Scope
from offmaps.errors import (
    ConflictNotFoundError,
    InsufficientScopeError,
    InvalidTokenError,
    ReplicaNotFoundError,
)
from offmaps.state.replicas import Replica, ReplicaRegistry

__all__ = ["check_can_resolve", "replica_for", "review_owner"]


def replica_for(
    replicas: ReplicaRegistry, replica_id: str, principal: Principal, scope: Scope
) -> Replica:
    """Replica ``replica_id`` if ``principal`` may use it for work needing ``scope``.

    Raises:
        ReplicaNotFoundError: no such replica, or one of another user.
        InvalidTokenError: an anonymous caller.
        InsufficientScopeError: the caller's token lacks ``scope``.
    """
    replica = replicas.get(replica_id)
    if principal.has(Scope.ADMIN):
        return replica
    if principal.anonymous:
        raise InvalidTokenError("syncing needs a signed-in user: log in first")
    if replica.owner is None or replica.owner != principal.subject:
        raise ReplicaNotFoundError(f"no replica {replica.id!r}")
    if not principal.has(scope):
        raise InsufficientScopeError(
            f"syncing needs the {scope.value} scope", required=(scope.value,)
        )
    return replica


def review_owner(principal: Principal) -> str | None:
    """Whose conflicts ``principal`` sees: their own, or every owner's (``None``) for admins.

    Raises:
        InvalidTokenError: an anonymous caller.
    """
    if principal.has(Scope.ADMIN):
        return None
    if principal.anonymous:
        raise InvalidTokenError("the review queue needs a signed-in user")
    return principal.subject


def check_can_resolve(principal: Principal, conflict_id: str) -> None:
    """Refuse to settle a conflict unless the caller may edit features (or is an admin).

    Raises:
        ConflictNotFoundError: the caller may not settle conflicts (as if there were none).
    """
    if not principal.has(Scope.FEATURES_EDIT) and not principal.has(Scope.ADMIN):
        raise ConflictNotFoundError(f"no conflict {conflict_id[:40]!r}")
