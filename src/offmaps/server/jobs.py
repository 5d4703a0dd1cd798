"""Long-running server jobs (offline map generation) run in-process, with progress.

The embedded default needs no queue service: jobs run on a small thread pool. Their state lives
in their folder, ``DATA/jobs/<id>/job.json``, written atomically at every progress step, so any
server worker process can answer for any job; cancelling writes a ``cancel`` file the job polls.
A job that fails or is cancelled leaves no folder; a finished job's files stay for download
until the job is older than ``keep``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from offmaps.errors import JobCancelledError, JobNotFoundError, OffmapsError

__all__ = ["Job", "JobContext", "JobManager", "JobStatus"]

_ID_LENGTH = 32


class JobStatus(StrEnum):
    """Where a job is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        """Whether the job has ended."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass
class Job:
    """A job's public state (``job.json``)."""

    id: str
    kind: str
    owner: str | None
    status: JobStatus = JobStatus.PENDING
    progress: float = 0.0
    message: str = "waiting to start"
    created: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None


class JobContext:
    """What a running job's work function gets: its folder, progress and cancellation."""

    def __init__(self, manager: JobManager, job: Job) -> None:
        self._manager = manager
        self.job = job
        self.folder = manager.folder / job.id / "files"

    def progress(self, fraction: float, message: str) -> None:
        """Report progress: ``fraction`` from 0 to 1 and what is being done."""
        self.job.progress = min(max(fraction, self.job.progress), 1.0)
        self.job.message = message
        self._manager.save(self.job)

    def cancelled(self) -> bool:
        """Whether someone asked to cancel the job."""
        return (self._manager.folder / self.job.id / "cancel").exists()

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelledError` when the job was cancelled."""
        if self.cancelled():
            raise JobCancelledError(f"job {self.job.id} was cancelled")


Work = Callable[[JobContext], dict[str, Any]]


class JobManager:
    """Runs jobs on a thread pool and keeps their state in ``folder``.

    Args:
        folder: where job folders live (``DATA/jobs``).
        workers: jobs run at once in this process.
        keep: seconds a finished job's files are kept.
    """

    def __init__(self, folder: Path, *, workers: int = 2, keep: float = 24 * 3600) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="offmaps-job")
        self._lock = threading.Lock()
        self._running: set[str] = set()

    def submit(self, kind: str, owner: str | None, work: Work) -> Job:
        """Start ``work`` as a new job; returns at once."""
        self.cleanup()
        job = Job(id=uuid.uuid4().hex, kind=kind, owner=owner)
        (self.folder / job.id / "files").mkdir(parents=True)
        self.save(job)
        with self._lock:
            self._running.add(job.id)
        self._pool.submit(self._run, job, work)
        return job

    def _run(self, job: Job, work: Work) -> None:
        try:
            self._work(job, work)
        finally:
            with self._lock:
                self._running.discard(job.id)

    def _work(self, job: Job, work: Work) -> None:
        context = JobContext(self, job)
        job.status = JobStatus.RUNNING
        context.progress(0.0, "started")
        try:
            context.check_cancelled()
            result = work(context)
            context.check_cancelled()
        except JobCancelledError:
            self._end(job, JobStatus.CANCELLED, "cancelled")
        except OffmapsError as exc:
            self._end(job, JobStatus.FAILED, str(exc))
        except Exception as exc:  # noqa: BLE001 - a job's failure is reported, never lost
            self._end(job, JobStatus.FAILED, f"{type(exc).__name__}: {exc}")
        else:
            job.result = result
            job.status = JobStatus.SUCCEEDED
            job.progress = 1.0
            job.message = "done"
            job.finished = time.time()
            self.save(job)

    def _end(self, job: Job, status: JobStatus, error: str) -> None:
        job.status = status
        job.error = None if status is JobStatus.CANCELLED else error
        job.message = error
        job.finished = time.time()
        shutil.rmtree(self.folder / job.id / "files", ignore_errors=True)
        self.save(job)

    def save(self, job: Job) -> None:
        """Write ``job.json`` atomically."""
        folder = self.folder / job.id
        data = json.dumps(asdict(job)).encode()
        fd, tmp = tempfile.mkstemp(prefix=".job-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, folder / "job.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, job_id: str) -> Job:
        """A job's current state.

        Raises:
            JobNotFoundError: no such job.
        """
        path = self._folder(job_id) / "job.json"
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise JobNotFoundError(f"no job {job_id[:64]!r}") from None
        data["status"] = JobStatus(data["status"])
        return Job(**data)

    def files(self, job_id: str) -> Path:
        """The folder of a job's files."""
        return self._folder(job_id) / "files"

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop; it ends as cancelled at its next check."""
        job = self.get(job_id)
        if not job.status.done:
            (self._folder(job_id) / "cancel").touch()
        return job

    def delete(self, job_id: str) -> None:
        """Remove an ended job and its files."""
        self.get(job_id)
        shutil.rmtree(self._folder(job_id), ignore_errors=True)

    def cleanup(self) -> None:
        """Remove jobs that ended more than ``keep`` seconds ago."""
        now = time.time()
        for folder in self.folder.iterdir():
            try:
                job = self.get(folder.name)
            except (JobNotFoundError, ValueError, TypeError, KeyError):
                continue
            if job.finished is not None and now - job.finished > self.keep:
                shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Stop taking jobs; this process's running ones are cancelled."""
        with self._lock:
            running = list(self._running)
        for job_id in running:
            (self.folder / job_id / "cancel").touch(exist_ok=True)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _folder(self, job_id: str) -> Path:
        if len(job_id) != _ID_LENGTH or any(c not in "0123456789abcdef" for c in job_id):
            raise JobNotFoundError(f"no job {job_id[:64]!r}")
        return self.folder / job_id
