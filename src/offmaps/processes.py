"""Processes of this host, told apart across pid reuse: the start time of a pid, and whether a
recorded process still runs; and how worker processes are started.

Job stores (:mod:`offmaps.jobs`) and interrupted writes (:mod:`offmaps.containers`) record the
process that wrote them, and later clean up after dead ones; a pid alone is not enough, as
the system reuses them, so the process's start time (``/proc/PID/stat``, field 22, in clock
ticks since boot) goes with it.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Sequence
from multiprocessing.context import BaseContext

__all__ = ["process_runs", "start_time", "worker_context"]


def worker_context(preload: Sequence[str]) -> BaseContext:
    """How to start worker processes (for a ``ProcessPoolExecutor``'s ``mp_context``).

    A process running one thread (the CLI's) forks them: they start at once with everything
    loaded. One that may run threads (a server's) is never forked, as a fork copies locks other
    threads hold: its workers come from a fork server that imports the modules ``preload``
    once (about a second of CPU for the imaging stack) before it forks them.
    """
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return context


def start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, as text); ``None`` when it cannot
    be read (no such process, or no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # the command may hold spaces and parentheses: fields count from the last ')'
            field = stat.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return field if field.isdigit() else None


def process_runs(pid: int, started: str | None) -> bool:
    """Whether the process ``pid`` of this host that started at ``started`` (from
    :func:`start_time`; ``None``: not known) still runs. When either start time is unknown, a
    live pid counts as the same process: never take a live writer for a dead one."""
    if pid <= 0:
        return False
    if pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, as another user
        except OSError:
            return False
    now = start_time(pid)
    return started is None or now is None or now == started
