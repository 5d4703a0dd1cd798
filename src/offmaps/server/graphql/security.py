"""Who may run which GraphQL operation: the REST API's scopes, checked before anything runs.

Every root field (``Query`` and ``Mutation``) has the :class:`~offmaps.server.auth.ScopeRequirement`
of the REST route doing the same work (:data:`FIELD_REQUIREMENTS`); a field without one is
refused, so a new field cannot be open by mistake. :class:`Authorize` checks every root field
of the operation, fragments included, once it is parsed and validated and before the first
resolver runs: a mutation passes the application's write gate as a REST write request does
(the caller from the token, the write rate limit, the scopes), a query the same scope checks
without the rate limit. A refusal answers the whole operation with one error and runs
nothing; the finer rules (owners of replicas and jobs, sharing) are the services' own, as for
REST.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType

from graphql import (
    ExecutionResult,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)
from graphql.language import DocumentNode, FragmentDefinitionNode
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from offmaps.access import Principal
from offmaps.errors import InsufficientScopeError, OffmapsError
from offmaps.server.auth import ScopeRequirement, WriteGate, current_principal
from offmaps.server.graphql.context import GraphQLContext
from offmaps.server.rest.areas import READ_MAPS, WRITE_MAP_AREAS
from offmaps.server.rest.caches import READ_CACHES, WRITE_CACHES
from offmaps.server.rest.offline import FOLLOW_JOBS
from offmaps.server.rest.sync import EDIT, SYNC

__all__ = ["FIELD_REQUIREMENTS", "Authorize", "root_fields"]

FIELD_REQUIREMENTS: Mapping[str, ScopeRequirement] = MappingProxyType(
    {
        # caches (REST: /api/caches, /api/cache-store)
        "caches": READ_CACHES,
        "cache": READ_CACHES,
        "cacheStore": READ_CACHES,
        "seedPlan": WRITE_CACHES,  # REST: POST /api/caches/{name}/seed with dry_run
        "createCache": WRITE_CACHES,
        "deleteCache": WRITE_CACHES,
        "seedCache": WRITE_CACHES,
        "cleanCache": WRITE_CACHES,
        "verifyCache": WRITE_CACHES,
        "collectGarbage": WRITE_CACHES,
        "exportCache": READ_CACHES,  # REST: POST /api/caches/{name}/export
        "importCache": WRITE_CACHES,
        "tileUrls": READ_CACHES,  # REST: POST /api/caches/{name}/urls
        "grantUploads": WRITE_CACHES,
        "commitUploads": WRITE_CACHES,
        # jobs (REST: /api/jobs/{id})
        "job": FOLLOW_JOBS,
        "cancelJob": FOLLOW_JOBS,
        # sync (REST: /api/replicas, /api/conflicts)
        "replica": SYNC,
        "unregisterReplica": SYNC,
        "downloadSize": SYNC,
        "changes": SYNC,
        "changeStatus": SYNC,
        "attachmentUpload": EDIT,
        "uploadChanges": EDIT,
        "conflicts": SYNC,
        "conflict": SYNC,
        "resolveConflict": EDIT,
        # preplanned map areas (REST: /api/maps/{id}/areas; owners are checked by the resolvers)
        "mapAreas": READ_MAPS,
        "mapArea": READ_MAPS,
        "createMapArea": WRITE_MAP_AREAS,
        "updateMapArea": WRITE_MAP_AREAS,
        "refreshMapArea": WRITE_MAP_AREAS,
        "deleteMapArea": WRITE_MAP_AREAS,
    }
)
"""What each root field needs, the requirement of the REST route doing the same work."""

_OPEN_FIELDS = frozenset({"__typename", "__schema", "__type"})
"""Introspection: open to anyone, as ``/openapi.json`` is."""


def root_fields(document: DocumentNode, operation: OperationDefinitionNode) -> Iterator[str]:
    """The names of the root fields ``operation`` selects, through fragments (each once)."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    seen: set[str] = set()

    def visit(selections: SelectionSetNode) -> Iterator[str]:
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                yield selection.name.value
            elif isinstance(selection, InlineFragmentNode):
                yield from visit(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name not in seen and name in fragments:
                    seen.add(name)
                    yield from visit(fragments[name].selection_set)

    yield from visit(operation.selection_set)


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and (
            name is None or (definition.name is not None and definition.name.value == name)
        ):
            return definition
    return None


def _requirements(fields: Iterator[str]) -> tuple[ScopeRequirement, ...]:
    found: list[ScopeRequirement] = []
    for name in fields:
        if name in _OPEN_FIELDS:
            continue
        requirement = FIELD_REQUIREMENTS.get(name)
        if requirement is None:  # fail closed: a field nobody declared a requirement for
            raise InsufficientScopeError(f"{name[:64]} has no declared access rule")
        if requirement not in found:
            found.append(requirement)
    return tuple(found)


class Authorize(SchemaExtension):
    """Checks the caller against every root field's requirement before execution starts."""

    def on_execute(self) -> Iterator[None]:
        """Authorise the operation; on a refusal, answer it with the error and run nothing."""
        execution = self.execution_context
        context = execution.context
        document = execution.graphql_document
        if isinstance(context, GraphQLContext) and document is not None:
            operation = _operation(document, execution.operation_name)
            try:
                if operation is not None:
                    context.authorised = self._authorise(context, document, operation)
            except OffmapsError as exc:
                execution.result = ExecutionResult(
                    data=None, errors=[GraphQLError(str(exc), original_error=exc)]
                )
        yield

    @staticmethod
    def _authorise(
        context: GraphQLContext, document: DocumentNode, operation: OperationDefinitionNode
    ) -> Principal:
        requirements = _requirements(root_fields(document, operation))
        request = context.http
        if operation.operation.value == OperationType.MUTATION.value:
            gate = getattr(request.app.state, "write_gate", None)
            if isinstance(gate, WriteGate):
                return gate.admit(request.scope, requirements)
        principal = current_principal(request)
        for requirement in requirements:
            requirement.check(principal, "POST")
        return principal
