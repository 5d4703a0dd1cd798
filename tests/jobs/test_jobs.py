"""The job machinery: kinds with serializable payloads, the folder store, the in-process runner,
jobs' output areas and scratch folders, and the recovery of jobs left by a process that died."""

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
    JobRunner,
    process_id,
    process_is_alive,
)
from offmaps.jobs.runner import DIED
from offmaps.schemas.jobs import JobStatus
from offmaps.storage import MemoryObjectStore, ObjectStore


class Count(BaseModel):
    """A payload: count to ``to``, making a file for each number in scratch and publishing it."""

    model_config = ConfigDict(extra="forbid")

    to: int
    fail_at: int | None = None


def count(payload: Count, context: JobContext) -> dict[str, Any]:
    assert context.scratch.is_dir()
    for n in range(payload.to):
        context.check_cancelled()
        if n == payload.fail_at:
            raise ValueError(f"failed at {n}")
        (context.scratch / f"{n}.txt").write_text(str(n))
        context.output.put_file(f"numbers/{n}.txt", context.scratch / f"{n}.txt")
        context.progress((n + 1) / payload.to, f"{n + 1} of {payload.to}")
    (context.scratch / "left-over.tmp").write_text("scratch only")
    return {"counted": payload.to}


class Gate:
    """A job that waits until released, so a test can act while it runs."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def run(self, payload: Count, context: JobContext) -> dict[str, Any]:
        (context.scratch / "partial.gpkg").write_bytes(b"half")
        context.output.put("published.txt", b"done already")
        self.started.set()
        while not self.release.wait(0.01):
            context.check_cancelled()
        return {"released": True}


KINDS = JobKinds([JobKind("count", Count, count)])


def wait(runner: JobRunner, job_id: str, timeout: float = 60) -> Job:
    """The job once it has ended."""
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
def objects() -> MemoryObjectStore:
    return MemoryObjectStore()


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path / "scratch"


def make_runner(
    store: FolderJobStore,
    objects: ObjectStore,
    scratch: Path,
    kinds: JobKinds = KINDS,
    **options: Any,
) -> InProcessJobRunner:
    return InProcessJobRunner(store, kinds, objects=objects, scratch=scratch, **options)


@pytest.fixture
def runner(
    store: FolderJobStore, objects: MemoryObjectStore, scratch: Path
) -> Iterator[InProcessJobRunner]:
    runner = make_runner(store, objects, scratch)
    yield runner
    runner.close()


def object_keys(objects: ObjectStore, prefix: str = "") -> list[str]:
    return [info.key for info in objects.list(prefix)]


def test_a_job_runs_from_its_stored_payload_and_keeps_its_files(
    runner: InProcessJobRunner, store: FolderJobStore, objects: MemoryObjectStore, scratch: Path
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
    names = ["numbers/0.txt", "numbers/1.txt", "numbers/2.txt"]
    assert object_keys(runner.output(job.id)) == names
    assert object_keys(objects) == [f"jobs/{job.id}/files/{name}" for name in names]
    assert runner.output(job.id).get("numbers/2.txt") == b"2"
    assert not (scratch / job.id).exists()  # the scratch folder goes, whatever happens
    assert sorted(p.name for p in (store.folder / job.id).iterdir()) == ["job.json"]


def test_a_failed_job_says_why_and_keeps_no_files(
    runner: InProcessJobRunner, objects: MemoryObjectStore, scratch: Path
) -> None:
    job = runner.submit("count", Count(to=3, fail_at=2), owner="alice")  # after publishing two
    done = wait(runner, job.id)
    assert done.status is JobStatus.FAILED
    assert done.error == "ValueError: failed at 2"
    assert object_keys(objects) == []
    assert not (scratch / job.id).exists()


def test_a_job_failing_while_it_publishes_keeps_no_files(
    store: FolderJobStore, scratch: Path
) -> None:
    class FailingStore(MemoryObjectStore):
        """Fails the third put_file, after two files were published."""

        def __init__(self) -> None:
            super().__init__()
            self.moved = 0

        def put_file(self, key: str, path: Path | str) -> Any:
            self.moved += 1
            if self.moved == 3:
                raise OSError(28, "No space left on device")
            return super().put_file(key, path)

    objects = FailingStore()
    runner = make_runner(store, objects, scratch)
    try:
        job = runner.submit("count", Count(to=5), owner="alice")
        done = wait(runner, job.id)
    finally:
        runner.close()
    assert done.status is JobStatus.FAILED
    assert done.error == "OSError: [Errno 28] No space left on device"
    assert objects.moved == 3
    assert object_keys(objects) == []
    assert not (scratch / job.id).exists()


def test_a_cancelled_job_ends_cancelled_without_files(
    store: FolderJobStore, objects: MemoryObjectStore, scratch: Path
) -> None:
    gate = Gate()
    runner = make_runner(store, objects, scratch, JobKinds([JobKind("gate", Count, gate.run)]))
    try:
        job = runner.submit("gate", Count(to=1), owner="alice")
        assert gate.started.wait(30)
        assert (scratch / job.id / "partial.gpkg").read_bytes() == b"half"
        assert object_keys(objects) == [f"jobs/{job.id}/files/published.txt"]
        runner.cancel(job.id)
        done = wait(runner, job.id)
        assert done.status is JobStatus.CANCELLED
        assert done.error is None
        assert object_keys(objects) == []
        assert not (scratch / job.id).exists()
    finally:
        runner.close()


def test_deleting_a_job_removes_its_files(
    runner: InProcessJobRunner, store: FolderJobStore, objects: MemoryObjectStore
) -> None:
    other = objects.put("jobs/elsewhere.txt", b"not a job's")
    job = runner.submit("count", Count(to=2), owner="alice")
    wait(runner, job.id)
    assert len(object_keys(objects, f"jobs/{job.id}/")) == 2
    runner.delete(job.id)
    assert object_keys(objects) == [other.key]
    assert not (store.folder / job.id).exists()
    with pytest.raises(JobNotFoundError):
        runner.delete(job.id)
    with pytest.raises(JobNotFoundError):
        runner.output("../" * 11)


def test_unknown_kinds_and_bad_payloads_are_refused(runner: InProcessJobRunner) -> None:
    with pytest.raises(UnknownJobKindError, match="no job kind 'nope' here") as found:
        runner.submit("nope", Count(to=1), owner="alice")
    assert found.value.kind == "nope"
    with pytest.raises(InvalidJobPayloadError, match="count job's payload"):
        KINDS.get_kind("count").parse({"to": "many"})
    with pytest.raises(InvalidJobPayloadError):
        KINDS.get_kind("count").parse({"to": 1, "extra": True})


@pytest.mark.parametrize("owner", [None, ""])
def test_every_job_has_an_owner(runner: InProcessJobRunner, owner: Any) -> None:
    with pytest.raises(InvalidJobPayloadError, match="needs an owner"):
        runner.submit("count", Count(to=1), owner=owner)
    assert list(runner.store.iter_jobs()) == []


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
    job = runner.submit("count", Count(to=1), owner="alice")
    wait(runner, job.id)
    (store.folder / job.id / "job.json").write_text('{"id": 1}')
    with pytest.raises(JobNotFoundError, match="cannot be read"):
        runner.get(job.id)
    assert [j.id for j in store.iter_jobs()] == []


def test_ended_jobs_older_than_keep_are_removed(
    store: FolderJobStore, objects: MemoryObjectStore, scratch: Path
) -> None:
    runner = make_runner(store, objects, scratch, keep=0.0)
    try:
        first = runner.submit("count", Count(to=1), owner="alice")
        wait(runner, first.id)
        second = runner.submit("count", Count(to=1), owner="alice")  # cleans up before it starts
        with pytest.raises(JobNotFoundError):
            runner.get(first.id)
        assert object_keys(objects, f"jobs/{first.id}/") == []
        wait(runner, second.id)
    finally:
        runner.close()


def test_the_context_refuses_to_go_on_once_cancelled(store: FolderJobStore, tmp_path: Path) -> None:
    job = Job(id="a" * 32, kind="count", owner=None)
    store.create(job)
    context = JobContext(store, job, output=MemoryObjectStore(), scratch=tmp_path)
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


def test_jobs_of_a_dead_process_are_run_again_or_marked_failed(
    store: FolderJobStore, objects: MemoryObjectStore, scratch: Path
) -> None:
    dead = _dead_process_id()
    pending = Job(id="1" * 32, kind="count", owner="bob", payload={"to": 2}, runner=dead)
    running = Job(
        id="2" * 32, kind="count", owner="bob", payload={"to": 2}, runner=dead,
        status=JobStatus.RUNNING, progress=0.5,
    )  # fmt: skip
    alive = Job(id="3" * 32, kind="count", owner="bob", payload={"to": 2}, runner=process_id())
    for job in (pending, running, alive):
        store.create(job)
    objects.put(f"jobs/{running.id}/files/done.gpkg", b"published before it died")
    (scratch / running.id).mkdir(parents=True)
    (scratch / running.id / "half.gpkg").write_bytes(b"half")
    (scratch / alive.id).mkdir()  # its process still runs: its scratch stays
    (scratch / ("5" * 32)).mkdir()  # of no job any more
    (scratch / "not-a-job").mkdir()  # not ours

    runner = make_runner(store, objects, scratch)
    try:
        assert wait(runner, pending.id).result == {"counted": 2}
        failed = runner.get(running.id)
        assert failed.status is JobStatus.FAILED
        assert failed.error == DIED
        assert object_keys(objects, f"jobs/{running.id}/") == []
        assert sorted(p.name for p in scratch.iterdir()) == [alive.id, "not-a-job"]
        assert runner.get(alive.id).status is JobStatus.PENDING  # its process still runs
    finally:
        runner.close()


def test_a_pending_job_of_an_unknown_kind_is_marked_failed_at_recovery(
    store: FolderJobStore, objects: MemoryObjectStore, scratch: Path
) -> None:
    job = Job(id="4" * 32, kind="gone", owner=None, payload={}, runner=_dead_process_id())
    store.create(job)
    runner = make_runner(store, objects, scratch)
    try:
        assert runner.get(job.id).status is JobStatus.FAILED
    finally:
        runner.close()
