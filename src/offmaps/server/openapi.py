"""The OpenAPI document of the server, kept true to what it answers, and the page showing it.

FastAPI describes what a route's signature says: parameters, bodies, the success response and
its own validation error. It knows nothing of the errors a route answers through
:mod:`offmaps.server.problems` (problem documents, ``application/problem+json``), of bodies a
handler reads itself, or of the bearer tokens. :func:`build_openapi` adds them from route
metadata, one rule for all routes rather than a ``responses=`` on each:

- a path parameter: ``404`` (nothing of that name);
- a query parameter or a body: ``400`` (a value the handler refuses) and ``422`` (a value its
  types refuse), as problem documents, not FastAPI's ``HTTPValidationError``;
- a body (a body parameter, or a ``requestBody`` in ``openapi_extra``): ``413`` (over the
  server's body limit);
- the caller as a dependency (:func:`offmaps.server.auth.current_principal`): ``401`` (a bad
  token) and ``403`` (not allowed), with the optional ``oauth2`` security requirement; a
  :class:`CallerRequirement` dependency makes it required, with its scopes;
- a dependency marked with :func:`documents_problems`: the statuses it names (a quota: 429);
- any ``rules`` given to :func:`install_openapi`, for what no route says (a middleware);
- a ``responses=`` entry of a route with an error status and no content: a problem document.

:func:`install_openapi` also answers ``405`` with the ``Allow`` header of every route of the
path, not only of the first one the router tried, and :func:`install_docs` serves Swagger UI
from the package (``offmaps/server/static/swagger-ui``, from npm's ``swagger-ui-dist``), so that
``/docs`` works without the internet.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from offmaps.access import Scope
from offmaps.server.auth import current_principal
from offmaps.server.problems import PROBLEM_MEDIA_TYPE, problem_response

__all__ = [
    "PROBLEM_SCHEMA",
    "SECURITY_SCHEME",
    "SWAGGER_UI_DIR",
    "CallerRequirement",
    "ProblemDocument",
    "ProblemRule",
    "allowed_methods",
    "build_openapi",
    "documents_problems",
    "install_docs",
    "install_openapi",
    "request_body",
]

PROBLEM_SCHEMA = "ProblemDocument"
"""The name of the problem document's schema in ``components.schemas``."""
SECURITY_SCHEME = "oauth2"
"""The name of the bearer-token security scheme (tokens of ``POST /oauth2/token``)."""
SWAGGER_UI_DIR = Path(__file__).parent / "static" / "swagger-ui"
"""Swagger UI's files, served under ``/docs/static``."""
_TOKEN_ENDPOINT = "/oauth2/token"  # noqa: S105 - a path, not a password
_DOCS_STATIC = "/docs/static"
_PROBLEMS_ATTRIBUTE = "__offmaps_problems__"
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")

_WHY = {
    400: "The request is malformed, or a value is refused (the problem's detail says which)",
    401: "No valid token: log in (`WWW-Authenticate` says why)",
    403: "The token does not allow this",
    404: "Nothing of that name, or nothing the caller may see",
    405: "The resource has no such method (`Allow` lists those it has)",
    409: "The resource changed, or is in a state that does not allow this",
    413: "The request body is over the server's limit",
    415: "The body is not of a media type this operation reads",
    416: "The range asked for has no byte of the file",
    422: "A parameter or the body does not match this document",
    429: "Too many requests: try again after `Retry-After` seconds",
    502: "An upstream source failed",
    503: "A store is not available",
    507: "The server is out of storage",
}

F = TypeVar("F", bound=Callable[..., Any])

ProblemRule = Callable[[RouteContext, str], Iterable[int]]
"""The problem statuses an operation (a route and one of its methods) can answer, beyond those
its own metadata gives: for what a middleware in front of the routes does."""


