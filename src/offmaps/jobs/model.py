"""A job's state, and what its work sees while it runs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from offmaps.errors import JobCancelledError
from offmaps.schemas.jobs import JobDocument, JobLink, JobStatus
from offmaps.storage import ObjectStore

if TYPE_CHECKING:
    from offmaps.jobs.store import JobStore

__all__ = ["Job", "JobContext", "job_document"]


@dataclass
class Job:
    """A job's state, as its store keeps it.

    Attributes:
        id: 32 lowercase hex characters.
        kind: the registered kind that runs it (:class:`offmaps.jobs.kinds.JobKind`).
        owner: the user who started it. Every new job has one; ``None`` only in jobs stored
            by versions that let anonymous callers start jobs, which only admins see.
        status: where it is.
        progress: the fraction done, 0 to 1, never going back.
        message: what it is doing, or how it ended.
        created: when it was accepted (seconds since the epoch).
        finished: when it ended.
        error: why it failed.
        result: what it made (JSON), by kind.
        payload: the kind's payload as JSON: all another process needs to run it.
        runner: the process that took it (``host:pid:start``), to find jobs of dead processes.
    """

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
    payload: dict[str, Any] = field(default_factory=dict)
    runner: str | None = None


def job_document(job: Job, base: str) -> JobDocument:
    """The wire document of ``job``, with links under the server's ``base`` URL."""
    result = job.result
    if result is not None and "files" in result:
        files = [
            {**entry, "href": f"{base}/api/jobs/{job.id}/files/{entry['path']}"}
            for entry in result["files"]
        ]
        result = {**result, "files": files}
    return JobDocument(
        id=job.id,
        kind=job.kind,
        status=job.status,
        progress=job.progress,
        message=job.message,
        created=job.created,
        finished=job.finished,
        error=job.error,
        result=result,
        links=[JobLink(rel="self", href=f"{base}/api/jobs/{job.id}")],
    )


class JobContext:
    """What a running job's work gets: progress reports, cancellation, an output area and a
    scratch folder.

    The output area is a prefix of the server's object store: what the work puts there (keyed
    by the paths its result lists) is kept for download, by whichever process serves it. Work
    that needs real files makes them in ``scratch`` and moves each one in when it is finished
    (``output.put_file``). A job that fails or is cancelled keeps nothing of either.

    Args:
        store: where the job's state is kept.
        job: the job.
        output: the job's output area.
        scratch: the job's scratch folder (made before the work starts).
    """

    def __init__(self, store: JobStore, job: Job, *, output: ObjectStore, scratch: Path) -> None:
        self._store = store
        self.job = job
        self.output = output
        """The job's output area: what it puts here is kept for download."""
        self.scratch = scratch
        """A local folder for work that needs real files; removed when the job ends."""

    def progress(self, fraction: float, message: str) -> None:
        """Report progress: ``fraction`` from 0 to 1 and what is being done."""
        self.job.progress = min(max(fraction, self.job.progress), 1.0)
        self.job.message = message
        self._store.save(self.job)

    def cancelled(self) -> bool:
        """Whether someone asked to cancel the job."""
        return self._store.cancel_requested(self.job.id)

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelledError` when the job was cancelled."""
        if self.cancelled():
            raise JobCancelledError(f"job {self.job.id} was cancelled")
