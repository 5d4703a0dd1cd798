"""A job queue worker for the tests (tests/jobs/test_queue.py): the queue runner with a slow
counting kind, run as its own process: ``python -m tests.jobs.queue_worker FOLDER URL NAMESPACE``.

Each attempt of a job appends ``<job id> <pid>`` to ``FOLDER/attempts.log`` as it starts, so a
test can tell how often and where each job ran; abandoning a dead attempt's work appends the
job's id to ``FOLDER/abandoned.log``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from offmaps.jobs import FolderJobStore, JobContext, JobKind, JobKinds
from offmaps.jobs.queue import QueueJobRunner
from offmaps.storage import LocalObjectStore


class Steps(BaseModel):
    """Count to ``to``, ``delay_s`` a step, publishing a file per step."""

    model_config = ConfigDict(extra="forbid")

    to: int
    delay_s: float = 0.0


def make_kinds(folder: Path) -> JobKinds:
    def steps(payload: Steps, context: JobContext) -> dict[str, Any]:
        with (folder / "attempts.log").open("a") as log:
            log.write(f"{context.job.id} {os.getpid()}\n")
        for n in range(payload.to):
            context.check_cancelled()
            context.output.put(f"steps/{n}.txt", str(n).encode())
            context.progress((n + 1) / payload.to, f"{n + 1} of {payload.to}")
            time.sleep(payload.delay_s)
        return {"steps": payload.to}

    def abandon(payload: Steps, job_id: str) -> None:
        with (folder / "abandoned.log").open("a") as log:
            log.write(f"{job_id}\n")

    return JobKinds([JobKind("steps", Steps, steps, abandon=abandon)])


def make_runner(folder: Path, url: str, namespace: str, **options: Any) -> QueueJobRunner:
    """The queue runner every process of a test builds alike (the shared folder, the URL)."""
    return QueueJobRunner(
        FolderJobStore(folder / "jobs"),
        make_kinds(folder),
        objects=LocalObjectStore(folder / "objects"),
        scratch=folder / "scratch",
        url=url,
        namespace=namespace,
        **options,
    )


def main(folder: str, url: str, namespace: str, concurrency: str = "1") -> None:
    runner = make_runner(
        Path(folder), url, namespace, heartbeat_s=1.0, maintenance_chance=1_000_000
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    runner.work(int(concurrency), stop)
    runner.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
