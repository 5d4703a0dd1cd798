"""``/graphql``: the schema over HTTP (GraphQL over HTTP: POST, and GET for queries only)."""

from __future__ import annotations

from typing import Any

from cross_web import HTTPException
from fastapi import Request
from starlette.responses import Response
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLHTTPResponse
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from offmaps.server.graphql.context import GraphQLContext, context_of
from offmaps.server.graphql.errors import error_document
from offmaps.server.graphql.schema import schema
from offmaps.server.problems import problem_response

__all__ = ["GRAPHQL_PATH", "OffmapsGraphQLRouter", "graphql_router"]

GRAPHQL_PATH = "/graphql"


class OffmapsGraphQLRouter(GraphQLRouter[GraphQLContext, None]):
    """Strawberry's FastAPI router, with errors carrying the REST API's codes, and requests
    that are not GraphQL requests at all (a body that is not JSON, no query, a mutation by
    GET) answered with problem documents like every other route."""

    async def run(  # type: ignore[override]
        self,
        request: Request,
        context: GraphQLContext = UNSET,
        root_value: None = UNSET,
    ) -> Response:
        """Answer a request; a refused one as a problem document (a mutation by GET: 405)."""
        try:
            return await super().run(request, context=context, root_value=root_value)
        except HTTPException as exc:
            if isinstance(exc.__cause__, InvalidOperationTypeError):
                return problem_response(
                    405, "mutations are sent by POST, never GET", headers={"Allow": "POST"}
                )
            return problem_response(exc.status_code, exc.reason)

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        """The answer's JSON: data, and errors with ``extensions.code`` and ``status``."""
        answer: dict[str, Any] = {"data": result.data}
        if result.errors:
            answer["errors"] = [error_document(error) for error in result.errors]
        if result.extensions:
            answer["extensions"] = result.extensions
        return answer  # type: ignore[return-value]


def graphql_router() -> OffmapsGraphQLRouter:
    """The router of ``/graphql``: queries by POST or GET, mutations by POST only; no IDE page
    (it would load its scripts from a CDN): introspection is on, for any GraphQL client."""
    return OffmapsGraphQLRouter(
        schema,
        path=GRAPHQL_PATH,
        graphql_ide=None,
        allow_queries_via_get=True,
        context_getter=context_of,
        subscription_protocols=(),
        tags=["graphql"],
        include_in_schema=False,  # described by its own schema (docs/schema.graphql)
    )
