from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offmaps.schemas.changeset import ConflictPolicy
from offmaps.sync import MAX_COUNTER, Resolution, Side, Timestamp, resolve, resolve_delete

A = "a" * 32
EARLY = Timestamp(100, 0, A)
LATE = Timestamp(200, 0, "server")
CLIENT = {"status": "closed", "geom": "00", "name": "c"}
SERVER = {"status": "open", "geom": "01", "name": "s"}
CONFLICTS = ["status", "geom"]

timestamp = st.builds(
    Timestamp, st.integers(0, 5), st.integers(0, MAX_COUNTER), st.sampled_from(["server", A])
)


def test_server_wins_keeps_server_values() -> None:
    resolution = resolve(ConflictPolicy.SERVER_WINS, CONFLICTS, CLIENT, SERVER, LATE, EARLY)
    assert resolution == Resolution(
        Side.SERVER,
        {"status": "open", "geom": "01"},
        "server_wins: kept the server's status, geom",
    )


def test_client_wins_takes_client_values() -> None:
    resolution = resolve(ConflictPolicy.CLIENT_WINS, CONFLICTS, CLIENT, SERVER, EARLY, LATE)
    assert resolution.winner is Side.CLIENT
    assert resolution.values == {"status": "closed", "geom": "00"}
    assert resolution.reason == "client_wins: took the client's status, geom"


def test_manual_parks_without_values() -> None:
    resolution = resolve(ConflictPolicy.MANUAL, CONFLICTS, CLIENT, SERVER, EARLY, LATE)
    assert resolution == Resolution(None, {}, "manual: parked status, geom for review")


@pytest.mark.parametrize(
    ("client_time", "server_time", "winner"),
    [
        (LATE, EARLY, Side.CLIENT),
        (EARLY, LATE, Side.SERVER),
        (Timestamp(100, 1, A), Timestamp(100, 0, A), Side.CLIENT),
        (Timestamp(100, 0, "server"), Timestamp(100, 0, A), Side.CLIENT),
        (EARLY, EARLY, Side.SERVER),
    ],
)
def test_last_writer_wins_picks_later_timestamp(
    client_time: Timestamp, server_time: Timestamp, winner: Side
) -> None:
    policy = ConflictPolicy.LAST_WRITER_WINS
    resolution = resolve(policy, CONFLICTS, CLIENT, SERVER, client_time, server_time)
    assert resolution.winner is winner
    source = CLIENT if winner is Side.CLIENT else SERVER
    assert resolution.values == {name: source[name] for name in CONFLICTS}
    assert resolution.reason.startswith("last_writer_wins: ")


@pytest.mark.parametrize(
    ("policy", "client_deletes", "winner", "reason"),
    [
        (
            ConflictPolicy.SERVER_WINS,
            True,
            Side.SERVER,
            "server_wins: the server's update stands, the client's delete is dropped",
        ),
        (
            ConflictPolicy.CLIENT_WINS,
            True,
            Side.CLIENT,
            "client_wins: the client's delete stands, the server's update is dropped",
        ),
        (
            ConflictPolicy.CLIENT_WINS,
            False,
            Side.CLIENT,
            "client_wins: the client's update stands, the server's delete is dropped",
        ),
        (
            ConflictPolicy.MANUAL,
            False,
            None,
            "manual: parked the server's delete and the client's update for review",
        ),
    ],
)
def test_resolve_delete(
    policy: ConflictPolicy, client_deletes: bool, winner: Side | None, reason: str
) -> None:
    assert resolve_delete(policy, client_deletes, EARLY, LATE) == Resolution(winner, {}, reason)


def test_resolve_delete_last_writer_wins() -> None:
    policy = ConflictPolicy.LAST_WRITER_WINS
    assert resolve_delete(policy, True, LATE, EARLY).winner is Side.CLIENT
    assert resolve_delete(policy, False, EARLY, LATE).winner is Side.SERVER
    assert resolve_delete(policy, True, EARLY, EARLY).winner is Side.SERVER


SWAPPED = {Side.CLIENT: Side.SERVER, Side.SERVER: Side.CLIENT}


@given(timestamp, timestamp)
def test_last_writer_wins_is_deterministic_and_symmetric(a: Timestamp, b: Timestamp) -> None:
    policy = ConflictPolicy.LAST_WRITER_WINS
    first = resolve(policy, CONFLICTS, CLIENT, SERVER, a, b)
    assert first == resolve(policy, CONFLICTS, CLIENT, SERVER, a, b)
    swapped = resolve(policy, CONFLICTS, SERVER, CLIENT, b, a)
    assert first.winner is not None
    assert swapped.winner is not None
    if a == b:
        assert first.winner is swapped.winner is Side.SERVER
    else:
        assert swapped.winner is SWAPPED[first.winner]
        assert swapped.values == first.values
    assert resolve_delete(policy, True, a, b).winner is first.winner
