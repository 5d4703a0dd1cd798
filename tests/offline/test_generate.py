"""The generate job as a service: run from its stored payload by whichever process holds it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from offmaps.errors import StorageError
from offmaps.jobs import FolderJobStore, Job
from offmaps.offline.generate import GENERATE_OFFLINE_MAP, GenerateOfflineMap
from offmaps.offline.package import verify_package
from offmaps.offline.parameters import GenerateOfflineMapParameters, area_from_bbox
from offmaps.schemas.jobs import JobStatus
from offmaps.services import build_services
from offmaps.settings import ServerSettings
from offmaps.storage import LocalObjectStore, ObjectInfo, ObjectStore
from tests.jobs.test_jobs import _dead_process_id, wait
from tests.serverkit import Server

AREA = area_from_bbox(24.895, 60.05, 24.995, 60.15)


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
        done = wait(services.jobs, job.id)
        assert done.status is JobStatus.SUCCEEDED, done.error
        assert done.result is not None
        files = {entry["path"]: entry for entry in done.result["files"]}
        assert {"city.gpkg", "package.json"} <= set(files)
        output = services.jobs.output(job.id)
        # the files are objects of the server's object store, exactly as the result lists them
        assert sorted(info.key for info in output.list()) == sorted(files)
        assert all(output.head(path).size == entry["size"] for path, entry in files.items())
        assert verify_package(_download(output, server.data_dir.parent / "downloaded")).ok
        replicas = [services.replicas.get(r) for r in _replica_ids(output)]
        assert [r.owner for r in replicas] == ["editor"]
        assert not (server.data_dir / "scratch" / job.id).exists()
    finally:
        services.close()


def _download(output: ObjectStore, folder: Path) -> Path:
    """The package as a device gets it: every file of the output area, in a folder."""
    for info in output.list():
        target = folder.joinpath(*info.key.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(output.get(info.key))
    return folder


def _replica_ids(output: ObjectStore) -> list[str]:
    manifest = json.loads(output.get("package.json"))
    return [replica["replica_id"] for replica in manifest["replicas"]]


def test_a_generate_job_failing_after_publishing_some_files_leaves_nothing(
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    published: list[str] = []
    put_file = LocalObjectStore.put_file

    def fail_the_second(store: LocalObjectStore, key: str, path: Path | str) -> ObjectInfo:
        published.append(key)
        if len(published) == 2:
            raise StorageError("the disk failed")
        return put_file(store, key, path)

    monkeypatch.setattr(LocalObjectStore, "put_file", fail_the_second)
    payload = GenerateOfflineMap(
        map_id=server.public_map,
        parameters=GenerateOfflineMapParameters(area_of_interest=AREA),
        owner="editor",
        server_url="http://offmaps.test",
    )
    services = build_services(ServerSettings(data_dir=server.data_dir))
    try:
        job = services.jobs.submit(GENERATE_OFFLINE_MAP, payload, owner="editor")
        done = wait(services.jobs, job.id)
        assert done.status is JobStatus.FAILED
        assert done.error == "the disk failed"
        assert len(published) == 2  # one file was in the output area when it failed
        assert list(services.objects.list(f"jobs/{job.id}/")) == []
        assert not (server.data_dir / "scratch" / job.id).exists()
    finally:
        services.close()
