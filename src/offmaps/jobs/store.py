"""Where jobs' state lives: the :class:`JobStore` protocol and its folder implementation.

:class:`FolderJobStore` keeps the layout of the embedded default, ``DATA/jobs/<id>/``:
``job.json`` (written atomically at every step, so any process can answer for any job) and a
``cancel`` marker a running job polls. What a job makes is not state: it lives in the object
store (``jobs/<id>/files/``, see :class:`~offmaps.jobs.JobContext`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Protocol, runtime_checkable

from offmaps.errors import JobNotFoundError
from offmaps.jobs.model import Job
from offmaps.schemas.jobs import JobStatus

__all__ = ["FolderJobStore", "JobStore", "check_job_id"]

_ID_LENGTH = 32


def check_job_id(job_id: str) -> str:
    """``job_id`` if it is a job id (32 lowercase hex characters); else ``JobNotFoundError``."""
    if (
        not isinstance(job_id, str)
        or len(job_id) != _ID_LENGTH
        or any(c not in "0123456789abcdef" for c in job_id)
    ):
        raise JobNotFoundError(f"no job {str(job_id)[:64]!r}")
    return job_id


@runtime_checkable
class JobStore(Protocol):
    """Jobs' state by id: the seam a PostgreSQL store implements too."""

    def create(self, job: Job) -> None:
        """Record a new job."""
        ...

    def save(self, job: Job) -> None:
        """Record a job's current state."""
        ...

    def get(self, job_id: str) -> Job:
        """A job's current state.

        Raises:
            JobNotFoundError: no such job.
        """
        ...

    def iter_jobs(self) -> Iterator[Job]:
        """Every job kept, in no particular order."""
        ...

    def request_cancel(self, job_id: str) -> None:
        """Ask a job to stop; it ends as cancelled at its next check."""
        ...

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked the job to stop."""
        ...

    def delete(self, job_id: str) -> None:
        """Remove a job's state.

        Raises:
            JobNotFoundError: no such job.
        """
        ...


class FolderJobStore:
    """Jobs as folders of ``folder`` (``DATA/jobs``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _folder(self, job_id: str) -> Path:
        return self.folder / check_job_id(job_id)

    def create(self, job: Job) -> None:
        """Record a new job in a new folder."""
        self._folder(job.id).mkdir(parents=True)
        self.save(job)

    def save(self, job: Job) -> None:
        """Write ``job.json`` atomically."""
        folder = self._folder(job.id)
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
            JobNotFoundError: no such job, or its state cannot be read.
        """
        path = self._folder(job_id) / "job.json"
        try:
            data = json.loads(path.read_bytes())
            data["status"] = JobStatus(data["status"])
            return Job(**data)
        except FileNotFoundError:
            raise JobNotFoundError(f"no job {job_id[:64]!r}") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise JobNotFoundError(f"job {job_id[:64]!r} cannot be read: {exc}") from None

    def iter_jobs(self) -> Iterator[Job]:
        """Every job whose state can be read."""
        for folder in self.folder.iterdir():
            try:
                yield self.get(folder.name)
            except JobNotFoundError:
                continue

    def request_cancel(self, job_id: str) -> None:
        """Leave the ``cancel`` marker."""
        (self._folder(job_id) / "cancel").touch(exist_ok=True)

    def cancel_requested(self, job_id: str) -> bool:
        """Whether the ``cancel`` marker is there."""
        return (self._folder(job_id) / "cancel").exists()

    def delete(self, job_id: str) -> None:
        """Remove the job's folder (and a ``files/`` folder left there by an older version)."""
        self.get(job_id)
        shutil.rmtree(self._folder(job_id), ignore_errors=True)