class ProblemDocument(BaseModel):
    """An error, as every route answers it (RFC 9457), with the error's context as extra
    members (``layer``, ``field``, ``errors``, ...)."""

    model_config = ConfigDict(extra="allow", title=PROBLEM_SCHEMA)

    type: str = Field(default="about:blank", description="A URI naming the kind of problem")
    title: str = Field(description="The kind of problem, short")
    status: int = Field(ge=400, le=599, description="The HTTP status")
    detail: str = Field(description="What went wrong, for a person")


@runtime_checkable
class CallerRequirement(Protocol):
    """A route dependency that refuses callers without a token, or without some scopes.

    The document gives its operations the required ``oauth2`` security requirement with
    ``scopes``, for the methods it ``applies_to``.
    """

    @property
    def scopes(self) -> Sequence[str]:
        """The scopes the caller's token must have."""
        ...

    def applies_to(self, method: str) -> bool:
        """Whether requests of ``method`` must meet the requirement."""
        ...


def documents_problems(*statuses: int) -> Callable[[F], F]:
    """Mark a route dependency as able to answer these problem statuses (say 429 for a quota),
    so that every operation using it documents them."""

    def mark(dependency: F) -> F:
        setattr(dependency, _PROBLEMS_ATTRIBUTE, tuple(statuses))
        return dependency

    return mark


def request_body(
    model: type[BaseModel], media_type: str = "application/json", *, description: str = ""
) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads and validates its body itself, as ``model``.

    The model's schema (and those it uses) land in ``components.schemas``.
    """
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    definitions[model.__name__] = schema
    body: dict[str, Any] = {
        "required": True,
        "content": {
            media_type: {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}", "$defs": definitions}
            }
        },
    }
    if description:
        body["description"] = description
    return {"requestBody": body}


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _has_params(dependant: Dependant) -> tuple[bool, bool, bool]:
    """Whether the operation has path parameters, query/header/cookie parameters, a body."""
    path = bool(dependant.path_params)
    other = bool(dependant.query_params or dependant.header_params or dependant.cookie_params)
    body = bool(dependant.body_params)
    for sub in _dependencies(dependant):
        path = path or bool(sub.path_params)
        other = other or bool(sub.query_params or sub.header_params or sub.cookie_params)
        body = body or bool(sub.body_params)
    return path, other, body


def _operation_problems(
    route: RouteContext, method: str, operation: dict[str, Any], rules: Sequence[ProblemRule]
) -> tuple[set[int], list[dict[str, list[str]]] | None]:
    """The problem statuses of one operation, and its security requirements."""
    statuses: set[int] = set()
    path, other, body = _has_params(route.dependant)
    body = body or "requestBody" in operation
    if path:
        statuses.add(404)
    if other or body:
        statuses |= {400, 422}
    if body:
        statuses.add(413)
    security: list[dict[str, list[str]]] | None = None
    required: set[str] = set()
    is_required = False
    for sub in _dependencies(route.dependant):
        call: object = sub.call
        if call is current_principal:
            statuses |= {401, 403}
            security = security or [{SECURITY_SCHEME: []}, {}]
        elif isinstance(call, CallerRequirement) and call.applies_to(method):
            statuses |= {401, 403}
            is_required = True
            required |= set(call.scopes)
        statuses |= set(getattr(call, _PROBLEMS_ATTRIBUTE, ()))
    for rule in rules:
        statuses |= set(rule(route, method))
    if is_required:
        security = [{SECURITY_SCHEME: sorted(required)}]
    return statuses, security


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA}"}}}


def _problem_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _WHY.get(status, HTTPStatus(status).phrase),
        "content": _problem_content(),
    }
    if status == 429:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before the next request is counted",
                "required": True,
                "schema": {"type": "integer", "minimum": 0},
            }
        }
    return response


def _document_problems(operation: dict[str, Any], statuses: set[int]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for key, response in responses.items():
        if not key.isdigit() or int(key) < 400:
            continue
        content = response.get("content")
        fastapi_validation = content is not None and any(
            name in str(content) for name in _FASTAPI_VALIDATION_SCHEMAS
        )
        if content is None or fastapi_validation:
            response["content"] = _problem_content()
            if fastapi_validation:
                response["description"] = _WHY[422]
    for status in sorted(statuses):
        responses.setdefault(str(status), _problem_response(status))


def _hoist_definitions(document: dict[str, Any]) -> None:
    """Move the ``$defs`` of request body schemas (:func:`request_body`) and of response
    schemas given in a route's ``responses`` into the components."""
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            contents = [operation.get("requestBody", {}).get("content", {})]
            contents += [r.get("content", {}) for r in operation.get("responses", {}).values()]
            for media in (media for content in contents for media in content.values()):
                definitions = media.get("schema", {}).pop("$defs", {})
                for name, schema in definitions.items():
                    known = schemas.setdefault(name, schema)
                    if known != schema:
                        msg = f"two different schemas named {name!r} in the OpenAPI document"
                        raise ValueError(msg)


