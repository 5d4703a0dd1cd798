"""Running jobs: the :class:`JobRunner` protocol and the in-process runner of the embedded default.

The embedded default needs no queue service: :class:`InProcessJobRunner` runs jobs on a small
thread pool. Every job is stored with its kind and payload before it runs, and the work is
always rebuilt from them (even in process), so a Redis-backed runner can hand the same job to
another process. A job's files go to the object store (its output area, ``jobs/<id>/files/``);
work that needs real files has a scratch folder on this host, removed when the job ends. At
start the runner looks for jobs left behind by a process that died: a job that never started
is run again here; one that was running is marked failed, never left "running" forever, and
what it had made (objects, scratch folder) is removed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import BaseModel

from offmaps.errors import (
    InvalidJobPayloadError,
    JobCancelledError,
    JobNotFoundError,
    OffmapsError,
)
from offmaps.jobs._files import JobFiles
from offmaps.jobs.kinds import JobKinds
from offmaps.jobs.model import Job, JobContext
from offmaps.jobs.store import JobStore
from offmaps.processes import process_runs, start_time
from offmaps.schemas.jobs import JobStatus
from offmaps.storage import ObjectStore

__all__ = ["InProcessJobRunner", "JobRunner", "StoredJobs", "process_id", "process_is_alive"]

DIED = "the process running this job stopped before it finished"

_log = logging.getLogger(__name__)


@runtime_checkable
class JobRunner(Protocol):
    """Starts jobs and answers for them, whichever process runs them."""

    @property
    def store(self) -> JobStore:
        """Where the jobs' state lives."""
        ...

    @property
    def keep(self) -> float:
        """Seconds an ended job and its files are kept."""
        ...

    def submit(self, kind: str, payload: BaseModel, *, owner: str) -> Job:
        """Store a new job of ``kind`` for ``payload``, started by user ``owner``, and start
        it; returns at once.

        Raises:
            UnknownJobKindError: no such kind here.
            InvalidJobPayloadError: no owner.
        """
        ...

    def get(self, job_id: str) -> Job:
        """A job's current state; ``JobNotFoundError`` when there is none."""
        ...

    def output(self, job_id: str) -> ObjectStore:
        """A job's output area: the files its result lists, keyed by their paths."""
        ...

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop; it ends as cancelled at its next check."""
        ...

    def delete(self, job_id: str) -> None:
        """Remove an ended job and its files; ``JobNotFoundError`` when there is none."""
        ...

    def cleanup(self) -> None:
        """Remove the jobs that ended more than ``keep`` seconds ago, with their files."""
        ...

    def close(self) -> None:
        """Stop taking jobs; this process's running ones are cancelled."""
        ...


