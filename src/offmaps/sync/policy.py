"""Conflict policies: who wins when both sides changed the same thing.

A policy settles a true conflict (fields changed on both sides to different values, or a
delete that met an update) per map or per layer. ``MANUAL`` settles nothing: the conflict is
parked in the server's review queue with both versions and their base.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import assert_never

from offmaps.schemas.changeset import ConflictPolicy
from offmaps.sync.clock import Timestamp

__all__ = ["Resolution", "Side", "resolve", "resolve_delete"]


class Side(StrEnum):
    """A side of a sync: the device that uploaded the edit, or the server."""

    CLIENT = "client"
    SERVER = "server"


@dataclass(frozen=True)
class Resolution:
    """How a policy settled a conflict."""

    winner: Side | None
    """The side whose state stands, or ``None`` when the conflict is parked for review."""
    values: dict[str, object]
    """For an update conflict, the values to write for the conflicting fields: the client's
    when it wins, the server's when it wins, none when parked. Empty for a delete conflict."""
    reason: str
    """One line for people: the policy and what it did."""


def _later(client_time: Timestamp, server_time: Timestamp) -> Side:
    # equal timestamps: the server's state stands, as it is already there
    return Side.CLIENT if client_time > server_time else Side.SERVER


def _names(fields: Sequence[str]) -> str:
    return ", ".join(fields) if fields else "no fields"


def resolve(
    policy: ConflictPolicy,
    conflicts: Sequence[str],
    client: Mapping[str, object],
    server: Mapping[str, object],
    client_time: Timestamp,
    server_time: Timestamp,
) -> Resolution:
    """Settle a conflict between a client's update and the server's row.

    Args:
        policy: The policy of the row's layer.
        conflicts: The fields changed on both sides to different values.
        client: The client's values after its edit.
        server: The server's row as it is now.
        client_time: When the client made its edit.
        server_time: When the server's row was last edited.

    Returns:
        The winner and the values to write for the conflicting fields (a field missing
        from the winner's values is left out). ``LAST_WRITER_WINS`` picks the later
        timestamp; on equal timestamps the server wins.
    """
    names = _names(conflicts)
    match policy:
        case ConflictPolicy.MANUAL:
            return Resolution(None, {}, f"{policy}: parked {names} for review")
        case ConflictPolicy.SERVER_WINS:
            winner, why = Side.SERVER, ""
        case ConflictPolicy.CLIENT_WINS:
            winner, why = Side.CLIENT, ""
        case ConflictPolicy.LAST_WRITER_WINS:
            winner = _later(client_time, server_time)
            if client_time == server_time:
                why = " (same time)"
            else:
                why = f" (its edit is later: {max(client_time, server_time)})"
        case _:
            assert_never(policy)
    source = client if winner is Side.CLIENT else server
    values = {name: source[name] for name in conflicts if name in source}
    verb = "took" if winner is Side.CLIENT else "kept"
    return Resolution(winner, values, f"{policy}: {verb} the {winner}'s {names}{why}")


def resolve_delete(
    policy: ConflictPolicy,
    client_deletes: bool,
    client_time: Timestamp,
    server_time: Timestamp,
) -> Resolution:
    """Settle a conflict between a delete on one side and an update on the other.

    Args:
        policy: The policy of the row's layer.
        client_deletes: ``True`` when the client deleted the row the server updated,
            ``False`` when the client updated the row the server deleted.
        client_time: When the client made its edit.
        server_time: When the server made its edit.

    Returns:
        The side whose state stands (the row deleted, or the row as updated), with no
        values. ``LAST_WRITER_WINS`` picks the later timestamp; on equal timestamps the
        server wins.
    """
    match policy:
        case ConflictPolicy.MANUAL:
            winner: Side | None = None
        case ConflictPolicy.SERVER_WINS:
            winner = Side.SERVER
        case ConflictPolicy.CLIENT_WINS:
            winner = Side.CLIENT
        case ConflictPolicy.LAST_WRITER_WINS:
            winner = _later(client_time, server_time)
        case _:
            assert_never(policy)
    deleter, updater = (Side.CLIENT, Side.SERVER) if client_deletes else (Side.SERVER, Side.CLIENT)
    if winner is None:
        outcome = f"parked the {deleter}'s delete and the {updater}'s update for review"
    elif winner is deleter:
        outcome = f"the {deleter}'s delete stands, the {updater}'s update is dropped"
    else:
        outcome = f"the {updater}'s update stands, the {deleter}'s delete is dropped"
    return Resolution(winner, {}, f"{policy}: {outcome}")
