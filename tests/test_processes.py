"""Whether a recorded process still runs, across pid reuse (offmaps.processes)."""

from __future__ import annotations

import os
import subprocess
import sys

from offmaps.processes import process_runs, start_time


def test_this_process_runs_with_its_start_time_and_not_with_another() -> None:
    started = start_time(os.getpid())
    assert started is not None
    assert started.isdigit()
    assert process_runs(os.getpid(), started)
    assert not process_runs(os.getpid(), str(int(started) + 1))  # a reused pid
    assert process_runs(os.getpid(), None)  # unknown start: a live pid is never taken for dead


def test_a_finished_process_does_not_run() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = start_time(child.pid)
    child.wait()
    assert start_time(child.pid) is None
    assert not process_runs(child.pid, started)
    assert not process_runs(child.pid, None)


def test_impossible_pids_do_not_run() -> None:
    assert not process_runs(0, None)
    assert not process_runs(-1, None)
    assert start_time(-1) is None
