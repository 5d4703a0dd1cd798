"""The job queue while Redis is away: starting a job answers a clear 503 problem (the job is
recorded as failed, saying why), a worker outlives the outage, and jobs run again once Redis is
back. Each test runs its own Redis server (Debian's redis-server, as scripts/redis.sh starts
for the suite), so stopping it disturbs no other test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from offmaps.errors import JobQueueError
from offmaps.schemas.jobs import JobStatus
from offmaps.server.app import create_app
from offmaps.settings import ServerSettings
from tests.jobs.queue_worker import Steps, make_runner
from tests.jobs.test_queue import ROOT, ended, wait_for
from tests.server.test_offline_access import BODY
from tests.serverkit import Server, assert_problem


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own, with an append-only file: what was queued outlives
    a restart, as in a deployment that keeps its queue."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
             str(self.folder), "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_starting_a_job_while_redis_is_away_answers_503(server: Server) -> None:
    settings = ServerSettings(
        data_dir=server.data_dir, queue_url=f"redis://127.0.0.1:{_free_port()}/0"
    )
    with TestClient(create_app(settings)) as client:
        response = client.post(
            f"/api/maps/{server.public_map}/offline/jobs", json=BODY, headers=server.token("editor")
        )
        problem = assert_problem(response, 503)
        assert "the job queue cannot be reached" in problem["detail"]
        (job,) = client.app.state.services.jobs.store.iter_jobs()  # type: ignore[attr-defined]
        assert job.status is JobStatus.FAILED  # recorded, with the reason, never left pending


def test_a_worker_outlives_redis_going_away_and_jobs_run_once_it_is_back(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    namespace = f"offmaps-test-{uuid.uuid4().hex[:12]}"
    runner = make_runner(tmp_path, private_redis.url, namespace)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.jobs.queue_worker",
            str(tmp_path),
            private_redis.url,
            namespace,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
        before = runner.submit("steps", Steps(to=2), owner="alice")
        assert wait_for(runner, before.id, ended).status is JobStatus.SUCCEEDED

        private_redis.stop()
        with pytest.raises(JobQueueError):
            runner.submit("steps", Steps(to=2), owner="alice")
        time.sleep(2)  # the worker polls a Redis that is not there
        assert worker.poll() is None

        private_redis.start()
        after = runner.submit("steps", Steps(to=2), owner="alice")
        done = wait_for(runner, after.id, ended, timeout=90)
        assert done.status is JobStatus.SUCCEEDED, done.error
        assert done.runner is not None
        assert f":{worker.pid}:" in done.runner
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
        runner.close()
