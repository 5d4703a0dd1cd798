"""The CQL2 text parser and SQL compiler behind :func:`offmaps.features.filters.compile_filter`.

Private, and imported by ``compile_filter`` on its first call only: pygeofilter and lark take
~0.3 s to import, which a store that is never asked a filter, or the device side of sync, should
not pay (docs/cli.md, "Start-up"). The documentation of what is supported is in
:mod:`offmaps.features.filters`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import lark
from pygeofilter import ast, values  # type: ignore[import-untyped]

from offmaps.errors import InvalidFilterError, UnsupportedFilterError
from offmaps.features.filters import MAX_FILTER_DEPTH, FieldType, SQLDialect, SQLFilter
from offmaps.schemas.cql2 import cql2_text_parser

__all__ = ["compile_cql2"]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_SNIPPET = 20


def compile_cql2(text: str, fields: Mapping[str, FieldType], dialect: SQLDialect) -> SQLFilter:
    """Parse ``text`` (already checked for length, nesting and NULs) and compile it to SQL."""
    return _Compiler(fields, dialect).compile(_parse(text))


def _parse(text: str) -> Any:
    try:
        return cql2_text_parser().parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    except lark.exceptions.VisitError as exc:
        msg = f"invalid CQL2 filter: {_describe(exc.orig_exc)}"
        raise InvalidFilterError(msg) from None
    except lark.exceptions.LarkError as exc:
        raise InvalidFilterError(f"invalid CQL2 filter: {exc}") from None
    except RecursionError:
        raise InvalidFilterError("filter is nested too deeply") from None
    # pygeofilter converts values while parsing and lets Python's errors through, e.g.
    # ValueError for DATE('2020-13-01') and TypeError for the negation of a field, -name.
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise InvalidFilterError(f"invalid CQL2 filter: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TypeError) and "unary -" in str(exc):
        return "only numbers can be negated"
    return str(exc) or type(exc).__name__


def _syntax_error(text: str, exc: lark.exceptions.UnexpectedInput) -> InvalidFilterError:
    line = getattr(exc, "line", None)
    column = getattr(exc, "column", None)
    position = getattr(exc, "pos_in_stream", None)
    if isinstance(exc, lark.exceptions.UnexpectedEOF):
        found = "end of filter"
    elif isinstance(exc, lark.exceptions.UnexpectedToken):
        token = exc.token
        found = "end of filter" if token.type == "$END" else repr(str(token))
    elif isinstance(exc, lark.exceptions.UnexpectedCharacters):
        found = repr(exc.char)
    else:
        found = "input"
    where = ""
    if isinstance(line, int) and isinstance(column, int) and line > 0 and column > 0:
        where = f" at line {line}, column {column}"
    else:
        line = column = None
    near = ""
    if isinstance(position, int) and position >= 0:
        snippet = text[max(position - _SNIPPET, 0) : position + _SNIPPET]
        near = f" near {snippet!r}"
    return InvalidFilterError(
        f"invalid CQL2 filter: unexpected {found}{where}{near}", line=line, column=column
    )


# --- compiling ------------------------------------------------------------------------------

_NUMBERS = frozenset({FieldType.INTEGER, FieldType.REAL})

_COMPARISONS: dict[type[Any], str] = {
    ast.Equal: "=",
    ast.NotEqual: "<>",
    ast.LessThan: "<",
    ast.LessEqual: "<=",
    ast.GreaterThan: ">",
    ast.GreaterEqual: ">=",
}

_ARITHMETIC: dict[type[Any], str] = {ast.Add: "+", ast.Sub: "-", ast.Mul: "*", ast.Div: "/"}

_UNSUPPORTED: tuple[tuple[type[Any], str], ...] = (
    (ast.SpatialComparisonPredicate, "spatial predicates"),
    (ast.SpatialDistancePredicate, "spatial distance predicates"),
    (ast.Relate, "spatial predicates"),
    (ast.BBox, "spatial predicates"),
    (ast.TemporalPredicate, "temporal predicates"),
    (ast.ArrayPredicate, "array predicates"),
    (ast.Exists, "EXISTS"),
)


def _compatible(left: FieldType, right: FieldType) -> bool:
    return left == right or (left in _NUMBERS and right in _NUMBERS)


class _Compiler:
    def __init__(self, fields: Mapping[str, FieldType], dialect: SQLDialect) -> None:
        self._fields = fields
        self._dialect = dialect
        self._placeholder = "?" if dialect is SQLDialect.SQLITE else "%s"
        self._params: list[object] = []

    def compile(self, node: Any) -> SQLFilter:
        sql = self._condition(node, 1)
        return SQLFilter(sql, tuple(self._params))

    # conditions

    def _condition(self, node: Any, depth: int) -> str:
        if depth > MAX_FILTER_DEPTH:
            raise InvalidFilterError(f"filter is nested too deeply: more than {MAX_FILTER_DEPTH}")
        if isinstance(node, ast.Combination):
            keyword = "AND" if isinstance(node, ast.And) else "OR"
            parts = [self._condition(child, depth + 1) for child in _flatten(node)]
            return "(" + f" {keyword} ".join(parts) + ")"
        if isinstance(node, ast.Not):
            return f"(NOT {self._condition(node.sub_node, depth + 1)})"
        if isinstance(node, ast.Include):
            return "(1 = 0)" if node.not_ else "(1 = 1)"
        comparison = _COMPARISONS.get(type(node))
        if comparison is not None:
            left, right = self._pair(node.lhs, node.rhs, comparison, depth)
            return f"({left} {comparison} {right})"
        if isinstance(node, ast.IsNull):
            operand, _ = self._expression(node.lhs, depth + 1)
            return f"({operand} IS {'NOT ' if node.not_ else ''}NULL)"
        if isinstance(node, ast.Between):
            return self._between(node, depth)
        if isinstance(node, ast.In):
            return self._in(node, depth)
        if isinstance(node, ast.Like):
            return self._like(node, depth)
        for kind, name in _UNSUPPORTED:
            if isinstance(node, kind):
                raise UnsupportedFilterError(f"{name} are not supported in filters yet")
        msg = f"expected a condition, found {_name(node)}"
        raise InvalidFilterError(msg)

    def _pair(self, lhs: Any, rhs: Any, operator: str, depth: int) -> tuple[str, str]:
        left, left_type = self._expression(lhs, depth + 1)
        right, right_type = self._expression(rhs, depth + 1)
        if not _compatible(left_type, right_type):
            msg = f"cannot compare {left_type} with {right_type} using {operator}"
            raise InvalidFilterError(msg)
        return left, right

    def _between(self, node: Any, depth: int) -> str:
        operand, kind = self._expression(node.lhs, depth + 1)
        bounds = []
        for bound in (node.low, node.high):
            sql, bound_kind = self._expression(bound, depth + 1)
            if not _compatible(kind, bound_kind):
                raise InvalidFilterError(f"cannot compare {kind} with {bound_kind} in BETWEEN")
            bounds.append(sql)
        negation = "NOT " if node.not_ else ""
        return f"({operand} {negation}BETWEEN {bounds[0]} AND {bounds[1]})"

    def _in(self, node: Any, depth: int) -> str:
        operand, kind = self._expression(node.lhs, depth + 1)
        options = []
        for option in node.sub_nodes:
            sql, option_kind = self._expression(option, depth + 1)
            if not _compatible(kind, option_kind):
                raise InvalidFilterError(f"cannot compare {kind} with {option_kind} in IN")
            options.append(sql)
        negation = "NOT " if node.not_ else ""
        return f"({operand} {negation}IN ({', '.join(options)}))"

    def _like(self, node: Any, depth: int) -> str:
        operand, kind = self._expression(node.lhs, depth + 1)
        if kind is not FieldType.TEXT:
            raise InvalidFilterError(f"LIKE applies to text, not to {kind}")
        pattern = node.pattern
        fold_pattern = node.nocase
        if isinstance(pattern, ast.Function) and pattern.name == "lower":
            if len(pattern.arguments) != 1:
                raise InvalidFilterError("CASEI takes exactly one argument")
            pattern = pattern.arguments[0]
            fold_pattern = True
        if not isinstance(pattern, str):
            raise InvalidFilterError("the pattern of LIKE must be a quoted text")
        if (len(pattern) - len(pattern.rstrip("\\"))) % 2:
            raise InvalidFilterError("a LIKE pattern cannot end with the escape character \\")
        negation = "NOT " if node.not_ else ""
        if self._dialect is SQLDialect.SQLITE:
            placeholder = self._bind(_like_to_glob(pattern))
            operator = "GLOB"
            escape = ""
        else:
            placeholder = self._bind(pattern)
            operator = "LIKE"
            escape = " ESCAPE '\\'"
        if node.nocase:
            operand = f"lower({operand})"
        if fold_pattern:
            placeholder = f"lower({placeholder})"
        return f"({operand} {negation}{operator} {placeholder}{escape})"

    # expressions

    def _expression(self, node: Any, depth: int) -> tuple[str, FieldType]:
        if depth > MAX_FILTER_DEPTH:
            raise InvalidFilterError(f"filter is nested too deeply: more than {MAX_FILTER_DEPTH}")
        if isinstance(node, ast.Attribute):
            return self._field(node.name)
        operator = _ARITHMETIC.get(type(node))
        if operator is not None:
            left, left_type = self._expression(node.lhs, depth + 1)
            right, right_type = self._expression(node.rhs, depth + 1)
            if left_type not in _NUMBERS or right_type not in _NUMBERS:
                msg = f"arithmetic needs numbers, found {left_type} {operator} {right_type}"
                raise InvalidFilterError(msg)
            both_integers = left_type is right_type is FieldType.INTEGER
            kind = FieldType.INTEGER if both_integers else FieldType.REAL
            return f"({left} {operator} {right})", kind
        if isinstance(node, ast.Function):
            if node.name != "lower":
                raise UnsupportedFilterError(
                    f"function {node.name!r} is not supported in filters yet"
                )
            if len(node.arguments) != 1:
                raise InvalidFilterError("CASEI takes exactly one argument")
            argument, kind = self._expression(node.arguments[0], depth + 1)
            if kind is not FieldType.TEXT:
                raise InvalidFilterError(f"CASEI applies to text, not to {kind}")
            return f"lower({argument})", FieldType.TEXT
        return self._literal(node)

    def _field(self, name: str) -> tuple[str, FieldType]:
        kind = self._fields.get(name)
        if kind is None:
            known = ", ".join(sorted(self._fields)) or "(none)"
            msg = f"unknown field {name!r} in filter; known fields: {known}"
            raise InvalidFilterError(msg, field=name)
        identifier = '"' + name.replace('"', '""') + '"'
        if self._dialect is SQLDialect.POSTGRES:
            identifier = identifier.replace("%", "%%")
        return identifier, FieldType(kind)

    def _literal(self, value: Any) -> tuple[str, FieldType]:
        sqlite = self._dialect is SQLDialect.SQLITE
        if isinstance(value, bool):
            return self._bind(int(value) if sqlite else value), FieldType.BOOLEAN
        if isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise InvalidFilterError(f"integer {value} does not fit in 64 bits")
            return self._bind(value), FieldType.INTEGER
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidFilterError(f"number {value} is not finite")
            return self._bind(value), FieldType.REAL
        if isinstance(value, str):
            return self._bind(value), FieldType.TEXT
        if isinstance(value, datetime):
            moment = _utc(value)
            return self._bind(_geopackage_datetime(moment) if sqlite else moment), (
                FieldType.DATETIME
            )
        if isinstance(value, date):
            return self._bind(value.isoformat() if sqlite else value), FieldType.DATE
        if isinstance(value, values.Geometry | values.Envelope):
            raise UnsupportedFilterError("geometry values are not supported in filters yet")
        if isinstance(value, values.Interval | list):
            raise UnsupportedFilterError("intervals are not supported in filters yet")
        raise InvalidFilterError(f"expected a value, found {_name(value)}")

    def _bind(self, value: object) -> str:
        self._params.append(value)
        return self._placeholder


def _flatten(node: Any) -> list[Any]:
    """The operands of a chain of the same AND or OR, left to right, without recursion."""
    kind = type(node)
    operands: list[Any] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if type(current) is kind:
            stack.append(current.rhs)
            stack.append(current.lhs)
        else:
            operands.append(current)
    return operands


def _like_to_glob(pattern: str) -> str:
    """Translate a CQL2 LIKE pattern (``%``, ``_``, ``\\`` escape) to a SQLite GLOB pattern."""
    out: list[str] = []
    escaped = False
    for char in pattern:
        if escaped:
            out.append(_glob_literal(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "%":
            out.append("*")
        elif char == "_":
            out.append("?")
        else:
            out.append(_glob_literal(char))
    return "".join(out)


def _glob_literal(char: str) -> str:
    return f"[{char}]" if char in "*?[" else char


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _geopackage_datetime(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _name(node: object) -> str:
    return type(node).__name__
