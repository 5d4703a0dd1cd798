"""Jobs on the wire: one status vocabulary and the job document, for the server and the SDK.

A job is long work a server runs in the background (generating an offline map today; packaging
preplanned areas, seeding caches and exports later). The server reports it as a
:class:`JobDocument`; the SDK follows it with the same :class:`JobStatus`, adding the two phases
only a client has (``not_started`` before the request, ``downloading`` after the server is done).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["JobDocument", "JobLink", "JobStatus"]


class JobStatus(StrEnum):
    """Where a job is in its life.

    The server's jobs go ``pending`` → ``running`` → ``succeeded``, ``failed`` or ``cancelled``.
    A client's job (``GenerateOfflineMapJob``, ``OfflineMapSyncJob``) starts ``not_started`` and,
    for work that ends in a download, is ``downloading`` between the server's end and its own.
    """

    NOT_STARTED = "not_started"
    PENDING = "pending"
    RUNNING = "running"
    DOWNLOADING = "downloading"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        """Whether the job has ended."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobLink(BaseModel):
    """A link of a job document."""

    rel: str
    href: str


class JobDocument(BaseModel):
    """A job as ``GET /api/jobs/{id}`` returns it.

    Attributes:
        id: the job's id (32 hex characters).
        kind: what the job does (``generate_offline_map``).
        status: where it is.
        progress: the fraction done, 0 to 1.
        message: what it is doing, or how it ended.
        created: when it was accepted (seconds since the epoch).
        finished: when it ended, or ``None``.
        error: why it failed, or ``None``.
        result: what it made, by kind; for offline maps the files (with ``href``) and errors.
        links: ``self``.
    """

    model_config = ConfigDict(extra="allow")

    id: str
    kind: str
    status: JobStatus
    progress: float = Field(ge=0.0, le=1.0)
    message: str
    created: float
    finished: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    links: list[JobLink] = Field(default_factory=list)
