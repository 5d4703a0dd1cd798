"""Who may see and stop a job: its owner, or an admin (every API asks the same way)."""

from __future__ import annotations

from offmaps.access import Principal, Scope
from offmaps.errors import JobNotFoundError
from offmaps.jobs.model import Job
from offmaps.jobs.runner import JobRunner

__all__ = ["cancel_or_remove", "visible_job"]


def visible_job(jobs: JobRunner, job_id: str, principal: Principal) -> Job:
    """Job ``job_id`` if ``principal`` may see it: its owner, or an admin (the only ones who
    see jobs stored without an owner).

    Raises:
        JobNotFoundError: no such job, or one the caller may not see (the same answer, so ids
            of other users' jobs do not leak).
    """
    job = jobs.get(job_id)
    if principal.has(Scope.ADMIN):
        return job
    if principal.anonymous or job.owner is None or job.owner != principal.subject:
        raise JobNotFoundError(f"no job {job.id!r}")
    return job


def cancel_or_remove(jobs: JobRunner, job_id: str, principal: Principal) -> bool:
    """Cancel a job of ``principal`` that has not ended, or remove an ended one with its files.

    Returns:
        Whether the job had ended and was removed (else it was cancelled).

    Raises:
        JobNotFoundError: as :func:`visible_job`.
    """
    job = visible_job(jobs, job_id, principal)
    if job.status.done:
        jobs.delete(job_id)
        return True
    jobs.cancel(job_id)
    return False
