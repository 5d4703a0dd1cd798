"""CQL2 text filters compiled to parameterised SQL.

A layer's definition expression and the ``filter`` of a feature request are CQL2 text. They are
parsed with pygeofilter and compiled to a SQL boolean expression whose values are all bound
parameters: the only text taken from the filter into the SQL are field names, and those must be
fields of the layer and are quoted as identifiers.

Supported: comparisons (``=``, ``<>``, ``<``, ``<=``, ``>``, ``>=``), ``AND``/``OR``/``NOT``,
``IS [NOT] NULL``, ``[NOT] LIKE`` (``%`` any run, ``_`` one character, ``\\`` escape; always
case-sensitive), ``CASEI(...)`` for case-insensitive matching, ``[NOT] BETWEEN``, ``[NOT] IN``,
arithmetic (``+ - * /``) on numbers, ``DATE(...)``/``TIMESTAMP(...)`` literals, ``INCLUDE`` and
``EXCLUDE``.

Not yet supported (:class:`~offmaps.errors.UnsupportedFilterError`): spatial predicates
(``S_INTERSECTS`` and friends, ``BBOX``), temporal and array predicates, and functions other than
``CASEI``.

Known limits of the pygeofilter 0.4 grammar, which offmaps does not paper over: quoted strings
cannot contain a single quote (``''`` is not an escape), field names need at least two characters
unless double-quoted, and ``AND`` and ``OR`` have the same precedence and associate to the left
(``a = 1 OR b = 2 AND c = 3`` means ``(a = 1 OR b = 2) AND c = 3``): use parentheses.

In SQLite, ``LIKE`` is compiled to ``GLOB`` (SQLite's ``LIKE`` ignores ASCII case) and ``CASEI``
to ``lower()``, which folds ASCII letters only. Booleans bind as ``0``/``1``, dates as ISO text and
timestamps as GeoPackage text (``YYYY-MM-DDTHH:MM:SS.SSSZ``, in UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from offmaps.errors import InvalidFilterError
from offmaps.schemas.cql2 import too_deep_at

__all__ = [
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_LENGTH",
    "FieldType",
    "SQLDialect",
    "SQLFilter",
    "compile_filter",
]

MAX_FILTER_LENGTH = 10_000
"""The longest filter text accepted, in characters."""

MAX_FILTER_DEPTH = 100
"""The deepest nesting accepted, in parentheses or in levels of the parsed expression.

Chains of the same ``AND``/``OR`` are flattened and count as one level.
"""


class FieldType(StrEnum):
    """The type of a layer field, as far as filtering is concerned."""

    TEXT = "text"
    INTEGER = "integer"
    REAL = "real"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"


class SQLDialect(StrEnum):
    """The SQL flavour to compile to; it decides placeholders and literal encodings."""

    SQLITE = "sqlite"
    """``?`` placeholders (the :mod:`sqlite3` ``qmark`` style); GeoPackage value encodings."""

    POSTGRES = "postgres"
    """``%s`` placeholders (psycopg style); ``%`` in identifiers is doubled."""


@dataclass(frozen=True, slots=True)
class SQLFilter:
    """A SQL boolean expression and the parameters bound to its placeholders, in order."""

    sql: str
    params: tuple[object, ...]


def compile_filter(text: str, fields: Mapping[str, FieldType], *, dialect: SQLDialect) -> SQLFilter:
    """Compile CQL2 text to a parameterised SQL boolean expression.

    Args:
        text: the CQL2 text filter.
        fields: the layer's filterable fields, by exact (case-sensitive) name.
        dialect: the SQL dialect to compile to.

    Returns:
        The SQL expression, to be used as ``WHERE <sql>``, and its parameters.

    Raises:
        InvalidFilterError: the text is too long or too deeply nested, is not valid CQL2, names a
            field not in ``fields``, or compares values of different types.
        UnsupportedFilterError: the filter uses a construct not supported yet (spatial, temporal
            or array predicates, functions other than ``CASEI``).
    """
    # the parser and compiler import pygeofilter and lark (~0.3 s): on the first filter only, so
    # that a store, or the device side of sync, does not pay for them (docs/cli.md, "Start-up")
    from offmaps.features._cql2_sql import compile_cql2  # noqa: PLC0415

    _check_text(text)
    return compile_cql2(text, fields, dialect)


# --- checks before parsing ------------------------------------------------------------------


def _check_text(text: str) -> None:
    if len(text) > MAX_FILTER_LENGTH:
        msg = f"filter is too long: {len(text)} characters, at most {MAX_FILTER_LENGTH} allowed"
        raise InvalidFilterError(msg)
    if not text.strip():
        raise InvalidFilterError("filter is empty")
    if "\x00" in text:
        raise InvalidFilterError("filter contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        msg = f"filter is not valid Unicode text at character {exc.start + 1}"
        raise InvalidFilterError(msg) from None
    index = too_deep_at(text, MAX_FILTER_DEPTH)
    if index is not None:
        msg = (
            f"filter is nested too deeply: more than {MAX_FILTER_DEPTH} parentheses "
            f"at character {index + 1}"
        )
        raise InvalidFilterError(msg, column=index + 1)
