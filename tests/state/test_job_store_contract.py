"""The job store contract: the folder store and the PostgreSQL store pass these same tests.

The PostgreSQL store needs ``OFFMAPS_TEST_POSTGRES_URL`` (``make test`` starts the server): without
it these tests fail loudly, never skip. Each test gets a schema of its own, dropped afterwards, so
tests run side by side (``pytest -n 2``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import BaseModel

from offmaps.errors import JobNotFoundError
from offmaps.jobs import FolderJobStore, InProcessJobRunner, Job, JobContext, JobKind, JobKinds
from offmaps.jobs.postgres import PostgresJobStore
from offmaps.jobs.store import JobStore
from offmaps.schemas.jobs import JobStatus
from offmaps.storage import MemoryObjectStore
from tests.state.backends import opening

BACKENDS = ["folder", "postgres"]

Opener = Callable[[], JobStore]


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores of one backend on one place: each call is another process's view."""
    opener = opening(request.param, lambda: FolderJobStore(tmp_path / "jobs"), PostgresJobStore)
    yield from cast(Iterator[Opener], opener)  # the backends' two classes, as the protocol


@pytest.fixture
def store(open_store: Opener) -> JobStore:
    """A fresh, empty store of each backend."""
    return open_store()


def new_job(**changes: Any) -> Job:
    """A pending job with a payload that has a bit of everything JSON has."""
    values: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "kind": "count",
        "owner": "ada",
        "payload": {"to": 3, "name": "Töölö ✓", "area": [24.9, 60.1], "deep": {"a": [None]}},
    }
    return Job(**{**values, **changes})


def test_a_created_job_reads_back_as_it_was(store: JobStore) -> None:
    job = new_job()
    store.create(job)
    assert store.get(job.id) == job
    assert isinstance(store.get(job.id).status, JobStatus)


def test_a_saved_job_reads_back_with_every_change(store: JobStore) -> None:
    job = new_job()
    store.create(job)
    job.status = JobStatus.SUCCEEDED
    job.progress = 1.0
    job.message = "done"
    job.finished = time.time()
    job.result = {"files": [{"path": "map/package.json", "size": 12}], "ratio": 0.25}
    job.runner = "host:1:2"
    store.save(job)
    assert store.get(job.id) == job


def test_a_failed_job_keeps_its_error(store: JobStore) -> None:
    job = new_job(status=JobStatus.FAILED, error="ValueError: no", finished=1.5)
    store.create(job)
    found = store.get(job.id)
    assert (found.status, found.error, found.finished) == (JobStatus.FAILED, "ValueError: no", 1.5)


def test_a_job_of_no_owner_reads_back(store: JobStore) -> None:
    job = new_job(owner=None)
    store.create(job)
    assert store.get(job.id).owner is None


@pytest.mark.parametrize("job_id", ["0" * 32, "nope", "../" * 11, "A" * 32, ""])
def test_an_unknown_or_malformed_id_is_not_found(store: JobStore, job_id: str) -> None:
    with pytest.raises(JobNotFoundError):
        store.get(job_id)


def test_every_job_is_listed(store: JobStore) -> None:
    jobs = [new_job() for _ in range(5)]
    for job in jobs:
        store.create(job)
    assert sorted(job.id for job in store.iter_jobs()) == sorted(job.id for job in jobs)


def test_a_cancel_request_marks_that_job_only(store: JobStore) -> None:
    first, second = new_job(), new_job()
    store.create(first)
    store.create(second)
    assert not store.cancel_requested(first.id)
    store.request_cancel(first.id)
    store.request_cancel(first.id)  # asking twice is asking once
    assert store.cancel_requested(first.id)
    assert not store.cancel_requested(second.id)


def test_saving_a_job_keeps_its_cancel_request(store: JobStore) -> None:
    job = new_job()
    store.create(job)
    store.request_cancel(job.id)
    job.progress = 0.5
    store.save(job)
    assert store.cancel_requested(job.id)


def test_a_deleted_job_is_gone(store: JobStore) -> None:
    kept, deleted = new_job(), new_job()
    store.create(kept)
    store.create(deleted)
    store.delete(deleted.id)
    with pytest.raises(JobNotFoundError):
        store.get(deleted.id)
    with pytest.raises(JobNotFoundError):
        store.delete(deleted.id)
    assert [job.id for job in store.iter_jobs()] == [kept.id]
    assert not store.cancel_requested(deleted.id)


def test_another_process_sees_the_same_jobs_and_cancel_requests(open_store: Opener) -> None:
    here, there = open_store(), open_store()
    job = new_job()
    here.create(job)
    job.progress = 0.5
    here.save(job)
    assert there.get(job.id).progress == 0.5
    there.request_cancel(job.id)
    assert here.cancel_requested(job.id)


def test_saves_from_many_threads_all_land(store: JobStore) -> None:
    jobs = [new_job() for _ in range(8)]
    for job in jobs:
        store.create(job)

    def work(job: Job) -> None:
        for step in range(1, 11):
            job.progress = step / 10
            store.save(job)

    threads = [threading.Thread(target=work, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {store.get(job.id).progress for job in jobs} == {1.0}


class Count(BaseModel):
    """A payload: count to ``to``."""

    to: int


def count(payload: Count, context: JobContext) -> dict[str, Any]:
    for n in range(payload.to):
        context.check_cancelled()
        context.progress((n + 1) / payload.to, f"{n + 1} of {payload.to}")
    return {"counted": payload.to}


def test_a_job_runs_to_its_end_on_the_store(store: JobStore, tmp_path: Path) -> None:
    runner = InProcessJobRunner(
        store,
        JobKinds([JobKind("count", Count, count)]),
        objects=MemoryObjectStore(),
        scratch=tmp_path / "scratch",
    )
    try:
        job = runner.submit("count", Count(to=5), owner="ada")
        deadline = time.monotonic() + 30
        while not (found := runner.get(job.id)).status.done:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        runner.close()
    assert (found.status, found.result, found.progress) == (
        JobStatus.SUCCEEDED,
        {"counted": 5},
        1.0,
    )
