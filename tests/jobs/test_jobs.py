"""The job machinery: kinds with serializable payloads, the folder store, the in-process runner
and the recovery of jobs left by a process that died."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from offmaps.errors import (
    InvalidJobPayloadError,
    JobCancelledError,
    JobNotFoundError,
    UnknownJobKindError,
)
from offmaps.jobs import (
    FolderJobStore,
    InProcessJobRunner,
    Job,
    JobContext,
    JobKind,
    JobKinds,
    process_id,
    process_is_alive,
)
from offmaps.jobs.runner import DIED
from offmaps.schemas.jobs import JobStatus


class Count(BaseModel):
    """A payload: count to ``to``, writing each number to a file."""

    model_config = ConfigDict(extra="forbid")

    to: int
    fail_at: int | None = None


def count(payload: Count, context: JobContext) -> dict[str, Any]:
    for n in range(payload.to):
        context.check_cancelled()
        if n == payload.fail_at:
            raise ValueError(f"failed at {n}")
        (context.folder / f"{n}.txt").write_text(str(n))
        context.progress((n + 1) / payload.to, f"{n + 1} of {payload.to}")
    return {"counted": payload.to}


class Gate:
    """A job that waits until released, so a test can act while it runs."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def run(self, payload: Count, context: JobContext) -> dict[str, Any]:
        self.started.set()
        while not self.release.wait(0.01):
            context.check_cancelled()
        return {"released": True}


KINDS = JobKinds([JobKind("count", Count, count)])


def wait(runner: InProcessJobRunner, job_id: str, timeout: float = 30) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = runner.get(job_id)
        if job.status.done:
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not end: {runner.get(job_id)}")


@pytest.fixture
def store(tmp_path: Path) -> FolderJobStore:
    return FolderJobStore(tmp_path / "jobs")


@pytest.fixture
def runner(store: FolderJobStore) -> Iterator[InProcessJobRunner]:
    runner = InProcessJobRunner(store, KINDS)
    yield runner
    runner.close()


def test_a_job_runs_from_its_stored_payload_and_keeps_its_files(
    runner: InProcessJobRunner, store: FolderJobStore
) -> None:
    job = runner.submit("count", Count(to=3), owner="alice")
    assert json.loads((store.folder / job.id / "job.json").read_text())["payload"] == {
        "to": 3,
        "fail_at": None,
    }
    done = wait(runner, job.id)
    assert done.status is JobStatus.SUCCEEDED
    assert done.result == {"counted": 3}
    assert done.progress == 1.0
    assert done.owner == "alice"
    assert sorted(p.name for p in store.files(job.id).iterdir()) == ["0.txt", "1.txt", "2.txt"]


def test_a_failed_job_says_why_and_keeps_no_files(
    runner: InProcessJobRunner, store: FolderJobStore
) -> None:
    job = runner.submit("count", Count(to=3, fail_at=1), owner=None)
    done = wait(runner, job.id)
    assert done.status is JobStatus.FAILED
    assert done.error == "ValueError: failed at 1"
    assert not store.files(job.id).exists()


def test_a_cancelled_job_ends_cancelled_without_files(store: FolderJobStore) -> None:
    gate = Gate()
    runner = InProcessJobRunner(store, JobKinds([JobKind("gate", Count, gate.run)]))
    try:
        job = runner.submit("gate", Count(to=1), owner=None)
        assert gate.started.wait(30)
        runner.cancel(job.id)
        done = wait(runner, job.id)
        assert done.status is JobStatus.CANCELLED
        assert done.error is None
        assert not store.files(job.id).exists()
    finally:
        runner.close()


def test_unknown_kinds_and_bad_payloads_are_refused(runner: InProcessJobRunner) -> None:
    with pytest.raises(UnknownJobKindError, match="no job kind 'nope' here") as found:
        runner.submit("nope", Count(to=1), owner=None)
    assert found.value.kind == "nope"
    with pytest.raises(InvalidJobPayloadError, match="count job's payload"):
        KINDS.get_kind("count").parse({"to": "many"})
    with pytest.raises(InvalidJobPayloadError):
        KINDS.get_kind("count").parse({"to": 1, "extra": True})


