"""Running jobs in worker processes through a Redis queue (Dramatiq).

With ``OFFMAPS_QUEUE_URL=redis://...`` a server process stores each job, as the embedded
default does, and puts its id on a Redis queue instead of running it; ``offmaps worker``
processes, as many as wanted on as many hosts, take the ids and run the jobs
(:meth:`QueueJobRunner.work`). Jobs' state stays in the job store every process shares, so
progress and cancel work from any server process, and so does every read of a job.

Why Dramatiq (docs/architecture.md, "The job queue"): its Redis broker acknowledges a message
only once the job has ended, and each worker process beats a heartbeat in Redis; the messages
a worker held when it died (``kill -9``, a host lost) go back on the queue once its heartbeat
is older than ``heartbeat_s``, and another worker runs the job again, from scratch: what the
dead attempt made (output objects, scratch folder) is removed first. Jobs are never retried
for their own failures (a failed job says why, as in process).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import dramatiq
import redis
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
from pydantic import BaseModel

from offmaps.errors import JobNotFoundError, JobQueueError
from offmaps.jobs.kinds import JobKinds
from offmaps.jobs.model import Job
from offmaps.jobs.runner import StoredJobs, process_id, process_is_alive
from offmaps.jobs.store import JobStore
from offmaps.schemas.jobs import JobStatus
from offmaps.storage import ObjectStore

__all__ = ["QUEUE", "QueueJobRunner"]

QUEUE = "offmaps-jobs"
"""The Redis queue (Dramatiq's queue name) jobs' ids wait on."""
_ACTOR = "offmaps_run_job"
RETRIED = "run again: the worker running it stopped before it finished"

_log = logging.getLogger(__name__)


class QueueJobRunner(StoredJobs):
    """Stores jobs and queues their ids in Redis; :meth:`work` runs them in a worker process.

    Args:
        store: where jobs' state lives (shared by every server and worker process).
        kinds: the kinds this process can run.
        objects: the object store holding jobs' output areas (``jobs/<id>/files/``).
        scratch: the local folder for jobs' scratch folders (``<scratch>/<id>/``).
        url: the Redis URL (``redis://host:port/db``).
        keep: seconds an ended job and its files are kept.
        heartbeat_s: seconds without a heartbeat after which a worker counts as dead, and the
            jobs it held go back on the queue.
        maintenance_chance: how many of a million Redis commands look for dead workers'
            messages (Dramatiq's ``maintenance_chance``; an idle worker polls about once a
            second).
        namespace: the prefix of every Redis key (several deployments may share one Redis).
    """

    def __init__(
        self,
        store: JobStore,
        kinds: JobKinds,
        *,
        objects: ObjectStore,
        scratch: Path,
        url: str,
        keep: float = 24 * 3600,
        heartbeat_s: float = 60.0,
        maintenance_chance: int = 10_000,
        namespace: str = "offmaps",
    ) -> None:
        super().__init__(store, kinds, objects=objects, scratch=scratch, keep=keep)
        self.broker = RedisBroker(  # type: ignore[no-untyped-call] # its __init__ is untyped
            url=url,
            namespace=namespace,
            heartbeat_timeout=int(heartbeat_s * 1000),
            maintenance_chance=min(max(maintenance_chance, 0), MAINTENANCE_SCALE),
            middleware=[],  # no retries, age or time limits: a job ends as the job decides
        )
        self._actor: dramatiq.Actor[[str], None] = dramatiq.actor(
            broker=self.broker, actor_name=_ACTOR, queue_name=QUEUE
        )(self._take)

    def submit(self, kind: str, payload: BaseModel, *, owner: str) -> Job:
        """Store a new job of ``kind`` for ``payload``, started by user ``owner``, and queue
        it for a worker; returns at once (the job is ``pending`` until a worker takes it).

        Raises:
            UnknownJobKindError: no such kind here.
            InvalidJobPayloadError: no owner.
            JobQueueError: Redis cannot be reached; the job is recorded as failed, saying so.
        """
        job = self._new_job(kind, payload, owner, None)
        try:
            self._actor.send(job.id)
        except (redis.RedisError, dramatiq.errors.BrokerConnectionError) as exc:
            reason = f"the job queue cannot be reached: {exc}"
            self._end(job, JobStatus.FAILED, reason)
            raise JobQueueError(reason) from None
        return job

    def _take(self, job_id: str) -> None:
        """Run the job a message names, in this worker (Dramatiq calls it on a worker thread).

        A job that ended, or was deleted, is left as it is (a message delivered twice). A job
        another worker was running comes back only when that worker stopped (its heartbeat
        expired): it runs again from scratch, what the stopped attempt made removed first.
        """
        try:
            job = self.store.get(job_id)
        except JobNotFoundError:
            return
        if job.status.done:
            return
        if job.status is JobStatus.RUNNING and job.runner != process_id():
            if job.runner is not None and process_is_alive(job.runner):
                return  # a message given twice: its worker on this host still runs it
            self._abandon(job)
            job.message = RETRIED
            _log.warning("job %s: %s (%s)", job.id, RETRIED, job.runner)
        self.run_job(job)

    def work(self, concurrency: int, stop: threading.Event) -> None:
        """Run queued jobs, ``concurrency`` at once, until ``stop`` is set; then take no more
        and let the running ones finish (jobs prefetched but not started go back on the
        queue). Raises :class:`JobQueueError` when Redis cannot be reached at start."""
        try:
            self.broker.client.ping()
        except redis.RedisError as exc:
            raise JobQueueError(f"the job queue cannot be reached: {exc}") from None
        worker = dramatiq.Worker(self.broker, queues={QUEUE}, worker_threads=concurrency)
        worker.queue_prefetch = concurrency  # hold no job another worker could start now
        worker.start()
        try:
            stop.wait()
        finally:
            worker.stop()

    def close(self) -> None:
        """Close the connection to Redis; jobs run in workers, not here."""
        self.broker.close()
