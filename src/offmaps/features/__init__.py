"""Feature layers and tables: filters now; stores, versions and the change journal to come.

Layer 2 of DESIGN.md: imports :mod:`offmaps.errors` and :mod:`offmaps.types` only.
"""

from __future__ import annotations

from offmaps.features.filters import (
    MAX_FILTER_DEPTH,
    MAX_FILTER_LENGTH,
    FieldType,
    SQLDialect,
    SQLFilter,
    compile_filter,
)

__all__ = [
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_LENGTH",
    "FieldType",
    "SQLDialect",
    "SQLFilter",
    "compile_filter",
]
