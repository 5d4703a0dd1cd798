"""Limits on what one GraphQL document may ask: depth, cost, aliases, tokens.

Each is checked while the document is parsed or validated, before anything runs, and answered
with a GraphQL error (never a 500). The size of a request is bounded before that by the
server's ``OFFMAPS_MAX_BODY_BYTES`` (413), as for every route.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

__all__ = ["MAX_ALIASES", "MAX_COST", "MAX_DEPTH", "MAX_TOKENS", "CostLimit", "limit_extensions"]

MAX_DEPTH = 10
"""The deepest selection (introspection fields are not counted)."""
MAX_COST = 1_000
"""The most fields one operation may select once its fragments are expanded (introspection
counts one per introspection field)."""
MAX_ALIASES = 30
"""The most aliases in a document: each alias can repeat a costly field."""
MAX_TOKENS = 5_000
"""The most lexical tokens in a document (the parser stops there)."""


class CostLimit(ValidationRule):
    """Refuses an operation selecting over :data:`MAX_COST` fields, fragments expanded.

    Fragments are costed once each (memoised), so a document whose fragments spread each
    other many times over is refused at once instead of being expanded.
    """

    max_cost = MAX_COST

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        self.fragments = {
            d.name.value: d
            for d in context.document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        self.costs: dict[str, int] = {}

    def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
        """Cost one operation; report it when over the limit."""
        cost = self._cost(node.selection_set, frozenset())
        if cost > self.max_cost:
            name = node.name.value if node.name else "the operation"
            self.report_error(
                GraphQLError(
                    f"{name} selects {cost:,} fields (fragments expanded): over the limit "
                    f"of {self.max_cost:,}",
                    node,
                )
            )

    def _cost(self, selections: SelectionSetNode, active: frozenset[str]) -> int:
        total = 0
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                total += 1
                if selection.selection_set is not None and not selection.name.value.startswith(
                    "__"
                ):
                    total += self._cost(selection.selection_set, active)
            elif isinstance(selection, InlineFragmentNode):
                total += self._cost(selection.selection_set, active)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in active:  # other rules report these
                    continue
                if name not in self.costs:
                    self.costs[name] = self._cost(fragment.selection_set, active | {name})
                total += self.costs[name]
            if total > self.max_cost:  # enough to refuse; the rest need not be counted
                return total
        return total


def limit_extensions() -> list[Callable[[], SchemaExtension]]:
    """The schema extensions enforcing the limits above (a fresh one per operation)."""
    return [
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: AddValidationRules([CostLimit]),
    ]
