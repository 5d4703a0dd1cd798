"""A finished job's files as one zip (``GET /api/jobs/{id}/package.zip``): what it holds, who
may have it, and the problems while there is none."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

from offmaps.jobs import Job, process_id
from offmaps.offline.generate import GENERATE_OFFLINE_MAP
from offmaps.offline.parameters import GenerateOfflineMapParameters, area_from_bbox
from offmaps.schemas.jobs import JobStatus
from offmaps.services import Services
from tests.jobs.test_jobs import wait
from tests.serverkit import PASSWORD, Server, assert_problem

AREA = area_from_bbox(24.895, 60.05, 24.995, 60.15)
BODY = {"parameters": GenerateOfflineMapParameters(area_of_interest=AREA).model_dump(mode="json")}


def _services(server: Server) -> Services:
    services: Services = server.client.app.state.services  # type: ignore[attr-defined]
    return services


def _finished_job(server: Server) -> str:
    response = server.client.post(
        f"/api/maps/{server.public_map}/offline/jobs", json=BODY, headers=server.token("editor")
    )
    assert response.status_code == 201, response.text
    job = wait(_services(server).jobs, response.json()["id"])
    assert job.status is JobStatus.SUCCEEDED, job.error
    return job.id


def test_the_zip_holds_every_file_of_the_job_as_listed(server: Server) -> None:
    job_id = _finished_job(server)
    editor = server.token("editor")
    status = server.client.get(f"/api/jobs/{job_id}", headers=editor).json()
    response = server.client.get(f"/api/jobs/{job_id}/package.zip", headers=editor)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert f"offline-map-{job_id}.zip" in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        listed = {entry["path"]: entry for entry in status["result"]["files"]}
        assert sorted(archive.namelist()) == sorted(listed)
        for name, entry in listed.items():
            data = archive.read(name)
            assert len(data) == entry["size"]
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        manifest = json.loads(archive.read("package.json"))
    assert manifest["files"]


def test_only_the_jobs_owner_and_admins_get_its_zip(server: Server) -> None:
    job_id = _finished_job(server)
    url = f"/api/jobs/{job_id}/package.zip"
    assert_problem(server.client.get(url), 401)
    assert_problem(server.client.get(url, headers=server.token("viewer")), 403)
    _services(server).users.add_user("other", PASSWORD, scopes=("features:edit",))
    assert_problem(server.client.get(url, headers=server.token("other")), 404)
    assert server.client.get(url, headers=server.token("admin")).status_code == 200


def test_absent_and_hostile_job_ids_are_not_found(server: Server) -> None:
    editor = server.token("editor")
    for job_id in ("0" * 32, "..", "..%2F..%2Fetc", "x" * 300, "%00", "A" * 32):
        response = server.client.get(f"/api/jobs/{job_id}/package.zip", headers=editor)
        assert_problem(response, 404, 422)


def test_a_job_that_has_not_succeeded_has_no_zip_yet(server: Server) -> None:
    store = _services(server).jobs.store
    job = Job(id="b" * 32, kind=GENERATE_OFFLINE_MAP, owner="editor", runner=process_id())
    store.create(job)
    url = f"/api/jobs/{job.id}/package.zip"
    problem = assert_problem(server.client.get(url, headers=server.token("editor")), 409)
    assert problem["job_status"] == "pending"
    assert "pending" in problem["detail"]
