"""The GraphQL API (``/graphql``, Strawberry): tile caches, their jobs, and offline-edit sync.

A typed schema over the same services as the REST API (docs/server.md#graphql): the same
bearer tokens and scopes, checked for every root field before anything runs (``security``),
errors with the codes of the REST problem documents (``errors``), depth, cost, alias and token
limits (``limits``), features in sync operations as GeoJSON. The printed schema is
``docs/schema.graphql`` (a test keeps it in step).
"""

from offmaps.server.graphql.context import GraphQLContext
from offmaps.server.graphql.errors import error_document
from offmaps.server.graphql.limits import MAX_ALIASES, MAX_COST, MAX_DEPTH, MAX_TOKENS, CostLimit
from offmaps.server.graphql.router import GRAPHQL_PATH, OffmapsGraphQLRouter, graphql_router
from offmaps.server.graphql.schema import Mutation, Query, schema
from offmaps.server.graphql.security import FIELD_REQUIREMENTS, Authorize

__all__ = [
    "FIELD_REQUIREMENTS",
    "GRAPHQL_PATH",
    "MAX_ALIASES",
    "MAX_COST",
    "MAX_DEPTH",
    "MAX_TOKENS",
    "Authorize",
    "CostLimit",
    "GraphQLContext",
    "Mutation",
    "OffmapsGraphQLRouter",
    "Query",
    "error_document",
    "graphql_router",
    "schema",
]
