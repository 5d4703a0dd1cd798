"""Pausing Python's cyclic garbage collector while a change set is built or merged.

A change set of thousands of changes allocates tens of thousands of container objects (each
change's dicts and lists) that all stay alive until the set is answered. Each batch of
survivors makes the collector run a full collection over every object of the process, again
and again: about a tenth of a sync's time on the server and on the device (measured in
bench/RESULTS.md). Reference counting frees almost all of a set's garbage anyway; the cycles
it leaves wait until the collector is back on, at the end of the set, so memory stays bounded
by the set.

Nesting and threads are safe: the collector is switched off by the first of overlapping
pauses and back on by the last, and only if it was on to begin with.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collection_paused"]

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def collection_paused() -> Iterator[None]:
    """Run the body with the cyclic garbage collector off (see the module docs)."""
    global _depth, _was_enabled  # noqa: PLW0603 - one process-wide switch
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
