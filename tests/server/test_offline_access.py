"""Who may take maps offline and sync them, within which quotas, and auth before any body.

Every write route answers an anonymous or unauthorised caller 401/403 whatever the body
(malformed JSON, a broken multipart form), found by walking the application's routes, so a new
write route that reads its body before checking its caller fails here. Jobs and replicas always
have an owner; quotas and the write rate limit answer 429 with ``Retry-After``; a sync ``since``
beyond the server's generation, or beyond 64 bits, is a 4xx problem.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import RouteContext, iter_route_contexts
from fastapi.testclient import TestClient

from offmaps.access import Principal, Scope, check_scopes
from offmaps.errors import InvalidUserError, PackageError, QuotaExceededError
from offmaps.jobs import Job, process_id
from offmaps.offline.generate import GENERATE_OFFLINE_MAP
from offmaps.offline.parameters import GenerateOfflineMapParameters, area_from_bbox
from offmaps.schemas.jobs import JobStatus
from offmaps.server.app import create_app
from offmaps.server.auth import WRITE_METHODS
from offmaps.services import Services
from offmaps.settings import LimitSettings, ServerSettings
from tests.jobs.test_jobs import wait
from tests.serverkit import PASSWORD, Server, assert_problem

AREA = area_from_bbox(24.895, 60.05, 24.995, 60.15)
BODY = {"parameters": GenerateOfflineMapParameters(area_of_interest=AREA).model_dump(mode="json")}

PUBLIC_WRITES = {
    ("POST", "/oauth2/token"): "signing in",
    ("POST", "/api/maps/{map_id}/offline/capabilities"): "a read with a body",
    ("POST", "/api/maps/{map_id}/offline/estimate"): "a read with a body",
    ("PUT", "/storage/{key}"): "a presigned URL: its token, not a bearer, is the credential",
    ("POST", "/graphql"): "GraphQL: queries are reads, and every root field is authorised, with "
    "the scopes of its REST route, before anything runs (tests/server/test_graphql.py)",
}
"""Write-method routes anonymous callers may use, and why."""

MALFORMED = [
    ({"content-type": "application/json"}, b'{"parameters": '),
    ({"content-type": "multipart/form-data; boundary=xyz"}, b"--xyz\r\nbroken"),
    ({}, b""),
]
"""Bodies no route can parse, and an empty one."""


def _services(server: Server) -> Services:
    services: Services = server.client.app.state.services  # type: ignore[attr-defined]
    return services


def _path(route: RouteContext, server: Server) -> str:
    values = {
        "map_id": server.public_map,
        "collection_id": "city.sites",
        "feature_id": str(uuid.uuid4()),
        "attachment_id": str(uuid.uuid4()),
        "replica_id": "0" * 32,
        "job_id": "0" * 32,
        "conflict_id": str(uuid.uuid4()),
        "change_id": str(uuid.uuid4()),
        "sha256": "0" * 64,
        "path": "package.json",
    }
    path = str(route.path_format)
    for name in route.param_convertors:
        path = path.replace("{" + name + "}", values.get(name, "x"))
    return path


def _write_routes(server: Server) -> list[tuple[str, RouteContext]]:
    """Every (method, route) of the application with a write method, included routers too."""
    found = []
    for route in iter_route_contexts(server.client.app.routes):  # type: ignore[attr-defined]
        methods = (route.methods or set()) & WRITE_METHODS
        found += [(method, route) for method in sorted(methods)]
    return found


def test_every_write_route_checks_its_caller_before_reading_the_body(server: Server) -> None:
    routes = [(m, r) for m, r in _write_routes(server) if (m, r.path_format) not in PUBLIC_WRITES]
    assert len(routes) >= 15, routes  # the walk found the routes
    viewer = server.token("viewer")
    wrong: list[str] = []
    for method, route in routes:
        path = _path(route, server)
        for headers, body in MALFORMED:
            callers = [
                ({}, 401),
                ({"Authorization": "Bearer not-a-token"}, 401),
                (viewer, 403),  # maps:read only: no write route is open to it
            ]
            for auth, status in callers:
                response = server.client.request(
                    method, path, headers={**headers, **auth}, content=body
                )
                if response.status_code != status:
                    wrong.append(
                        f"{method} {route.path_format} {headers} {bool(auth)}: "
                        f"{response.status_code}, not {status}"
                    )
                else:
                    assert_problem(response, status)
    assert not wrong, "\n".join(wrong)


def test_the_public_write_routes_do_parse_the_body(server: Server) -> None:
    # the malformed bodies above are malformed: a route open to anonymous callers says so
    for (method, path), _ in PUBLIC_WRITES.items():
        if path in {"/oauth2/token", "/graphql", "/storage/{key}"}:
            continue  # a form, GraphQL (test_graphql.py), raw bytes (test_cache_presigned.py)
        response = server.client.request(
            method,
            path.replace("{map_id}", server.public_map),
            headers={"content-type": "application/json"},
            content=b'{"parameters": ',
        )
        assert_problem(response, 422)


def test_a_scope_refusal_names_the_scope(server: Server) -> None:
    response = server.client.post(
        f"/api/maps/{server.public_map}/offline/jobs",
        headers={**server.token("viewer"), "content-type": "application/json"},
        content=b"[",
    )
    problem = assert_problem(response, 403)
    assert problem["required_scopes"] == ["offline:sync"]
    assert 'scope="offline:sync"' in response.headers["WWW-Authenticate"]


# --- scopes -------------------------------------------------------------------------------


def test_features_edit_includes_offline_sync_and_admin_has_everything() -> None:
    editor = Principal("e", frozenset({"maps:read", "features:edit"}))
    assert editor.has(Scope.OFFLINE_SYNC)
    viewer = Principal("v", frozenset({"maps:read"}))
    assert not viewer.has(Scope.OFFLINE_SYNC)
    assert Principal("t", frozenset({"offline:sync"})).has(Scope.OFFLINE_SYNC)
    assert check_scopes(["offline:sync"]) == ("offline:sync",)


def test_an_editor_may_ask_for_a_token_with_offline_sync_only(server: Server) -> None:
    response = server.client.post(
        "/oauth2/token",
        data={
            "grant_type": "password",
            "username": "editor",
            "password": PASSWORD,
            "scope": "offline:sync",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "offline:sync"
    viewer = server.client.post(
        "/oauth2/token",
        data={
            "grant_type": "password",
            "username": "viewer",
            "password": PASSWORD,
            "scope": "offline:sync",
        },
    )
    assert viewer.status_code == 400
    assert viewer.json()["error"] == "invalid_scope"


# --- owners -------------------------------------------------------------------------------


def test_anonymous_callers_cannot_start_jobs_on_a_public_map(server: Server) -> None:
    url = f"/api/maps/{server.public_map}/offline/jobs"
    assert_problem(server.client.post(url, json=BODY), 401)
    assert_problem(server.client.post(url, json=BODY, headers=server.token("viewer")), 403)
    services = _services(server)
    assert list(services.jobs.store.iter_jobs()) == []
    assert services.replicas.count_owned("anonymous") == 0
    # reads of a public map stay open
    estimate = server.client.post(f"/api/maps/{server.public_map}/offline/estimate", json=BODY)
    assert estimate.is_success


def test_a_job_and_its_replicas_belong_to_the_user_who_started_it(server: Server) -> None:
    editor = server.token("editor")
    response = server.client.post(
        f"/api/maps/{server.public_map}/offline/jobs", json=BODY, headers=editor
    )
    assert response.status_code == 201, response.text
    services = _services(server)
    job = wait(services.jobs, response.json()["id"])
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.owner == "editor"
    assert services.replicas.count_owned("editor") == 1
    url = f"/api/jobs/{job.id}"
    assert server.client.get(url, headers=editor).status_code == 200
    assert_problem(server.client.get(url), 401)
    _services(server).users.add_user("other", PASSWORD, scopes=("features:edit",))
    assert_problem(server.client.get(url, headers=server.token("other")), 404)
    assert server.client.get(url, headers=server.token("admin")).status_code == 200


def test_jobs_and_replicas_stored_without_owner_are_for_admins_only(server: Server) -> None:
    services = _services(server)
    services.jobs.store.create(Job(id="a" * 32, kind=GENERATE_OFFLINE_MAP, owner=None))
    replica = services.replicas.register(
        "city", ("sites",), 0, owner="editor", map_id=None, sync_direction="bidirectional"
    )
    with sqlite3.connect(server.data_dir / "replicas.sqlite") as db:  # as older versions did
        db.execute("UPDATE replicas SET owner = NULL WHERE id = ?", (replica.id,))
    editor, admin = server.token("editor"), server.token("admin")
    for url in (f"/api/jobs/{'a' * 32}", f"/api/replicas/{replica.id}"):
        assert_problem(server.client.get(url, headers=editor), 404)
        assert server.client.get(url, headers=admin).status_code == 200, url


def test_new_replicas_need_an_owner(server: Server) -> None:
    with pytest.raises(InvalidUserError, match="needs an owner"):
        _services(server).replicas.register(
            "city",
            ("sites",),
            0,
            owner=None,  # type: ignore[arg-type]
            map_id=None,
            sync_direction="bidirectional",
        )


# --- quotas -------------------------------------------------------------------------------


@pytest.fixture
def limits(server: Server) -> LimitSettings:
    """The live quotas of ``server``, to lower in a test."""
    return _services(server).settings.limits


def _start(server: Server, user: str = "editor") -> Any:
    return server.client.post(
        f"/api/maps/{server.public_map}/offline/jobs", json=BODY, headers=server.token(user)
    )


def test_too_many_jobs_at_once_is_429(server: Server, limits: LimitSettings) -> None:
    limits.jobs_per_user = 1
    _services(server).jobs.store.create(
        Job(id="b" * 32, kind=GENERATE_OFFLINE_MAP, owner="editor", runner=process_id())
    )
    response = _start(server)
    problem = assert_problem(response, 429)
    assert problem["quota"] == "jobs"
    assert (problem["limit"], problem["used"]) == (1, 1)
    assert response.headers["Retry-After"] == "30"
    assert _start(server, "admin").status_code == 201  # quotas are per user


def test_too_many_replicas_is_429(server: Server, limits: LimitSettings) -> None:
    limits.replicas_per_user = 1
    services = _services(server)
    services.replicas.register(
        "city", ("sites",), 0, owner="editor", map_id=None, sync_direction="bidirectional"
    )
    response = _start(server)
    problem = assert_problem(response, 429)
    assert problem["quota"] == "replicas"
    assert response.headers["Retry-After"] == str(limits.quota_retry_after_s)
    # jobs running together cannot pass the quota: the registry counts and inserts at once
    with pytest.raises(QuotaExceededError):
        services.replicas.register(
            "city", ("sites",), 0, owner="editor", map_id=None, sync_direction="none", max_owned=1
        )


def test_bytes_kept_over_the_quota_is_429_until_old_jobs_expire(
    server: Server, limits: LimitSettings
) -> None:
    services = _services(server)
    estimate = server.client.post(f"/api/maps/{server.public_map}/offline/estimate", json=BODY)
    needed = estimate.json()["bytes"]
    limits.job_bytes_per_user = needed + 10_000
    finished = time.time() - 100
    services.jobs.store.create(
        Job(
            id="c" * 32,
            kind=GENERATE_OFFLINE_MAP,
            owner="editor",
            status=JobStatus.SUCCEEDED,
            finished=finished,
            result={"files": [{"path": "a.gpkg", "size": 20_000, "sha256": "0" * 64}]},
        )
    )
    response = _start(server)
    problem = assert_problem(response, 429)
    assert problem["quota"] == "job_bytes"
    assert problem["used"] == 20_000
    retry = int(response.headers["Retry-After"])
    assert services.jobs.keep - 100 - 5 <= retry <= services.jobs.keep - 100 + 1
    # a map over the whole quota on its own: no waiting helps
    limits.job_bytes_per_user = needed // 2  # (below the settings minimum, as a test may)
    problem = assert_problem(_start(server), 400)
    assert problem["title"] == "InvalidOfflineParametersError"


def test_a_failed_job_leaves_no_replica_registered(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from offmaps.offline import generate  # noqa: PLC0415

    def fail(self: Any) -> None:
        raise PackageError("the manifest could not be written")

    monkeypatch.setattr(generate._Generation, "_manifest", fail)
    response = _start(server)
    assert response.status_code == 201, response.text
    services = _services(server)
    job = wait(services.jobs, response.json()["id"])
    assert job.status is JobStatus.FAILED
    assert services.replicas.count_owned("editor") == 0


# --- the write rate limit -------------------------------------------------------------------


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[TestClient]:
    settings = ServerSettings(data_dir=tmp_path / "data", limits=LimitSettings(writes_per_minute=3))
    app = create_app(settings)
    app.state.services.users.add_user("ann", PASSWORD, scopes=("maps:read", "maps:write"))
    app.state.services.users.add_user("bob", PASSWORD, scopes=("maps:read",))
    with TestClient(app) as client:
        yield client


def _login(client: TestClient, user: str) -> dict[str, str]:
    form = {"grant_type": "password", "username": user, "password": PASSWORD}
    response = client.post("/oauth2/token", data=form)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_write_requests_over_the_rate_limit_are_429_per_user(limited: TestClient) -> None:
    ann, bob = _login(limited, "ann"), _login(limited, "bob")  # two writes of this address
    for _ in range(3):
        assert_problem(limited.delete(f"/api/maps/{'0' * 32}", headers=ann), 404)
    response = limited.delete(f"/api/maps/{'0' * 32}", headers=ann)
    problem = assert_problem(response, 429)
    assert problem["title"] == "RateLimitError"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    # another user has their own count; reads are not counted
    assert_problem(limited.delete(f"/api/maps/{'0' * 32}", headers=bob), 403)
    assert limited.get("/api/maps", headers=ann).status_code == 200
    # without a token the address is counted: one write left, then 429, even signing in
    assert_problem(limited.post("/api/maps", content=b"{"), 401)
    response = limited.post("/oauth2/token", data={"grant_type": "password"})
    assert_problem(response, 429)
    assert response.headers["Retry-After"]


# --- sync downloads: since ------------------------------------------------------------------


@pytest.fixture
def replica_id(server: Server) -> str:
    store = _services(server).catalog.feature_service("city")
    return (
        _services(server)
        .replicas.register(
            "city",
            ("sites",),
            store.generation(),
            owner="editor",
            map_id=server.public_map,
            sync_direction="bidirectional",
        )
        .id
    )


@pytest.mark.parametrize("route", ["changes", "updates"])
@pytest.mark.parametrize("since", [-1, 2**63 - 1, 2**63, 2**64, 10**30, "1e3", "NaN"])
def test_since_out_of_range_is_a_4xx_problem(
    server: Server, replica_id: str, route: str, since: Any
) -> None:
    response = server.client.get(
        f"/api/replicas/{replica_id}/{route}",
        params={"since": since},
        headers=server.token("editor"),
    )
    assert_problem(response, 409, 422)


@pytest.mark.parametrize("route", ["changes", "updates"])
def test_since_beyond_the_server_generation_is_409(
    server: Server, replica_id: str, route: str
) -> None:
    generation = _services(server).catalog.feature_service("city").generation()
    editor = server.token("editor")
    url = f"/api/replicas/{replica_id}/{route}"
    response = server.client.get(url, params={"since": generation + 1}, headers=editor)
    problem = assert_problem(response, 409)
    assert problem["title"] == "GenerationAheadError"
    assert (problem["expected"], problem["actual"]) == (generation, generation + 1)
    assert server.client.get(url, params={"since": generation}, headers=editor).status_code == 200
    assert server.client.get(url, params={"since": 0}, headers=editor).status_code == 200