@cache
def process_id() -> str:
    """This process as job stores record it: ``host:pid:start`` (the start time tells a reused
    pid apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{start_time(os.getpid()) or '?'}"


def process_is_alive(runner: str) -> bool | None:
    """Whether the process ``runner`` (from :func:`process_id`) still runs; ``None`` when it is
    on another host, where this process cannot tell."""
    host, _, rest = runner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname():
        return None
    if not pid_text.isdigit():
        return False
    return process_runs(int(pid_text), None if started == "?" else started)


class StoredJobs:
    """What every runner shares: jobs' state in ``store``, their files in ``objects``, and the
    running of one job (:meth:`run_job`), wherever it runs.

    Args:
        store: where jobs' state lives.
        kinds: the kinds this process can run.
        objects: the object store holding jobs' output areas (``jobs/<id>/files/``).
        scratch: the local folder for jobs' scratch folders (``<scratch>/<id>/``); on the
            object store's filesystem, finished files move into a local folder store without
            a copy.
        keep: seconds an ended job and its files are kept.
    """

    def __init__(
        self,
        store: JobStore,
        kinds: JobKinds,
        *,
        objects: ObjectStore,
        scratch: Path,
        keep: float = 24 * 3600,
    ) -> None:
        self._store = store
        self._files = JobFiles(objects, scratch)
        self.kinds = kinds
        self.keep = keep

    @property
    def store(self) -> JobStore:
        """Where the jobs' state lives."""
        return self._store

    def _new_job(self, kind: str, payload: BaseModel, owner: str, runner: str | None) -> Job:
        """Store a new pending job of ``kind`` for ``payload``, started by ``owner``.

        Raises:
            UnknownJobKindError: no such kind here.
            InvalidJobPayloadError: no owner: every job is someone's, for access and quotas.
        """
        if not isinstance(owner, str) or not owner:
            raise InvalidJobPayloadError("a job needs an owner: the user who starts it")
        self.kinds.get_kind(kind)
        self.cleanup()
        job = Job(
            id=uuid.uuid4().hex,
            kind=kind,
            owner=owner,
            payload=payload.model_dump(mode="json"),
            runner=runner,
        )
        self._store.create(job)
        return job

    def run_job(self, job: Job) -> None:
        """Run ``job`` here, to its end: succeeded, failed with the reason, or cancelled (what
        a failed or cancelled job made is removed first). Never raises for the job's own
        failure."""
        context = JobContext(
            self._store,
            job,
            output=self._files.output(job.id),
            scratch=self._files.scratch(job.id),
        )
        job.status = JobStatus.RUNNING
        job.runner = process_id()
        context.progress(0.0, "started")
        try:
            try:
                self._files.make_scratch(job.id)
                context.check_cancelled()
                result = self.kinds.get_kind(job.kind).execute(job.payload, context)
                context.check_cancelled()
            finally:
                # before the job's end is recorded: whoever sees it ended sees no scratch
                self._files.remove_scratch(job.id)
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
            self._store.save(job)

    def _abandon(self, job: Job) -> None:
        """Remove what an attempt of ``job`` whose process died made: its files, and what its
        kind made elsewhere (:attr:`JobKind.abandon`: a generate job's replicas)."""
        self._files.remove(job.id)
        kind = self.kinds.get(job.kind)
        if kind is not None and kind.abandon is not None:
            try:
                kind.abandon(kind.parse(job.payload), job.id)
            except OffmapsError as exc:
                _log.warning("job %s: what its stopped attempt made stays: %s", job.id, exc)

    def _end(self, job: Job, status: JobStatus, error: str) -> None:
        """Record a job that failed or was cancelled, after removing everything it made."""
        self._files.remove(job.id)
        job.status = status
        job.error = None if status is JobStatus.CANCELLED else error
        job.message = error
        job.finished = time.time()
        self._store.save(job)

    def get(self, job_id: str) -> Job:
        """A job's current state; ``JobNotFoundError`` when there is none."""
        return self._store.get(job_id)

    def output(self, job_id: str) -> ObjectStore:
        """A job's output area: the files its result lists, keyed by their paths."""
        return self._files.output(job_id)

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop; it ends as cancelled at its next check."""
        job = self._store.get(job_id)
        if not job.status.done:
            self._store.request_cancel(job_id)
        return job

    def delete(self, job_id: str) -> None:
        """Remove an ended job and its files; ``JobNotFoundError`` when there is none.

        The files go first: a failure of the object store leaves the job, to be deleted again.
        """
        self._store.get(job_id)
        self._files.remove_scratch(job_id)
        self._files.remove_output(job_id)
        self._store.delete(job_id)

    def cleanup(self) -> None:
        """Remove jobs that ended more than ``keep`` seconds ago."""
        now = time.time()
        for job in list(self._store.iter_jobs()):
            if job.finished is not None and now - job.finished > self.keep:
                try:
                    self.delete(job.id)
                except OffmapsError as exc:  # removed by another process, or a store failing
                    _log.warning("cannot remove job %s: %s", job.id, exc)


class InProcessJobRunner(StoredJobs):
    """Runs jobs on a thread pool; their state lives in ``store``, their files in ``objects``.

    Args:
        store: where jobs' state lives.
        kinds: the kinds this process can run.
        objects: the object store holding jobs' output areas (``jobs/<id>/files/``).
        scratch: the local folder for jobs' scratch folders (``<scratch>/<id>/``).
        workers: jobs run at once in this process.
        keep: seconds an ended job and its files are kept.
        recover: look for jobs of dead processes at start.
    """

    def __init__(
        self,
        store: JobStore,
        kinds: JobKinds,
        *,
        objects: ObjectStore,
        scratch: Path,
        workers: int = 2,
        keep: float = 24 * 3600,
        recover: bool = True,
    ) -> None:
        super().__init__(store, kinds, objects=objects, scratch=scratch, keep=keep)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="offmaps-job")
        self._lock = threading.Lock()
        self._running: set[str] = set()
        if recover:
            self.recover()

    def submit(self, kind: str, payload: BaseModel, *, owner: str) -> Job:
        """Store a new job of ``kind`` for ``payload``, started by user ``owner``, and start
        it; returns at once.

        Raises:
            UnknownJobKindError: no such kind here.
            InvalidJobPayloadError: no owner: every job is someone's, for access and quotas.
        """
        job = self._new_job(kind, payload, owner, process_id())
        self._start(job)
        return job

    def _start(self, job: Job) -> None:
        with self._lock:
            self._running.add(job.id)
        self._pool.submit(self._run, job)

    def _run(self, job: Job) -> None:
        try:
            self.run_job(job)
        finally:
            with self._lock:
                self._running.discard(job.id)

    def recover(self) -> list[Job]:
        """Take over the unfinished jobs of processes of this host that died: a pending job is
        run here, a running one is marked failed and what it made (objects, scratch folder)
        removed. Scratch folders of jobs no process runs any more go too. Returns the jobs it
        changed."""
        changed = []
        for job in list(self._store.iter_jobs()):
            if job.status.done or job.runner is None:
                continue
            if job.runner == process_id() or process_is_alive(job.runner) is not False:
                continue
            if job.status is JobStatus.PENDING and job.kind in self.kinds:
                job.runner = process_id()
                job.message = "taken over from a process that stopped"
                self._store.save(job)
                self._start(job)
            else:
                self._abandon(job)
                self._end(job, JobStatus.FAILED, DIED)
            changed.append(job)
        for job_id in list(self._files.iter_scratch()):
            if not self._runs(job_id):
                self._files.remove_scratch(job_id)
        return changed

    def _runs(self, job_id: str) -> bool:
        """Whether a job may still be using its scratch folder."""
        with self._lock:
            if job_id in self._running:
                return True
        try:
            job = self._store.get(job_id)
        except JobNotFoundError:
            return False
        if job.status.done:
            return False
        return job.runner is None or process_is_alive(job.runner) is not False

    def close(self) -> None:
        """Stop taking jobs; this process's running ones are cancelled."""
        with self._lock:
            running = list(self._running)
        for job_id in running:
            self._store.request_cancel(job_id)
        self._pool.shutdown(wait=True, cancel_futures=True)