def test_a_kind_is_registered_once() -> None:
    with pytest.raises(ValueError, match="twice"):
        JobKinds([JobKind("count", Count, count), JobKind("count", Count, count)])
    assert "count" in KINDS
    assert "other" not in KINDS
    assert list(KINDS) == ["count"]


@pytest.mark.parametrize("job_id", ["", "x" * 32, "../" * 11, "A" * 32, "0" * 31, "0" * 33])
def test_malformed_job_ids_are_not_found(runner: InProcessJobRunner, job_id: str) -> None:
    with pytest.raises(JobNotFoundError):
        runner.get(job_id)


def test_a_job_whose_state_is_damaged_is_not_found(
    runner: InProcessJobRunner, store: FolderJobStore
) -> None:
    job = runner.submit("count", Count(to=1), owner=None)
    wait(runner, job.id)
    (store.folder / job.id / "job.json").write_text('{"id": 1}')
    with pytest.raises(JobNotFoundError, match="cannot be read"):
        runner.get(job.id)
    assert [j.id for j in store.iter_jobs()] == []


def test_ended_jobs_older_than_keep_are_removed(store: FolderJobStore) -> None:
    runner = InProcessJobRunner(store, KINDS, keep=0.0)
    try:
        first = runner.submit("count", Count(to=1), owner=None)
        wait(runner, first.id)
        second = runner.submit("count", Count(to=1), owner=None)  # cleans up before it starts
        with pytest.raises(JobNotFoundError):
            runner.get(first.id)
        wait(runner, second.id)
    finally:
        runner.close()


def test_the_context_refuses_to_go_on_once_cancelled(store: FolderJobStore) -> None:
    job = Job(id="a" * 32, kind="count", owner=None)
    store.create(job)
    context = JobContext(store, job)
    context.check_cancelled()
    store.request_cancel(job.id)
    with pytest.raises(JobCancelledError):
        context.check_cancelled()


def _dead_process_id() -> str:
    """The id of a process that has ended."""
    code = "from offmaps.jobs import process_id; print(process_id())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_process_ids_tell_live_from_dead_processes() -> None:
    assert process_is_alive(process_id()) is True
    assert process_is_alive(_dead_process_id()) is False
    host, pid, _ = process_id().split(":")
    assert process_is_alive(f"{host}:{pid}:0") is False  # the same pid, started at another time
    assert process_is_alive("elsewhere.example:1:1") is None
    assert process_is_alive(f"{host}:notapid:1") is False


def test_jobs_of_a_dead_process_are_run_again_or_marked_failed(store: FolderJobStore) -> None:
    dead = _dead_process_id()
    pending = Job(id="1" * 32, kind="count", owner="bob", payload={"to": 2}, runner=dead)
    running = Job(
        id="2" * 32, kind="count", owner="bob", payload={"to": 2}, runner=dead,
        status=JobStatus.RUNNING, progress=0.5,
    )  # fmt: skip
    alive = Job(id="3" * 32, kind="count", owner="bob", payload={"to": 2}, runner=process_id())
    for job in (pending, running, alive):
        store.create(job)
    (store.files(running.id) / "half.gpkg").write_bytes(b"half")

    runner = InProcessJobRunner(store, KINDS)
    try:
        assert wait(runner, pending.id).result == {"counted": 2}
        failed = runner.get(running.id)
        assert failed.status is JobStatus.FAILED
        assert failed.error == DIED
        assert not store.files(running.id).exists()
        assert runner.get(alive.id).status is JobStatus.PENDING  # its process still runs
    finally:
        runner.close()


def test_a_pending_job_of_an_unknown_kind_is_marked_failed_at_recovery(
    store: FolderJobStore,
) -> None:
    job = Job(id="4" * 32, kind="gone", owner=None, payload={}, runner=_dead_process_id())
    store.create(job)
    runner = InProcessJobRunner(store, KINDS)
    try:
        assert runner.get(job.id).status is JobStatus.FAILED
    finally:
        runner.close()
