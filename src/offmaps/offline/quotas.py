"""Per-user quotas on taking maps offline: jobs at once, replicas, bytes of job output kept.

Checked before a generate job is accepted (:meth:`OfflineQuotas.check_generate`), from the job
store and the replica registry, so any process that serves a user counts the same. The replica
quota is checked once more where the job registers a replica, in the same statement as the
insertion (:meth:`offmaps.state.ReplicaRegistry.register`), so jobs running together cannot
pass it. The limits are :class:`offmaps.settings.LimitSettings`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from offmaps.errors import InvalidOfflineParametersError, QuotaExceededError
from offmaps.jobs import Job, JobRunner
from offmaps.schemas.jobs import JobStatus
from offmaps.settings import LimitSettings
from offmaps.state import ReplicaRegistry

__all__ = ["JOB_RETRY_AFTER_S", "OfflineQuotas", "kept_bytes"]

JOB_RETRY_AFTER_S = 30
"""The ``Retry-After`` of a refusal for too many jobs at once: about how long a small job runs."""


def kept_bytes(job: Job) -> int:
    """The bytes of the files a job's result lists (0 for a job that kept none)."""
    files = (job.result or {}).get("files", [])
    return sum(int(entry.get("size", 0)) for entry in files if isinstance(entry, dict))


@dataclass(frozen=True)
class OfflineQuotas:
    """The quotas of one server's users.

    Attributes:
        limits: the quotas.
        jobs: the job runner (its store holds every process's jobs).
        replicas: the replica registry.
    """

    limits: LimitSettings
    jobs: JobRunner
    replicas: ReplicaRegistry

    def check_generate(
        self, owner: str, estimated_bytes: int, *, what: str = "offline map"
    ) -> None:
        """Refuse a new job of ``owner`` estimated at ``estimated_bytes`` of files kept, if it
        would go over a quota. ``what`` the job makes, for messages: an ``offline map`` (the
        replica quota is checked only for those, which register replicas) or a ``cache export``.

        Raises:
            QuotaExceededError: ``owner`` has ``jobs_per_user`` jobs pending or running, or
                ``replicas_per_user`` replicas, or keeps so many bytes of job output that this
                job's estimate would go over ``job_bytes_per_user``; ``retry_after`` says when
                asking again may work (for bytes: when enough kept jobs will have expired).
            InvalidOfflineParametersError: the estimate alone is over ``job_bytes_per_user``:
                no waiting helps.
        """
        limits = self.limits
        active = 0
        kept: list[tuple[float, int]] = []
        for job in self.jobs.store.iter_jobs():
            if job.owner != owner:
                continue
            if not job.status.done:
                active += 1
            elif job.status is JobStatus.SUCCEEDED:
                kept.append((job.finished or job.created, kept_bytes(job)))
        if active >= limits.jobs_per_user:
            raise QuotaExceededError(
                f"{owner} has {active} jobs pending or running, the most a user "
                f"may at once: wait for one to end, or cancel one (DELETE /api/jobs/{{id}})",
                quota="jobs",
                limit=limits.jobs_per_user,
                used=active,
                retry_after=JOB_RETRY_AFTER_S,
            )
        replicas = self.replicas.count_owned(owner) if what == "offline map" else 0
        if replicas >= limits.replicas_per_user:
            raise QuotaExceededError(
                f"{owner} has {replicas} replicas registered, the most a user may: unregister "
                "one you no longer sync (DELETE /api/replicas/{id}) first",
                quota="replicas",
                limit=limits.replicas_per_user,
                used=replicas,
                retry_after=limits.quota_retry_after_s,
            )
        quota = limits.job_bytes_per_user
        if estimated_bytes > quota:
            raise InvalidOfflineParametersError(
                f"this {what} is estimated at {estimated_bytes:,} bytes, over the "
                f"{quota:,} bytes of job output a user may keep: ask for a smaller area, fewer "
                "levels or fewer layers"
            )
        used = sum(size for _, size in kept)
        if used + estimated_bytes <= quota:
            return
        # kept files expire oldest first: wait until enough of them have
        now = time.time()
        freed, wait = 0, limits.quota_retry_after_s
        for finished, size in sorted(kept):
            freed += size
            if used - freed + estimated_bytes <= quota:
                wait = int(finished + self.jobs.keep - now) + 1
                break
        raise QuotaExceededError(
            f"{owner} keeps {used:,} bytes of job output and this {what} is estimated at "
            f"{estimated_bytes:,}: over the {quota:,} bytes a user may keep; remove finished "
            "jobs you have downloaded (DELETE /api/jobs/{id}), or wait until they expire",
            quota="job_bytes",
            limit=quota,
            used=used,
            retry_after=wait,
        )
