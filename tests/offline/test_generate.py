"""The generate job as a service: run from its stored payload by whichever process holds it."""

from __future__ import annotations

import time
from pathlib import Path

from offmaps.jobs import FolderJobStore, Job, JobRunner
from offmaps.offline.generate import GENERATE_OFFLINE_MAP, GenerateOfflineMap
from offmaps.offline.package import verify_package
from offmaps.offline.parameters import GenerateOfflineMapParameters, area_from_bbox
from offmaps.schemas.jobs import JobStatus
from offmaps.services import build_services
from offmaps.settings import ServerSettings
from tests.jobs.test_jobs import _dead_process_id
from tests.serverkit import Server

AREA = area_from_bbox(24.895, 60.05, 24.995, 60.15)


def _wait(jobs: JobRunner, job_id: str) -> Job:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = jobs.get(job_id)
        if job.status.done:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")


def test_a_generate_job_left_pending_by_a_dead_process_is_built_by_the_next_one(
    server: Server,
) -> None:
    payload = GenerateOfflineMap(
        map_id=server.public_map,
        parameters=GenerateOfflineMapParameters(area_of_interest=AREA),
        owner="editor",
        server_url="http://offmaps.test",
    )
    job = Job(
        id="c" * 32,
        kind=GENERATE_OFFLINE_MAP,
        owner="editor",
        payload=payload.model_dump(mode="json"),
        runner=_dead_process_id(),
    )
    FolderJobStore(server.data_dir / "jobs").create(job)

    # another process: only the settings, the data folder and the stored job
    services = build_services(ServerSettings(data_dir=server.data_dir))
    try:
        done = _wait(services.jobs, job.id)
        assert done.status is JobStatus.SUCCEEDED, done.error
        assert done.result is not None
        files = {entry["path"] for entry in done.result["files"]}
        assert {"city.gpkg", "package.json"} <= files
        folder = services.jobs.store.files(job.id)
        verify_package(folder)
        replicas = [services.replicas.get(r) for r in _replica_ids(folder)]
        assert [r.owner for r in replicas] == ["editor"]
    finally:
        services.close()


def _replica_ids(folder: Path) -> list[str]:
    import json  # noqa: PLC0415

    manifest = json.loads((folder / "package.json").read_text())
    return [replica["replica_id"] for replica in manifest["replicas"]]
