from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offmaps.errors import InvalidChangeSetError
from offmaps.sync import (
    MAX_COUNTER,
    MAX_WALL_MS,
    HybridClock,
    Timestamp,
    parse_timestamp,
    timestamp_from_ms,
)

A = "a" * 32
B = "0123456789abcdef" * 2

node = st.sampled_from(["server", A, B])
timestamp = st.builds(Timestamp, st.integers(0, MAX_WALL_MS), st.integers(0, MAX_COUNTER), node)
near = st.builds(Timestamp, st.integers(0, 1200), st.integers(0, MAX_COUNTER), node)


def clock_at(*times: int, node: str = A) -> HybridClock:
    readings = iter(times)
    return HybridClock(node, now_ms=lambda: next(readings))


def test_formats_fixed_width() -> None:
    stamp = Timestamp(1_700_000_000_000, 7, "server")
    assert stamp.format() == "1700000000000.000007.server"
    assert str(stamp) == stamp.format()


def test_parse_reads_what_format_writes() -> None:
    text = f"0000000000042.000001.{A}"
    assert parse_timestamp(text) == Timestamp(42, 1, A)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1700000000000.000007",
        "170000000000.000007.server",
        "1700000000000.0000007.server",
        "1700000000000.000007.SERVER",
        f"1700000000000.000007.{A.upper()}",
        f"1700000000000.000007.{A[:31]}",
        "1700000000000.000007.server\n",
        "١٧٠٠٠٠٠٠٠٠٠٠٠.000007.server",
        "1700000000000-000007-server",
    ],
)
def test_malformed_timestamps_are_invalid(text: str) -> None:
    with pytest.raises(InvalidChangeSetError):
        parse_timestamp(text)


@pytest.mark.parametrize(
    "stamp",
    [
        Timestamp(MAX_WALL_MS + 1, 0, A),
        Timestamp(-1, 0, A),
        Timestamp(0, MAX_COUNTER + 1, A),
        Timestamp(0, 0, "device"),
    ],
)
def test_timestamps_that_do_not_fit_are_not_written(stamp: Timestamp) -> None:
    with pytest.raises(InvalidChangeSetError):
        stamp.format()


def test_clock_rejects_invalid_node() -> None:
    with pytest.raises(InvalidChangeSetError):
        HybridClock("Server")


def test_timestamp_from_ms_has_counter_zero() -> None:
    assert timestamp_from_ms(1234, "server") == Timestamp(1234, 0, "server")
    with pytest.raises(InvalidChangeSetError):
        timestamp_from_ms(1234, "nobody")


def test_first_tick_takes_wall_time() -> None:
    assert clock_at(100).tick() == Timestamp(100, 0, A)


def test_tick_counts_within_one_millisecond() -> None:
    clock = clock_at(100, 100, 101)
    assert [clock.tick() for _ in range(3)] == [
        Timestamp(100, 0, A),
        Timestamp(100, 1, A),
        Timestamp(101, 0, A),
    ]
    assert clock.last == Timestamp(101, 0, A)


def test_tick_keeps_going_when_wall_clock_steps_back() -> None:
    clock = clock_at(100, 50)
    first, second = clock.tick(), clock.tick()
    assert second == Timestamp(100, 1, A)
    assert second > first


def test_clock_resumes_after_last() -> None:
    clock = HybridClock(A, now_ms=lambda: 10, last=Timestamp(100, 3, A))
    assert clock.tick() == Timestamp(100, 4, A)


def test_counter_overflow_moves_wall_time_on() -> None:
    clock = HybridClock(A, now_ms=lambda: 10, last=Timestamp(100, MAX_COUNTER, A))
    stamp = clock.tick()
    assert stamp == Timestamp(101, 0, A)
    assert parse_timestamp(stamp.format()) == stamp


def test_observe_catches_up_with_a_clock_ahead() -> None:
    clock = clock_at(100, 100)
    clock.tick()
    assert clock.observe(Timestamp(500, 4, B)) == Timestamp(500, 5, A)


def test_observe_same_wall_time_takes_larger_counter() -> None:
    clock = HybridClock(A, now_ms=lambda: 10, last=Timestamp(500, 2, A))
    assert clock.observe(Timestamp(500, 7, B)) == Timestamp(500, 8, A)


def test_observe_a_clock_behind_keeps_own_time() -> None:
    clock = HybridClock(A, now_ms=lambda: 10, last=Timestamp(500, 2, A))
    assert clock.observe(Timestamp(300, 9, B)) == Timestamp(500, 3, A)


def test_observe_uses_wall_clock_when_it_is_ahead() -> None:
    clock = HybridClock(A, now_ms=lambda: 900, last=Timestamp(500, 2, A))
    assert clock.observe(Timestamp(600, 9, B)) == Timestamp(900, 0, A)


@given(timestamp, timestamp)
def test_string_order_is_tuple_order(a: Timestamp, b: Timestamp) -> None:
    assert (a.format() < b.format()) == (a < b)
    assert parse_timestamp(a.format()) == a


@given(st.lists(st.integers(0, 10), min_size=1, max_size=50))
def test_tick_strictly_increases_whatever_the_wall_clock(times: list[int]) -> None:
    clock = clock_at(*times)
    stamps = [clock.tick() for _ in times]
    assert all(earlier < later for earlier, later in pairwise(stamps))


@given(
    st.lists(
        st.tuples(st.integers(0, 1000), st.none() | near),
        min_size=1,
        max_size=30,
    )
)
def test_observe_is_after_remote_and_last(events: list[tuple[int, Timestamp | None]]) -> None:
    readings = iter([now for now, _ in events])
    clock = HybridClock(B, now_ms=lambda: next(readings))
    for _, remote in events:
        before = clock.last
        stamp = clock.tick() if remote is None else clock.observe(remote)
        assert before is None or stamp[:2] > before[:2]
        assert remote is None or stamp[:2] > remote[:2]
