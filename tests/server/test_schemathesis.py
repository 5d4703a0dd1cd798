"""Property-based fuzzing of the whole HTTP API from its OpenAPI document (schemathesis).

Every operation gets generated valid and invalid requests, anonymous and as an admin; none may
end in a server error, and every error must be a problem document (or, for the token endpoint,
an RFC 6749 error).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from shapely.geometry import Point

from offmaps.features import FieldType
from offmaps.features.model import Field, GeometryType, Insert, LayerSchema
from offmaps.schemas import WebMap
from offmaps.server.app import create_app
from offmaps.settings import ServerSettings
from tests.serverkit import PASSWORD, feature_layer, webmap_document


def _app(data_dir: Path) -> FastAPI:
    app = create_app(ServerSettings(data_dir=data_dir, max_body_bytes=64 * 1024))
    store = app.state.services.catalog.create_feature_service("city")
    store.create_layer(LayerSchema("sites", (Field("name", FieldType.TEXT),), GeometryType.POINT))
    store.apply_edits([Insert("sites", {"name": "a"}, Point(24.9, 60.1))])
    app.state.services.catalog.webmaps.create(
        WebMap.model_validate(
            webmap_document(
                title="Fuzzed", public=True, layers=[feature_layer("sites", edit=True)], tables=[]
            )
        ),
        owner="admin",
    )
    app.state.services.users.add_user("admin", PASSWORD, scopes=("admin",))
    return app


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    # one app per generation mode: schemathesis shuts an app's lifespan down after a run,
    # which closes its stores
    return _app(tmp_path / "fuzz")


@pytest.fixture
def admin_headers(app: FastAPI) -> dict[str, str]:
    # no ``with``: leaving a TestClient runs the app's shutdown, which closes the catalog
    token = (
        TestClient(app)
        .post(
            "/oauth2/token",
            data={"grant_type": "password", "username": "admin", "password": PASSWORD},
        )
        .json()["access_token"]
    )
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_operation_ends_in_a_server_error(
    app: FastAPI, admin_headers: dict[str, str], mode: GenerationMode
) -> None:
    # schemathesis's own pytest integration (``from_fixture``) does not run on pytest 9, so
    # each operation's strategy is driven with hypothesis directly.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert len(operations) > 20

    fuzzed = 0
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=15,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def check(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(checks=[not_a_server_error])
            case.call_and_validate(headers=admin_headers, checks=[not_a_server_error])

        try:
            check()
        except Unsatisfiable:
            # an operation without parameters or body has no invalid requests to generate
            assert mode is GenerationMode.NEGATIVE, operation.label
        else:
            fuzzed += 1
    # every operation has valid requests; only some have invalid ones (typed parameters, bodies)
    assert fuzzed == len(operations) if mode is GenerationMode.POSITIVE else fuzzed >= 5
