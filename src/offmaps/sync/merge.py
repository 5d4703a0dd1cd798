"""Three-way merge of a row's fields: the client's edit, the server's row, and their base.

A client edit says which fields it changed, what they held before (the base) and what they
hold after. Against the server's row as it is now, each changed field is either already there,
safe to write (the server has not touched it since the base), or a conflict (both sides changed
it, to different values). Fields the client did not change are never written, so concurrent
edits of different fields merge without a conflict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from offmaps.errors import InvalidChangeSetError
from offmaps.schemas.changeset import GEOMETRY_FIELD

__all__ = ["FieldMerge", "merge_fields", "same_value"]

_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")


def same_value(a: object, b: object, *, field: str | None = None) -> bool:
    """Tell whether two field values are the same, as JSON means them.

    Unlike ``==``, an integer and a float that are equal are the same (``1 == 1.0``, as JSON
    has one number type), but a boolean is never the same as a number (``true`` is not ``1``).
    Lists and objects are compared item by item. Two hex WKB strings under
    :data:`GEOMETRY_FIELD` are the same whatever the case of their hex digits, since clients
    differ in the case they write.

    Args:
        a: One value.
        b: The other value.
        field: The name of the field the values belong to (for the geometry rule).

    Returns:
        ``True`` when the values are the same.
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        # NaN is not JSON, but a NaN left as it was must not read as a change
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, str) and isinstance(b, str):
        if field == GEOMETRY_FIELD and _HEX.fullmatch(a) and _HEX.fullmatch(b):
            return a.lower() == b.lower()
        return a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_value(a[key], b[key]) for key in a)
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class FieldMerge:
    """The outcome of merging one client edit into the server's row, field by field."""

    values: dict[str, object]
    """What to write on the server row: the client's value of each changed field that the
    server did not change differently."""
    conflicts: tuple[str, ...]
    """The fields changed on both sides to different values, in the order of ``changed``."""
    unchanged: tuple[str, ...]
    """The changed fields where the server already holds the client's value."""
    ignored: tuple[str, ...] = ()
    """The changed fields left as the server has them, without a conflict: fields the server's
    row no longer has (the layer dropped them), and fields whose client value is their base
    value (changed and changed back on the device, so only the server changed them)."""


_MISSING = object()


def merge_fields(
    changed: Sequence[str],
    base: Mapping[str, object],
    client: Mapping[str, object],
    server: Mapping[str, object],
) -> FieldMerge:
    """Merge a client's edit of some fields into the server's row.

    For each changed field: when the server holds the client's value already, it is
    unchanged; when the server still holds the base value, the client's value is written;
    otherwise both sides changed it, to different values: a conflict. Two cases are ignored
    (not written, and no conflict): a field the server's row does not have (the layer dropped
    it since the client's replica was made), and a field whose client value is its base value
    (the device changed it and changed it back, so only the server changed it). A field
    missing from ``base`` counts as ``null`` there.

    Args:
        changed: The fields the client changed, in the order it lists them (repeats count
            once).
        base: The changed fields' values before the client's edit.
        client: The client's values after the edit (at least the changed fields).
        server: The server's row as it is now.

    Returns:
        What to write, what conflicts, what was already there.

    Raises:
        InvalidChangeSetError: A changed field has no value in ``client``.
    """
    values: dict[str, object] = {}
    conflicts: list[str] = []
    unchanged: list[str] = []
    ignored: list[str] = []
    for name in dict.fromkeys(changed):
        if name not in client:
            msg = f"the edit changes {name!r} but gives no value for it"
            raise InvalidChangeSetError(msg)
        mine, theirs = client[name], server.get(name, _MISSING)
        if theirs is _MISSING:
            ignored.append(name)
        elif same_value(theirs, mine, field=name):
            unchanged.append(name)
        elif same_value(mine, base.get(name), field=name):
            ignored.append(name)
        elif same_value(theirs, base.get(name), field=name):
            values[name] = mine
        else:
            conflicts.append(name)
    return FieldMerge(values, tuple(conflicts), tuple(unchanged), tuple(ignored))
