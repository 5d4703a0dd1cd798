"""A syntax check of CQL2 text, without a layer's fields: for definition expressions in documents.

The full compiler, which checks field names and types, is :mod:`offmaps.features.filters`, a layer
above this one. It parses with :func:`cql2_text_parser` and guards nesting with
:func:`too_deep_at` from here, so text accepted there parses here.
"""

from __future__ import annotations

import functools
import os.path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the return annotation only; lark is imported when a parser is built
    import lark

__all__ = ["MAX_EXPRESSION_LENGTH", "check_cql2_text", "cql2_text_parser", "too_deep_at"]

MAX_EXPRESSION_LENGTH = 10_000
"""The longest definition expression accepted, in characters (as for any filter)."""

_MAX_DEPTH = 100


@functools.cache
def cql2_text_parser() -> lark.Lark:
    """pygeofilter's CQL2 text parser, built once.

    pygeofilter and lark are imported here, on first use, not with this module: they take ~0.3 s,
    which a document without a definition expression should not cost (docs/cli.md, "Start-up").
    """
    import lark  # noqa: PLC0415
    from pygeofilter.parsers.cql2_text import (  # type: ignore[import-untyped]  # noqa: PLC0415
        parser as cql2_parser,
    )

    # pygeofilter's own parser is built with ``debug=True``, which prints a parser state dump to
    # stdout whenever a value in the text is rejected; build the same parser without it
    return lark.Lark.open(
        "grammar.lark",
        rel_to=cql2_parser.__file__,
        parser="lalr",
        debug=False,
        maybe_placeholders=False,
        transformer=cql2_parser.CQLTransformer(),
        import_paths=[os.path.dirname(os.path.dirname(cql2_parser.__file__))],
    )


def too_deep_at(text: str, limit: int) -> int | None:
    """The index of the parenthesis that nests ``text`` more than ``limit`` deep, or ``None``.

    Checked before parsing, which recurses once per level; quoted text is skipped.
    """
    depth = 0
    quote: str | None = None
    for index, char in enumerate(text):
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
            if depth > limit:
                return index
        elif char == ")":
            depth = max(depth - 1, 0)
    return None


def check_cql2_text(text: str) -> str:
    """``text`` when it parses as a CQL2 text boolean expression, else ``ValueError``."""
    if not text.strip():
        raise ValueError("is empty: leave it out for no filter")
    if "\x00" in text:
        raise ValueError("contains a NUL character")
    if too_deep_at(text, _MAX_DEPTH) is not None:
        raise ValueError(f"is nested more than {_MAX_DEPTH} parentheses deep")
    parser = cql2_text_parser()
    import lark  # noqa: PLC0415 - imported by cql2_text_parser already

    try:
        parser.parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        line, column = getattr(exc, "line", None), getattr(exc, "column", None)
        where = f" at line {line}, column {column}" if isinstance(column, int) else ""
        raise ValueError(f"is not valid CQL2 text{where}") from None
    except lark.exceptions.VisitError as exc:
        raise ValueError(f"is not valid CQL2 text: {exc.orig_exc}") from None
    except lark.exceptions.LarkError as exc:
        raise ValueError(f"is not valid CQL2 text: {exc}") from None
    except RecursionError:
        raise ValueError("is nested too deeply") from None
    # pygeofilter converts values while parsing and lets Python's errors through,
    # e.g. ValueError for DATE('2020-13-01')
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise ValueError(f"is not valid CQL2 text: {exc}") from None
    return text
