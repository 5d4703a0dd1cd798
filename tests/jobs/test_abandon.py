"""What a job attempt whose process died made outside its files (``JobKind.abandon``): removed
when the job is marked failed at recovery (in process) or before it runs again (the queue), and
a generate job's replicas, whose ids it derives from its own, never registered twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from offmaps.jobs import FolderJobStore, InProcessJobRunner, Job, JobContext, JobKind, JobKinds
from offmaps.jobs.runner import DIED
from offmaps.offline.generate import GENERATE_OFFLINE_MAP, job_replica_id
from offmaps.schemas.jobs import JobStatus
from offmaps.services import Services
from offmaps.storage import MemoryObjectStore
from tests.jobs.test_jobs import Count, _dead_process_id, count, wait
from tests.server.test_areas_updates import _new_area, _services
from tests.server.test_offline_access import BODY
from tests.serverkit import Server


def test_recovery_abandons_what_a_dead_attempt_made(tmp_path: Path) -> None:
    abandoned: list[tuple[dict[str, Any], str]] = []

    def abandon(payload: Count, job_id: str) -> None:
        abandoned.append((payload.model_dump(), job_id))

    kinds = JobKinds([JobKind("count", Count, count, abandon=abandon)])
    store = FolderJobStore(tmp_path / "jobs")
    dead = _dead_process_id()
    running = Job(
        id="2" * 32, kind="count", owner="bob", payload={"to": 2}, runner=dead,
        status=JobStatus.RUNNING,
    )  # fmt: skip
    pending = Job(id="1" * 32, kind="count", owner="bob", payload={"to": 1}, runner=dead)
    store.create(running)
    store.create(pending)
    runner = InProcessJobRunner(
        store, kinds, objects=MemoryObjectStore(), scratch=tmp_path / "scratch"
    )
    try:
        assert wait(runner, pending.id).status is JobStatus.SUCCEEDED
        assert runner.get(running.id).error == DIED
        # only the attempt that died mid-job made something; the pending one never started
        assert abandoned == [({"to": 2, "fail_at": None}, running.id)]
    finally:
        runner.close()


def test_a_generate_job_run_twice_registers_its_replicas_once(server: Server) -> None:
    """The second run of a generate job (after its first worker died) registers the replica
    under the same id, once the first attempt's is abandoned."""
    services: Services = server.client.app.state.services  # type: ignore[attr-defined]
    editor = server.token("editor")
    response = server.client.post(
        f"/api/maps/{server.public_map}/offline/jobs", json=BODY, headers=editor
    )
    assert response.status_code == 201, response.text
    job = wait(services.jobs, response.json()["id"])
    assert job.status is JobStatus.SUCCEEDED, job.error
    replica_id = job_replica_id(job.id, "city")
    assert services.replicas.find(replica_id) is not None
    assert services.replicas.count_owned("editor") == 1

    kind = services.jobs.kinds[GENERATE_OFFLINE_MAP]  # type: ignore[attr-defined]
    assert kind.abandon is not None
    kind.abandon(kind.parse(job.payload), job.id)  # as a run again does first
    assert services.replicas.count_owned("editor") == 0
    kind.abandon(kind.parse(job.payload), job.id)  # idempotent
    output = services.jobs.output(job.id)
    for info in list(output.list()):
        output.delete(info.key)
    scratch = server.data_dir / "rerun"
    scratch.mkdir()
    again = Job(id=job.id, kind=job.kind, owner=job.owner, payload=job.payload)
    kind.execute(
        again.payload, JobContext(services.jobs.store, again, output=output, scratch=scratch)
    )
    assert services.replicas.find(replica_id) is not None
    assert services.replicas.count_owned("editor") == 1


def test_a_packaging_run_again_after_recording_its_package_adds_none(server: Server) -> None:
    """A packaging job whose worker died after it recorded the area's package, run again,
    answers with that package instead of building and recording a second one."""
    area = _new_area(server)
    services = _services(server)
    (package,) = services.areas.store.packages(area["id"])
    job = services.jobs.get(package.job_id)
    kind = services.jobs.kinds[job.kind]  # type: ignore[attr-defined]
    scratch = server.data_dir / "rerun"
    scratch.mkdir()
    again = Job(id=job.id, kind=job.kind, owner=job.owner, payload=job.payload)
    context = JobContext(
        services.jobs.store, again, output=services.jobs.output(job.id), scratch=scratch
    )
    assert kind.execute(again.payload, context) == job.result
    assert [p.number for p in services.areas.store.packages(area["id"])] == [package.number]