def _drop_unused_validation_schemas(document: dict[str, Any]) -> None:
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        schema = schemas.pop(name, None)
        if schema is not None and f"#/components/schemas/{name}" in str(document):
            schemas[name] = schema


def _security_scheme() -> dict[str, Any]:
    scopes = {scope.value: f"the {scope.value} scope" for scope in Scope}
    return {
        "type": "oauth2",
        "description": "Bearer tokens from `POST /oauth2/token` (RFC 6749)",
        "flows": {
            "password": {"tokenUrl": _TOKEN_ENDPOINT, "scopes": scopes},
            "clientCredentials": {"tokenUrl": _TOKEN_ENDPOINT, "scopes": scopes},
        },
    }


def build_openapi(app: FastAPI, rules: Sequence[ProblemRule] = ()) -> dict[str, Any]:
    """The OpenAPI document of ``app``: FastAPI's, with the problems, security and bodies its
    routes' metadata says they have (see the module's docstring)."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
        servers=app.servers,
    )
    document = copy.deepcopy(document)
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})[PROBLEM_SCHEMA] = ProblemDocument.model_json_schema()
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = _security_scheme()
    paths: dict[str, Any] = document.get("paths", {})
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        for method in sorted(route.methods or ()):
            operation = paths.get(route.path_format or "", {}).get(method.lower())
            if operation is None:
                continue
            statuses, security = _operation_problems(route, method, operation, rules)
            _document_problems(operation, statuses)
            if security is not None:
                operation["security"] = security
    _hoist_definitions(document)
    _drop_unused_validation_schemas(document)
    return document


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """The methods the routes of ``request``'s path answer, as an ``Allow`` header lists them."""
    methods: set[str] = set()
    for route in iter_route_contexts(app.routes):
        if route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:  # PARTIAL: the path matches, the method does not
                methods |= route.methods
    return sorted(methods)


def install_openapi(app: FastAPI, *, rules: Sequence[ProblemRule] = ()) -> None:
    """Serve :func:`build_openapi`'s document as ``app``'s, and answer 405 with the ``Allow``
    header of every route of the path.

    Args:
        app: the application.
        rules: what else operations can answer, beyond their routes' metadata.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, rules)
        return app.openapi_schema

    async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, StarletteHTTPException):  # pragma: no cover - 405s are these
            raise exc
        allow = ", ".join(allowed_methods(app, request))
        detail = f"{request.method[:16]} is not a method of {request.url.path[:200]}; use {allow}"
        return problem_response(405, detail, headers={"Allow": allow})

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(405, method_not_allowed)


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` from the package's own copy: no file from the internet.

    ``app`` must be created with ``docs_url=None`` and ``redoc_url=None`` (ReDoc is not
    served: it would need its own copy).
    """
    title = f"{app.title} API"
    redirect = "/docs/oauth2-redirect"
    app.mount(_DOCS_STATIC, StaticFiles(directory=SWAGGER_UI_DIR), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            swagger_js_url=f"{_DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{_DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{_DOCS_STATIC}/favicon-32x32.png",
            oauth2_redirect_url=redirect,
            # the default validator badge asks validator.swagger.io about the document
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(redirect, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
