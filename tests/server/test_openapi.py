"""The OpenAPI document is built from route metadata; ``/docs`` needs nothing from the internet."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from offmaps.access import Principal
from offmaps.schemas.changeset import ChangeSet
from offmaps.server.app import create_app
from offmaps.server.auth import current_principal
from offmaps.server.openapi import (
    PROBLEM_SCHEMA,
    SECURITY_SCHEME,
    build_openapi,
    documents_problems,
    install_openapi,
    request_body,
)
from offmaps.server.problems import PROBLEM_MEDIA_TYPE, install_problem_handlers
from offmaps.settings import ServerSettings

_PROBLEM = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA}"}}}


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    # no ``with``: leaving a TestClient runs the app's shutdown, which closes the catalog
    return TestClient(create_app(ServerSettings(data_dir=tmp_path / "data")))


# --- /docs ----------------------------------------------------------------------------------


def test_docs_page_loads_nothing_from_another_server(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert not re.findall(r"(?:https?:)?//[\w.-]+", page.text), "an external URL in /docs"


def test_every_asset_of_the_docs_page_is_served(client: TestClient) -> None:
    page = client.get("/docs").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    expected = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
    assert len(assets) == 3
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        kind = expected[Path(asset).suffix]
        assert kind in response.headers["content-type"], asset
        assert response.content
    spec = re.search(r"url: '([^']+)'", page)
    assert spec is not None
    assert client.get(spec.group(1)).json()["openapi"].startswith("3.")
    redirect = client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200
    assert client.get("/redoc").status_code == 404


# --- the document of the server -------------------------------------------------------------


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_every_error_the_server_documents_is_a_problem_document(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400 or path == "/oauth2/token":  # RFC 6749 errors, JSON
                continue
            assert response["content"] == _PROBLEM, (method, path, status)


def test_the_change_set_upload_documents_its_body(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    upload = document["paths"]["/api/replicas/{replica_id}/changes"]["post"]
    schema = upload["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ChangeSet"}
    assert "changes" in document["components"]["schemas"]["ChangeSet"]["properties"]


def test_the_change_set_routes_document_the_geojson_form(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    changes = document["paths"]["/api/replicas/{replica_id}/changes"]
    body = changes["post"]["requestBody"]["content"]["application/geo+json"]["schema"]
    assert body == {"$ref": "#/components/schemas/GeoJSONChangeSet"}
    answer = changes["post"]["responses"]["200"]["content"]
    assert set(answer) == {"application/json", "application/geo+json"}
    assert set(changes["get"]["responses"]["200"]["content"]) == {
        "application/x-ndjson",
        "application/geo+json-seq",
    }
    status = document["paths"]["/api/replicas/{replica_id}/changes/{change_id}"]["get"]
    assert "application/geo+json" in status["responses"]["200"]["content"]
    for path in ("/api/conflicts", "/api/conflicts/{conflict_id}"):
        assert (
            "application/geo+json" in document["paths"][path]["get"]["responses"]["200"]["content"]
        )
    schemas = document["components"]["schemas"]
    change = schemas["GeoJSONChange"]["properties"]
    assert {"feature", "base"} <= set(change)
    assert not {"values", "base_values"} & set(change)
    assert "feature" in schemas["GeoJSONServerChange"]["properties"]
    assert "$defs" not in str(document)  # every definition is in the components


def test_tokens_are_documented_as_oauth2(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    scheme = document["components"]["securitySchemes"][SECURITY_SCHEME]
    assert scheme["flows"]["password"]["tokenUrl"] == "/oauth2/token"
    collection = document["paths"]["/collections/{collection_id}"]["get"]
    assert collection["security"] == [{SECURITY_SCHEME: []}, {}]  # anonymous callers too
    assert {"401", "403", "404"} <= set(collection["responses"])


def test_405_allows_every_method_of_the_path(client: TestClient) -> None:
    response = client.request("OPTIONS", "/collections/city.sites/items/x")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, PATCH, PUT"
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE


# --- the rules, on a small application ------------------------------------------------------


class _Requirement:
    """A caller requirement as the auth package declares one (scopes, for some methods)."""

    def __init__(self, scopes: Sequence[str], methods: Sequence[str]) -> None:
        self.scopes = tuple(scopes)
        self.methods = frozenset(methods)

    def applies_to(self, method: str) -> bool:
        return method in self.methods

    def __call__(self, principal: Annotated[Principal, Depends(current_principal)]) -> None:
        return None


@documents_problems(429)
def _quota() -> None:
    return None


class _Thing(BaseModel):
    name: str
    parts: list[_Part]


class _Part(BaseModel):
    size: int


_Thing.model_rebuild()


def _small_app() -> FastAPI:
    app = FastAPI()
    router = APIRouter(
        prefix="/things",
        dependencies=[Depends(_Requirement(["features:edit"], ["POST"]))],
    )

    @router.get("/{thing_id}")
    def read(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    @router.post("/{thing_id}", dependencies=[Depends(_quota)], openapi_extra=request_body(_Thing))
    def write(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    app.include_router(router)
    install_problem_handlers(app)
    return app


def test_a_caller_requirement_makes_security_required_for_its_methods() -> None:
    document = build_openapi(_small_app())
    read = document["paths"]["/things/{thing_id}"]["get"]
    write = document["paths"]["/things/{thing_id}"]["post"]
    assert write["security"] == [{SECURITY_SCHEME: ["features:edit"]}]
    assert {"401", "403"} <= set(write["responses"])
    # the requirement is for POST only; GET still reads the caller (a bad token is a 401)
    assert read["security"] == [{SECURITY_SCHEME: []}, {}]
    assert read["responses"]["404"]["content"] == _PROBLEM


def test_a_marked_dependency_and_a_rule_add_their_statuses() -> None:
    def rule(route: Any, method: str) -> tuple[int, ...]:
        return (503,) if method == "GET" else ()

    document = build_openapi(_small_app(), rules=[rule])
    write = document["paths"]["/things/{thing_id}"]["post"]
    read = document["paths"]["/things/{thing_id}"]["get"]
    assert write["responses"]["429"]["headers"]["Retry-After"]["required"] is True
    assert "429" not in read["responses"]
    assert "503" in read["responses"]
    assert "503" not in write["responses"]
    assert {"400", "413", "422"} <= set(write["responses"])  # a body


def test_a_body_read_by_the_handler_lands_in_the_components() -> None:
    document = build_openapi(_small_app())
    write = document["paths"]["/things/{thing_id}"]["post"]
    assert write["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/_Thing"
    }
    schemas = document["components"]["schemas"]
    assert schemas["_Thing"]["properties"]["parts"]["items"] == {
        "$ref": "#/components/schemas/_Part"
    }
    assert "size" in schemas["_Part"]["properties"]


def test_install_openapi_serves_the_built_document() -> None:
    app = _small_app()
    install_openapi(app)
    document = TestClient(app).get("/openapi.json").json()
    assert document == build_openapi(app)
    assert request_body(ChangeSet)["requestBody"]["required"] is True
