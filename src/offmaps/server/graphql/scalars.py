"""The scalars of the schema beyond GraphQL's own: 64-bit integers and JSON values."""

from __future__ import annotations

from typing import Any, NewType

import strawberry
from strawberry.scalars import JSON
from strawberry.types.scalar import ScalarDefinition

__all__ = ["JSON", "SCALARS", "Long"]

Long = NewType("Long", int)
"""Counts and sizes past GraphQL's 32-bit ``Int`` (the schema maps it, :data:`SCALARS`)."""


def _parse_long(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("a Long is an integer")
    number = int(value)
    if not -(2**63) <= number < 2**63:
        raise ValueError("a Long is a 64-bit integer")
    return number


SCALARS: dict[object, ScalarDefinition] = {
    Long: strawberry.scalar(
        name="Long",
        description="A 64-bit integer (bytes, tile counts, generations), as a JSON number.",
        serialize=int,
        parse_value=_parse_long,
    )
}
"""The scalar map of the schema's config."""
