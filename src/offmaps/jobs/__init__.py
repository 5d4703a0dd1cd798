"""Background jobs: named kinds with serializable payloads, their state, and runners.

Layer 3 of DESIGN.md. A :class:`JobKind` names work and its pydantic payload; a
:class:`JobRunner` stores each job (:class:`JobStore`) before running it, so any process that
registered the kind can run or answer for it. :class:`InProcessJobRunner` is the embedded
default (a thread pool); jobs of a process that died are found at start and never stay
"running" forever.
"""

from offmaps.jobs.access import cancel_or_remove, visible_job
from offmaps.jobs.kinds import JobKind, JobKinds
from offmaps.jobs.model import Job, JobContext, job_document
from offmaps.jobs.runner import InProcessJobRunner, JobRunner, process_id, process_is_alive
from offmaps.jobs.store import FolderJobStore, JobStore, check_job_id

__all__ = [
    "FolderJobStore",
    "InProcessJobRunner",
    "Job",
    "JobContext",
    "JobKind",
    "JobKinds",
    "JobRunner",
    "JobStore",
    "cancel_or_remove",
    "check_job_id",
    "job_document",
    "process_id",
    "process_is_alive",
    "visible_job",
]
