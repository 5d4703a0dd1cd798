"""Sync of offline edits: merging change sets from replicas into the server, and back.

Each row carries a version vector (how many edits of each replica, and of the server, it
holds). Comparing a change's vector with the row's tells whether the change descends from
the server's row (apply it), is already there, or was made concurrently with other edits. A
concurrent update is merged field by field, three ways, against the base the client started
from: edits of different fields both stand, and only a field changed on both sides to
different values is a conflict. A conflict policy (server wins, client wins, last writer wins
by hybrid logical clock, or manual review) then settles it.

Everything here is a pure function over values: no storage, no I/O. What becomes of one
uploaded change (apply it, merge it, park or settle its conflict, refuse it) is decided in
:mod:`offmaps.sync.decide`; reading rows, writing, recording vectors and parking conflicts stay
at the edge, in the stores and the server's sync service (:mod:`offmaps.replicas`). The one other
thing here is :func:`~offmaps.sync.collector.collection_paused`, which the device and the
server use around large change sets.

The version vector functions have generic names (``compare``, ``merge``), so they are used
through their module: ``vectors.merge(a, b)``; so are the decisions (``decide.Apply``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from offmaps.sync import vectors
from offmaps.sync.clock import (
    MAX_COUNTER,
    MAX_WALL_MS,
    HybridClock,
    Timestamp,
    parse_timestamp,
    timestamp_from_ms,
)
from offmaps.sync.merge import FieldMerge, merge_fields, same_value
from offmaps.sync.policy import Resolution, Side, resolve, resolve_delete
from offmaps.sync.vectors import Order

if TYPE_CHECKING:  # for type checkers only: at run time, __getattr__ below imports it on first use
    from offmaps.sync import decide

__all__ = [
    "MAX_COUNTER",
    "MAX_WALL_MS",
    "FieldMerge",
    "HybridClock",
    "Order",
    "Resolution",
    "Side",
    "Timestamp",
    "decide",
    "merge_fields",
    "parse_timestamp",
    "resolve",
    "resolve_delete",
    "same_value",
    "timestamp_from_ms",
    "vectors",
]


def __getattr__(name: str) -> object:
    """:mod:`offmaps.sync.decide`, imported on first use: it needs the web map's models (~0.1-0.4 s
    to import), which the device side of sync does not (docs/cli.md, "Start-up")."""
    if name == "decide":
        return importlib.import_module("offmaps.sync.decide")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
