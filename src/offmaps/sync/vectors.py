"""Version vectors: per row, how many edits of each replica (and of the server) it holds.

A vector is a ``Mapping[str, int]`` from node (a replica id, or :data:`SERVER_NODE`) to a count;
a missing entry means 0. Functions that build vectors return them in one normal form (zero
entries dropped, keys sorted) so that equal vectors are equal dicts and serialise the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from offmaps.schemas.changeset import SERVER_NODE

__all__ = ["Order", "compare", "derive", "dominates", "increment", "merge"]


class Order(StrEnum):
    """How two versions relate in causal (happened-before) order."""

    EQUAL = "equal"
    """Both hold the same edits."""
    BEFORE = "before"
    """The first is an ancestor of the second: the second has seen all of it, and more."""
    AFTER = "after"
    """The first descends from the second."""
    CONCURRENT = "concurrent"
    """Each holds edits the other has not seen: a possible conflict."""


def _normal(entries: Mapping[str, int]) -> dict[str, int]:
    return {node: entries[node] for node in sorted(entries) if entries[node] != 0}


def compare(a: Mapping[str, int], b: Mapping[str, int]) -> Order:
    """Relate two version vectors.

    Args:
        a: The first vector.
        b: The second vector.

    Returns:
        ``BEFORE`` when every entry of ``a`` is at most ``b``'s and one is smaller, ``AFTER``
        for the converse, ``EQUAL`` when all entries match, ``CONCURRENT`` otherwise.
    """
    less = greater = False
    for node in a.keys() | b.keys():
        mine, theirs = a.get(node, 0), b.get(node, 0)
        less = less or mine < theirs
        greater = greater or mine > theirs
    if less and greater:
        return Order.CONCURRENT
    if less:
        return Order.BEFORE
    if greater:
        return Order.AFTER
    return Order.EQUAL


def dominates(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    """Tell whether ``a`` has seen every edit ``b`` has (``a >= b`` entrywise).

    Args:
        a: The vector that may dominate.
        b: The vector that may be dominated.

    Returns:
        ``True`` when ``a`` is equal to or after ``b``.
    """
    return all(a.get(node, 0) >= count for node, count in b.items())


def merge(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    """Join two vectors: the version that has seen the edits of both.

    Args:
        a: The first vector.
        b: The second vector.

    Returns:
        The entrywise maximum, in normal form (zero entries dropped, keys sorted).
    """
    return _normal({node: max(a.get(node, 0), b.get(node, 0)) for node in a.keys() | b.keys()})


def increment(v: Mapping[str, int], node: str, by: int = 1) -> dict[str, int]:
    """Count more edits of one node.

    Args:
        v: The vector before the edits.
        node: The replica id, or :data:`SERVER_NODE`, that made them.
        by: How many edits (at least 0).

    Returns:
        A new vector in normal form; ``v`` is left as it was.

    Raises:
        ValueError: ``by`` is negative (a vector never goes back).
    """
    if by < 0:
        msg = f"a version vector only grows: cannot add {by} edits"
        raise ValueError(msg)
    return _normal({**v, node: v.get(node, 0) + by})


def derive(
    recorded: Mapping[str, int] | None, recorded_version: int, current_version: int
) -> dict[str, int]:
    """Bring a row's recorded vector up to its current store version.

    The sync layer records a row's vector when it applies or sends the row, at the row's store
    version then. Every store version after that was an edit made on the server itself (OGC
    API, the web, a resolved conflict), which the store does not count per node: they are
    counted here, for :data:`SERVER_NODE`.

    Args:
        recorded: The vector last recorded for the row, or ``None`` when none was (a row that
            only the server ever edited).
        recorded_version: The store version the vector was recorded at.
        current_version: The row's store version now.

    Returns:
        The row's vector now, in normal form. ``SERVER_NODE`` gains
        ``current_version - recorded_version``, never a negative amount. Without a recorded
        vector, ``{SERVER_NODE: current_version}`` (or ``{}`` for version 0).
    """
    if recorded is None:
        return {SERVER_NODE: current_version} if current_version > 0 else {}
    return increment(recorded, SERVER_NODE, max(0, current_version - recorded_version))
