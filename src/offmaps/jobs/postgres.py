"""Jobs' state in PostgreSQL: the :class:`~offmaps.jobs.JobStore` of several server and worker
processes on several hosts.

One row per job in the ``jobs`` table of the state schema (``offmaps_state``): what
``job.json`` of the folder store holds, and the cancel request as a column. The payload and the
result are kept as the same JSON text the folder store writes (``TEXT``, not ``JSONB``: JSONB
would refuse a result holding ``NaN``, which the folder store keeps).

The store gets its database from the caller (:class:`StateDatabase`, which
:class:`offmaps.state.postgres.PostgresDatabase` is): ``offmaps.jobs`` and ``offmaps.state``
are independent packages of one layer, so the connections and migrations live in one place
and :func:`offmaps.services.build_services` hands them to both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict
from typing import Any, Protocol

import psycopg

from offmaps.errors import JobNotFoundError
from offmaps.jobs.model import Job
from offmaps.jobs.store import check_job_id
from offmaps.schemas.jobs import JobStatus

__all__ = ["COMPONENT", "MIGRATIONS", "PostgresJobStore", "StateDatabase"]

COMPONENT = "jobs"
"""The name of the job store's tables in the schema's ``migrations`` table."""

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "the jobs table",
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            owner TEXT,
            status TEXT NOT NULL,
            progress DOUBLE PRECISION NOT NULL,
            message TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            finished DOUBLE PRECISION,
            error TEXT,
            result TEXT,
            payload TEXT NOT NULL,
            runner TEXT,
            cancel_requested BOOLEAN NOT NULL DEFAULT false
        );
        CREATE INDEX jobs_owner ON jobs (owner);
        """,
    ),
)
"""The job store's schema, step by step (step *n* makes version *n*): append, never edit."""

_SELECT = (
    "SELECT id, kind, owner, status, progress, message, created, finished, error, result, "
    "payload, runner FROM jobs"
)


class StateDatabase(Protocol):
    """What the store needs of its database: :class:`offmaps.state.postgres.PostgresDatabase`."""

    def require(
        self, component: str, migrations: Sequence[tuple[str, str]], *, migrate: bool = False
    ) -> int:
        """Check (and, as allowed, make) the component's tables at open."""
        ...

    def connection(self) -> AbstractContextManager[psycopg.Connection[tuple[Any, ...]]]:
        """A connection in autocommit mode (each statement its own transaction); database
        errors as ``FeatureStoreError``."""
        ...

    def close(self) -> None:
        """Close the connections."""
        ...


def _job(row: tuple[Any, ...]) -> Job:
    return Job(
        id=row[0], kind=row[1], owner=row[2], status=JobStatus(row[3]), progress=row[4],
        message=row[5], created=row[6], finished=row[7], error=row[8],
        result=None if row[9] is None else json.loads(row[9]), payload=json.loads(row[10]),
        runner=row[11],
    )  # fmt: skip


def _values(job: Job) -> tuple[Any, ...]:
    data = asdict(job)
    return (
        job.id, job.kind, job.owner, JobStatus(job.status).value, job.progress, job.message,
        job.created, job.finished, job.error,
        None if data["result"] is None else json.dumps(data["result"]),
        json.dumps(data["payload"]), job.runner,
    )  # fmt: skip


class PostgresJobStore:
    """Jobs as rows of the ``jobs`` table of a PostgreSQL schema.

    Args:
        database: the state schema's database (the store closes it in :meth:`close`).
        migrate: upgrade older tables at open instead of refusing to open.

    Raises:
        FeatureStoreError: the database cannot be reached, or its tables are at another
            version (the message says what to do).
    """

    def __init__(self, database: StateDatabase, *, migrate: bool = False) -> None:
        self.database = database
        database.require(COMPONENT, MIGRATIONS, migrate=migrate)

    def __repr__(self) -> str:
        return f"PostgresJobStore({self.database!r})"

    def create(self, job: Job) -> None:
        """Record a new job."""
        check_job_id(job.id)
        with self.database.connection() as conn:
            conn.execute(
                "INSERT INTO jobs (id, kind, owner, status, progress, message, created, finished, "
                "error, result, payload, runner) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                _values(job),
            )

    def save(self, job: Job) -> None:
        """Record a job's current state.

        Raises:
            JobNotFoundError: no such job (it was deleted).
        """
        values = _values(job)
        with self.database.connection() as conn:
            changed = conn.execute(
                "UPDATE jobs SET kind = %s, owner = %s, status = %s, progress = %s, "
                "message = %s, created = %s, finished = %s, error = %s, result = %s, "
                "payload = %s, runner = %s WHERE id = %s",
                (*values[1:], values[0]),
            ).rowcount
        if changed != 1:
            raise JobNotFoundError(f"no job {job.id[:64]!r}")

    def get(self, job_id: str) -> Job:
        """A job's current state.

        Raises:
            JobNotFoundError: no such job.
        """
        check_job_id(job_id)
        with self.database.connection() as conn:
            row = conn.execute(_SELECT + " WHERE id = %s", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job {job_id[:64]!r}")
        return _job(row)

    def iter_jobs(self) -> Iterator[Job]:
        """Every job kept, in no particular order (read at once: no connection is held while
        the caller goes through them)."""
        with self.database.connection() as conn:
            rows = conn.execute(_SELECT).fetchall()
        for row in rows:
            yield _job(row)

    def request_cancel(self, job_id: str) -> None:
        """Ask a job to stop; it ends as cancelled at its next check.

        Raises:
            JobNotFoundError: no such job.
        """
        check_job_id(job_id)
        with self.database.connection() as conn:
            changed = conn.execute(
                "UPDATE jobs SET cancel_requested = true WHERE id = %s", (job_id,)
            ).rowcount
        if changed != 1:
            raise JobNotFoundError(f"no job {job_id[:64]!r}")

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked the job to stop."""
        check_job_id(job_id)
        with self.database.connection() as conn:
            row = conn.execute(
                "SELECT cancel_requested FROM jobs WHERE id = %s", (job_id,)
            ).fetchone()
        return bool(row is not None and row[0])

    def delete(self, job_id: str) -> None:
        """Remove a job's state.

        Raises:
            JobNotFoundError: no such job.
        """
        check_job_id(job_id)
        with self.database.connection() as conn:
            changed = conn.execute("DELETE FROM jobs WHERE id = %s", (job_id,)).rowcount
        if changed != 1:
            raise JobNotFoundError(f"no job {job_id[:64]!r}")

    def close(self) -> None:
        """Close the database's connections."""
        self.database.close()
