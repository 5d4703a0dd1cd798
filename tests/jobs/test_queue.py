"""The Redis job queue (``OFFMAPS_QUEUE_URL``, Dramatiq): jobs stored by one process and run by
worker processes, progress and cancel from any process, a worker killed mid-job (``kill -9``)
leaving its job to another worker, and a queue that cannot be reached.

Needs a Redis server: ``make test`` starts one (scripts/redis.sh) and passes its URL in
``OFFMAPS_TEST_REDIS_URL``; without it these tests fail, never skip. Each test has a namespace
of its own in Redis, so tests run side by side.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from offmaps.cli import main
from offmaps.errors import JobQueueError
from offmaps.jobs import Job
from offmaps.jobs.queue import QueueJobRunner
from offmaps.schemas.jobs import JobStatus
from offmaps.server.app import create_app
from offmaps.settings import ServerSettings
from tests.jobs.queue_worker import Steps, make_runner
from tests.server.test_offline_access import BODY
from tests.serverkit import Server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("OFFMAPS_TEST_REDIS_URL")
    if not url:
        pytest.fail(
            "OFFMAPS_TEST_REDIS_URL is not set: run the tests with `make test`, which starts "
            "Redis (scripts/redis.sh)"
        )
    return url


@pytest.fixture
def namespace() -> str:
    return f"offmaps-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def runner(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[QueueJobRunner]:
    runner = make_runner(tmp_path, redis_url, namespace)
    yield runner
    runner.broker.client.delete(*runner.broker.client.keys(f"{namespace}*") or [namespace])
    runner.close()


Worker = Callable[[], subprocess.Popen[str]]


@pytest.fixture
def start_worker(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[Worker]:
    started: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.jobs.queue_worker", str(tmp_path), redis_url, namespace],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def wait_for(
    runner: QueueJobRunner, job_id: str, done: Callable[[Job], bool], timeout: float = 60
) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = runner.get(job_id)
        if done(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id}: not there in {timeout} s: {runner.get(job_id)}")


def ended(job: Job) -> bool:
    return job.status.done


def attempts(folder: Path) -> list[tuple[str, int]]:
    log = folder / "attempts.log"
    lines = log.read_text().split() if log.exists() else []
    return [(lines[i], int(lines[i + 1])) for i in range(0, len(lines), 2)]


def output_keys(runner: QueueJobRunner, job_id: str) -> list[str]:
    return sorted(info.key for info in runner.output(job_id).list())


def test_a_queued_job_runs_in_a_worker_process_and_reports_progress(
    runner: QueueJobRunner, start_worker: Worker, tmp_path: Path
) -> None:
    job = runner.submit("steps", Steps(to=5, delay_s=0.2), owner="alice")
    assert runner.get(job.id).status is JobStatus.PENDING  # stored before any worker runs
    worker = start_worker()
    running = wait_for(runner, job.id, lambda j: 0 < j.progress < 1)
    assert running.status is JobStatus.RUNNING
    assert running.runner is not None
    assert f":{worker.pid}:" in running.runner
    done = wait_for(runner, job.id, ended)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.result == {"steps": 5}
    assert done.progress == 1.0
    assert output_keys(runner, job.id) == [f"steps/{n}.txt" for n in range(5)]
    assert attempts(tmp_path) == [(job.id, worker.pid)]
    assert not (tmp_path / "scratch" / job.id).exists()


def test_a_job_is_cancelled_from_another_process(
    runner: QueueJobRunner, start_worker: Worker
) -> None:
    start_worker()
    job = runner.submit("steps", Steps(to=200, delay_s=0.05), owner="alice")
    wait_for(runner, job.id, lambda j: j.progress > 0)
    runner.cancel(job.id)
    done = wait_for(runner, job.id, ended)
    assert done.status is JobStatus.CANCELLED
    assert output_keys(runner, job.id) == []  # what it made is removed


def test_jobs_spread_over_two_workers_each_run_once(
    runner: QueueJobRunner, start_worker: Worker, tmp_path: Path
) -> None:
    workers = {start_worker().pid, start_worker().pid}
    jobs = [runner.submit("steps", Steps(to=3, delay_s=0.3), owner="bob") for _ in range(4)]
    for job in jobs:
        assert wait_for(runner, job.id, ended).status is JobStatus.SUCCEEDED
    ran = attempts(tmp_path)
    assert sorted(job_id for job_id, _ in ran) == sorted(job.id for job in jobs)
    assert {pid for _, pid in ran} == workers  # one job at a time each: both took some


def test_a_job_of_a_worker_killed_mid_job_is_run_again_by_another(
    runner: QueueJobRunner, start_worker: Worker, tmp_path: Path
) -> None:
    first = start_worker()
    job = runner.submit("steps", Steps(to=12, delay_s=0.25), owner="carol")
    wait_for(runner, job.id, lambda j: j.progress >= 0.25)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert first.stdout is not None
    first.stdout.close()
    assert runner.get(job.id).status is JobStatus.RUNNING  # left running by the dead worker
    second = start_worker()
    done = wait_for(runner, job.id, ended)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.runner is not None
    assert f":{second.pid}:" in done.runner
    assert done.result == {"steps": 12}
    # the same files as one clean run, none twice, none left from the first attempt
    assert output_keys(runner, job.id) == sorted(f"steps/{n}.txt" for n in range(12))
    assert attempts(tmp_path) == [(job.id, first.pid), (job.id, second.pid)]
    assert (tmp_path / "abandoned.log").read_text().split() == [job.id]


def test_an_unreachable_queue_fails_the_job_with_a_clear_error(
    tmp_path: Path, namespace: str
) -> None:
    runner = make_runner(tmp_path, "redis://127.0.0.1:1/0", namespace)
    with pytest.raises(JobQueueError, match="the job queue cannot be reached"):
        runner.submit("steps", Steps(to=1), owner="alice")
    (job,) = runner.store.iter_jobs()
    assert job.status is JobStatus.FAILED
    assert job.error is not None
    assert "cannot be reached" in job.error


def test_the_worker_command_needs_a_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OFFMAPS_QUEUE_URL", raising=False)
    assert main(["worker", "--data", str(tmp_path)]) == 2
    assert "no job queue: set OFFMAPS_QUEUE_URL" in capsys.readouterr().err
    monkeypatch.setenv("OFFMAPS_QUEUE_URL", "http://127.0.0.1:1/")
    assert main(["worker", "--data", str(tmp_path)]) == 1
    assert "OFFMAPS_QUEUE_URL" in capsys.readouterr().err  # one line, no traceback


def test_the_worker_command_says_when_redis_cannot_be_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OFFMAPS_QUEUE_URL", "redis://127.0.0.1:1/0")
    assert main(["worker", "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "JobQueueError: the job queue cannot be reached" in err
    assert "Traceback" not in err


def test_a_server_queues_an_offline_map_job_that_offmaps_worker_runs(
    server: Server, redis_url: str, namespace: str
) -> None:
    """Two server processes on one data folder (the fixture's, and one with the queue) and an
    ``offmaps worker`` process: the queueing server stores the job, the worker runs it, and
    either server answers for it."""
    environ = {
        "OFFMAPS_QUEUE_URL": redis_url,
        "OFFMAPS_QUEUE_NAMESPACE": namespace,
        "OFFMAPS_DATA_DIR": str(server.data_dir),
    }
    queueing = create_app(
        ServerSettings(data_dir=server.data_dir, queue_url=redis_url, queue_namespace=namespace)
    )
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "offmaps"), "worker", "--concurrency", "1"],
        env={**os.environ, **environ},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with TestClient(queueing) as client:
            editor = server.token("editor")
            response = client.post(
                f"/api/maps/{server.public_map}/offline/jobs", json=BODY, headers=editor
            )
            assert response.status_code == 201, response.text
            url = f"/api/jobs/{response.json()['id']}"
            deadline = time.monotonic() + 120
            while (job := server.client.get(url, headers=editor).json())["status"] not in (
                "succeeded",
                "failed",
                "cancelled",
            ):
                assert time.monotonic() < deadline, job
                assert worker.poll() is None, worker.communicate()[1]
                time.sleep(0.1)
            assert job["status"] == "succeeded", job
            assert client.get(url, headers=editor).json()["status"] == "succeeded"
            stored = queueing.state.services.jobs.get(job["id"])
            assert stored.runner is not None
            assert f":{worker.pid}:" in stored.runner
            assert stored.result is not None
            assert stored.result["files"]
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert "offmaps worker: 1 at once" in err
