"""Hybrid logical clocks (Kulkarni et al., 2014): time stamps that follow causality.

An HLC timestamp is the wall clock time in milliseconds as far as the node knows it, a counter
for events within one millisecond, and the node that made it. Its order follows the
happened-before relation across nodes even when their wall clocks disagree, and it stays close
to real time, so that last-writer-wins picks the edit a person would call the later one.

On the wire it is ``<wall ms, 13 digits>.<counter, 6 digits>.<node>`` (see
:data:`offmaps.schemas.changeset.Hlc`); the fixed widths make string order equal time order.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from offmaps.errors import InvalidChangeSetError

__all__ = [
    "MAX_COUNTER",
    "MAX_WALL_MS",
    "HybridClock",
    "Timestamp",
    "parse_timestamp",
    "timestamp_from_ms",
]

MAX_WALL_MS = 9_999_999_999_999
"""The largest wall time the 13 digits of the wire format hold (in the year 2286)."""

MAX_COUNTER = 999_999
"""The largest counter the 6 digits of the wire format hold."""

# [0-9], not \d (which also matches other scripts' digits); fullmatch, not $ (which also
# matches before a final newline)
_NODE = re.compile(r"server|[0-9a-f]{32}")
_TIMESTAMP = re.compile(r"([0-9]{13})\.([0-9]{6})\.(server|[0-9a-f]{32})")


class Timestamp(NamedTuple):
    """A hybrid logical clock timestamp.

    Tuple order is time order: wall time, then counter, then node, which breaks ties between
    nodes deterministically (the same way on every node).
    """

    wall_ms: int
    """Milliseconds since the Unix epoch, as far as the node knew."""
    counter: int
    """Orders events that share a wall time."""
    node: str
    """``"server"`` or a replica id (32 lowercase hex digits)."""

    def format(self) -> str:
        """Write the timestamp as on the wire.

        Returns:
            ``<wall ms, 13 digits>.<counter, 6 digits>.<node>``.

        Raises:
            InvalidChangeSetError: A part does not fit the wire format.
        """
        if not 0 <= self.wall_ms <= MAX_WALL_MS:
            msg = f"HLC wall time {self.wall_ms} does not fit 13 digits"
            raise InvalidChangeSetError(msg)
        if not 0 <= self.counter <= MAX_COUNTER:
            msg = f"HLC counter {self.counter} does not fit 6 digits"
            raise InvalidChangeSetError(msg)
        _check_node(self.node)
        return f"{self.wall_ms:013d}.{self.counter:06d}.{self.node}"

    def __str__(self) -> str:
        return self.format()


def _check_node(node: str) -> None:
    if _NODE.fullmatch(node) is None:
        msg = f"not an HLC node (server, or 32 lowercase hex digits): {node!r}"
        raise InvalidChangeSetError(msg)


def parse_timestamp(text: str) -> Timestamp:
    """Read a timestamp from its wire form.

    Args:
        text: ``<wall ms, 13 digits>.<counter, 6 digits>.<node>``.

    Returns:
        The timestamp.

    Raises:
        InvalidChangeSetError: ``text`` is not in that form.
    """
    found = _TIMESTAMP.fullmatch(text)
    if found is None:
        msg = f"not an HLC timestamp (<13 digits>.<6 digits>.<node>): {text!r}"
        raise InvalidChangeSetError(msg)
    return Timestamp(int(found[1]), int(found[2]), found[3])


def timestamp_from_ms(wall_ms: int, node: str) -> Timestamp:
    """Make the timestamp of an edit known only by its time, such as a server journal entry.

    Args:
        wall_ms: When the edit was made, in milliseconds since the Unix epoch.
        node: Who made it (``"server"`` for edits on the server).

    Returns:
        The timestamp, with counter 0.

    Raises:
        InvalidChangeSetError: ``wall_ms`` or ``node`` does not fit the wire format.
    """
    stamp = Timestamp(wall_ms, 0, node)
    stamp.format()
    return stamp


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridClock:
    """One node's hybrid logical clock.

    Every timestamp it gives is greater than the one before, whatever the wall clock does
    (it may step back after an NTP correction). A counter that would pass :data:`MAX_COUNTER`
    (a million events in one millisecond, or a wall clock stuck far behind a remote one)
    moves the clock's wall time on by one millisecond and starts the counter again at 0,
    so timestamps stay valid on the wire and still increase; the clock then runs that much
    ahead of the wall clock, as it does after observing a node whose clock is ahead.

    Safe to share between threads.
    """

    def __init__(
        self,
        node: str,
        *,
        now_ms: Callable[[], int] = _wall_clock_ms,
        last: Timestamp | None = None,
    ) -> None:
        """Start a clock.

        Args:
            node: The node whose clock this is: ``"server"`` or a replica id.
            now_ms: The wall clock, in milliseconds since the Unix epoch (injectable for tests).
            last: The last timestamp this node gave out, kept across restarts so that the
                clock never goes back.

        Raises:
            InvalidChangeSetError: ``node`` is not a valid HLC node.
        """
        _check_node(node)
        self._node = node
        self._now_ms = now_ms
        self._last = last
        self._lock = threading.Lock()

    @property
    def node(self) -> str:
        """The node whose clock this is."""
        return self._node

    @property
    def last(self) -> Timestamp | None:
        """The last timestamp given out (``None`` before the first)."""
        return self._last

    def tick(self) -> Timestamp:
        """Stamp a local event: an edit, or sending a message.

        Returns:
            A timestamp greater than every one this clock gave or observed before.
        """
        with self._lock:
            wall, counter = self._state()
            now = max(self._now_ms(), 0)
            if now > wall:
                return self._set(now, 0)
            return self._set(wall, counter + 1)

    def observe(self, remote: Timestamp) -> Timestamp:
        """Take in a timestamp received from another node, and stamp the receipt.

        Args:
            remote: The timestamp the message carried.

        Returns:
            A timestamp greater than ``remote`` and than every one this clock gave before.
        """
        with self._lock:
            wall, counter = self._state()
            now = max(self._now_ms(), 0)
            if now > wall and now > remote.wall_ms:
                return self._set(now, 0)
            if wall == remote.wall_ms:
                return self._set(wall, max(counter, remote.counter) + 1)
            if wall > remote.wall_ms:
                return self._set(wall, counter + 1)
            return self._set(remote.wall_ms, remote.counter + 1)

    def _state(self) -> tuple[int, int]:
        # before the first event, a wall time below any real one, so that the first tick
        # takes the wall clock's time with counter 0
        if self._last is None:
            return -1, 0
        return self._last.wall_ms, self._last.counter

    def _set(self, wall: int, counter: int) -> Timestamp:
        if counter > MAX_COUNTER:
            wall, counter = wall + 1, 0
        self._last = Timestamp(wall, counter, self._node)
        return self._last
