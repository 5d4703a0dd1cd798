"""The OpenAPI document describes the server: schemathesis with every one of its checks.

This is ``schemathesis run --checks all`` in process, against the ASGI application: all four
phases (the schema's examples, coverage of each parameter's edges and of unexpected methods,
fuzzing with valid and invalid requests, stateful sequences through the resources' links),
every check, anonymous and as an admin. Any failure is listed with the operation, the check and
a curl command that reproduces it.

schemathesis's own pytest integration does not run on pytest 9, so its engine is driven
directly. The examples are bounded (``max-examples``) and the seed is fixed, so that a run is
the same run every time and stays within a few minutes.

The checks that need a sequence of calls (``use_after_free``, ``ensure_resource_availability``,
and ``ignored_auth``'s probes with the token removed) run in the stateful phase, over the links
schemathesis infers from ``Location`` headers and parameter names; ``object_level_authorization``
needs two identities on the same run and so does nothing here: the tests of each router check
that one user cannot read another's replicas, jobs and conflicts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis import CheckContext
from schemathesis.config import SchemathesisConfig
from schemathesis.config._checks import (
    NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES,
    POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES,
)
from schemathesis.core.transport import Response
from schemathesis.engine import Status, events, from_schema
from schemathesis.engine.run import PhaseName
from shapely.geometry import Point

from offmaps.features import FieldType
from offmaps.features.model import Field, GeometryType, Insert, LayerSchema
from offmaps.schemas import WebMap
from offmaps.server.app import create_app
from offmaps.settings import LimitSettings, ServerSettings
from tests.serverkit import PASSWORD, feature_layer, webmap_document

MAX_EXAMPLES = 8

# A request valid by the document may be refused (400, 422) only where a JSON schema cannot say
# what makes it valid, and then the problem's detail must name that part; any other refusal of
# these operations is still a finding (``refusal_names_what_the_schema_cannot_say``).
_AREAS = (
    r"area_of_interest|\.area\.geometry|item_info\.thumbnail|min_scale|above max_zoom"
    r"|generate_geodatabase\[.*\] names service"  # an override's key is its service's name
)
# a preplanned area's polygon, bbox corners, bookmark, cron expression, thumbnail, scales, and the
# one of area, bbox and bookmark it gives
_MAP_AREA = r"area|bbox|bookmark|refresh|cron|thumbnail|scale|title|outside|export|limit|tiles"
_SCHEMA_CANNOT_SAY = {
    # the order of a bbox's corners and its range; the CQL2 grammar of a filter
    "GET /collections/{collection_id}/items": r"^(bbox|filter|the filter|CQL2|cql2|invalid CQL2)",
    # a GeoJSON feature against the collection's own fields and geometry type (its /schema)
    "POST /collections/{collection_id}/items": r"",
    "PUT /collections/{collection_id}/items/{feature_id}": r"",
    "PATCH /collections/{collection_id}/items/{feature_id}": r"",
    # an area of interest's rings closed, valid and with an area (also an override's area); a
    # thumbnail a base64 PNG/JPEG; min_scale at least max_scale
    "POST /api/maps/{map_id}/offline/capabilities": _AREAS,
    "POST /api/maps/{map_id}/offline/estimate": _AREAS,
    "POST /api/maps/{map_id}/offline/jobs": _AREAS,
    # a cache's source must exist and match it; an area's rings; levels within the cache's
    "POST /api/caches": r"",
    "POST /api/caches/{name}/seed": r"area|levels|zoom range|time zone",
    "POST /api/caches/{name}/clean": r"area|zoom|nothing to clean|time zone",
    "POST /api/caches/{name}/urls": r"area|zoom|give either",
    # the colour's components up to 255; an export's area holding stored tiles, its tile limit
    "POST /api/caches/{name}/export": r"area|levels|zoom range|colour|holds no tile|limit",
    "POST /api/caches/{name}/import": r"area|zoom|colour|give both|no uploaded",
    "POST /api/maps/{map_id}/areas": _MAP_AREA,
    "PATCH /api/maps/{map_id}/areas/{area_id}": _MAP_AREA,
    # a package number the area has had; an area in a mode that takes device replicas
    "GET /api/maps/{map_id}/areas/{area_id}/updates": r"has had packages",
    "POST /api/maps/{map_id}/areas/{area_id}/replicas": r"mode",
    # a web map's one-line texts, URLs, CQL2 expressions and references between its parts
    "POST /api/maps": r"",
    "PUT /api/maps/{map_id}": r"",
}
# A body over the server's limit (a setting, documented as 413) is refused whatever its schema.
_POSITIVE = [*POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES, "413"]
_NEGATIVE = [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]


@schemathesis.check
def refusal_names_what_the_schema_cannot_say(
    ctx: CheckContext, response: Response, case: schemathesis.Case[Any]
) -> bool | None:
    """A valid request refused by one of :data:`_SCHEMA_CANNOT_SAY`'s operations is refused for
    what its entry names."""
    operation = f"{case.operation.method.upper()} {case.operation.path}"
    pattern = _SCHEMA_CANNOT_SAY.get(operation)
    if pattern is None or case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    if response.status_code not in (400, 422):
        return None
    detail = str(response.json().get("detail", ""))
    if not re.search(pattern, detail):
        msg = f"a valid request refused for something the schema can say: {detail[:300]}"
        raise AssertionError(msg)
    return True


@dataclass(frozen=True)
class Finding:
    """One failed check: where, which, why, and how to reproduce it."""

    operation: str
    check: str
    message: str
    curl: str

    def __str__(self) -> str:
        return f"{self.operation}: {self.check}\n    {self.message}\n    {self.curl[:400]}"


def _app(data_dir: Path) -> FastAPI:
    # the write rate limit is documented (429); a run's requests stay under it, to reach routes
    limits = LimitSettings(writes_per_minute=1_000_000)
    app = create_app(ServerSettings(data_dir=data_dir, max_body_bytes=64 * 1024, limits=limits))
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


def _admin_token(app: FastAPI) -> str:
    # no ``with``: leaving a TestClient runs the app's shutdown, which closes the catalog
    response = TestClient(app).post(
        "/oauth2/token",
        data={"grant_type": "password", "username": "admin", "password": PASSWORD},
    )
    token: str = response.json()["access_token"]
    return token


def _findings(app: FastAPI, headers: dict[str, str]) -> tuple[list[Finding], set[str]]:
    """What schemathesis found, and the operations its fuzzing phase tested."""
    config = SchemathesisConfig.from_dict(
        {
            "seed": 20_141,
            "workers": 1,
            "headers": headers,
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True, "max-steps": 6},
            },
            "checks": {
                "enabled": True,
                "positive_data_acceptance": {"expected-statuses": _POSITIVE},
                "negative_data_rejection": {"expected-statuses": _NEGATIVE},
            },
            "operations": [
                {
                    "include-method": operation.split(" ")[0],
                    "include-path": operation.split(" ")[1],
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": [*_POSITIVE, 400, 422]}
                    },
                }
                for operation in _SCHEMA_CANNOT_SAY
            ],
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    found: dict[tuple[str, str, str], Finding] = {}
    errors: list[str] = []
    fuzzed: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.NonFatalError | events.FatalError):
            errors.append(f"{getattr(event, 'label', '')}: {getattr(event, 'info', event)}")
        if (
            isinstance(event, events.ScenarioFinished)
            and event.phase is PhaseName.FUZZING
            and event.status is not Status.SKIP
            and event.label is not None
        ):
            fuzzed.add(event.label)
        if not isinstance(event, events.ScenarioFinished) or event.status is Status.SUCCESS:
            continue
        recorder = event.recorder
        for case_id, checks in recorder.checks.items():
            for check in checks:
                if check.failure_info is None:
                    continue
                failure = check.failure_info.failure
                case = recorder.cases[case_id].value
                operation = f"{case.operation.method.upper()} {case.operation.path}"
                interaction = recorder.interactions.get(case_id)
                answer = ""
                if interaction is not None and interaction.response is not None:
                    response = interaction.response
                    answer = f"\n    got {response.status_code}: {response.content[:300]!r}"
                key = (operation, failure.title, failure.message.split("\n")[0])
                found.setdefault(
                    key,
                    Finding(
                        operation,
                        failure.title,
                        failure.message + answer,
                        check.failure_info.code_sample,
                    ),
                )
    assert not errors, "\n".join(errors)
    return sorted(found.values(), key=str), fuzzed


# The server repairs an invalid area of interest with make_valid and says so with a warning (an
# error under pytest's warnings filter, which would end the request here).
@pytest.mark.filterwarnings("ignore::offmaps.tiling.aoi.AOIRepairedWarning")
@pytest.mark.parametrize("caller", ["anonymous", "admin"])
def test_the_server_does_what_its_openapi_document_says(tmp_path: Path, caller: str) -> None:
    app = _app(tmp_path / "fuzz")
    headers = {"Authorization": f"Bearer {_admin_token(app)}"} if caller == "admin" else {}
    findings, fuzzed = _findings(app, headers)
    operations = {
        f"{method.upper()} {path}"
        for path, item in app.openapi()["paths"].items()
        for method in item
    }
    assert fuzzed == operations  # every operation was tested
    assert not findings, f"{len(findings)} findings:\n" + "\n".join(map(str, findings))
