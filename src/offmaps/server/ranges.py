"""HTTP byte ranges (RFC 9110 §14): which part of a file a ``Range`` request gets.

The server serves one range at a time, which is what resuming a download needs
(``Range: bytes=N-``). The rules, all from RFC 9110:

* no ``Range``, another unit than ``bytes``, or a header that does not parse (``bytes=5-2``,
  ``bytes=abc``, signs, non-ASCII digits): the header is ignored and the whole file is sent
  (200), as §14.2 allows ("a server MAY ignore the Range header field");
* more than one range (``bytes=0-1,5-9``): ignored too, the whole file is sent (200). We send no
  ``multipart/byteranges``; §14.2 lets a server ignore any Range, and the whole file is what a
  client that cannot stitch parts needs anyway, where a 416 would leave it with nothing;
* one range: ``bytes=a-b`` (``b`` clamped to the last byte), ``bytes=a-``, ``bytes=-n`` (the last
  ``n`` bytes, all of them when the file is shorter): 206 with ``Content-Range``;
* one range with no byte of the file in it (``a`` at or past the end, ``bytes=-0``): 416 with
  ``Content-Range: bytes */size`` (§14.1.3, §15.5.17).

Numbers are compared by their digits, never turned into integers of any size: a thousand-digit
position is past every end, not a ``ValueError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ByteRange", "Unsatisfiable", "if_range_allows", "parse_range"]

_DIGITS = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() takes '²' and '٣' too
_MAX_DIGITS = 19  # enough for every file size (below 2**63)
_HUGE = 10**_MAX_DIGITS  # stands for every longer number: past the end of every file


@dataclass(frozen=True, slots=True)
class ByteRange:
    """The bytes ``start`` to ``end`` (both included, as in ``Content-Range``) of a file."""

    start: int
    end: int

    @property
    def length(self) -> int:
        """How many bytes the range holds."""
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        """The ``Content-Range`` of this range of a file of ``size`` bytes."""
        return f"bytes {self.start}-{self.end}/{size}"


@dataclass(frozen=True, slots=True)
class Unsatisfiable:
    """A range with no byte of the file in it: the answer is 416."""

    size: int

    def content_range(self) -> str:
        """The ``Content-Range`` of a 416 answer: the file's size."""
        return f"bytes */{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | Unsatisfiable | None:
    """What the ``Range`` header ``header`` asks of a file of ``size`` bytes: one range, a
    range with none of its bytes, or ``None`` for the whole file (no header, or one that is
    ignored: see the module's documentation).

    Raises:
        ValueError: ``size`` is negative (a programming error, not a bad request).
    """
    if size < 0:
        raise ValueError(f"a file's size cannot be negative: {size}")
    if header is None:
        return None
    unit, equals, ranges = header.partition("=")
    if not equals or unit.strip(" \t").lower() != "bytes":  # units are case-insensitive
        return None
    # a list may hold empty elements, which are skipped (RFC 9110 §5.6.1)
    specs = [spec for spec in (part.strip(" \t") for part in ranges.split(",")) if spec]
    if len(specs) != 1:
        return None
    first, dash, last = specs[0].partition("-")
    if not dash:
        return None
    if not first:
        return _suffix(last, size)
    if not _DIGITS.fullmatch(first) or (last and not _DIGITS.fullmatch(last)):
        return None
    start = _number(first)
    end = _number(last) if last else None
    if end is not None and end < start:
        return None  # an invalid range-spec (§14.1.1): the header is ignored
    if start >= size:
        return Unsatisfiable(size)
    return ByteRange(start, size - 1 if end is None else min(end, size - 1))


def _suffix(text: str, size: int) -> ByteRange | Unsatisfiable | None:
    """``bytes=-n``: the last ``n`` bytes."""
    if not _DIGITS.fullmatch(text):
        return None
    length = _number(text)
    if length == 0:
        return Unsatisfiable(size)
    if size == 0:
        return None  # satisfiable, yet no Content-Range can say "no bytes": the whole, empty
    return ByteRange(max(0, size - length), size - 1)


def _number(digits: str) -> int:
    """The value of ASCII ``digits``, or :data:`_HUGE` for any number longer than that."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else _HUGE


def if_range_allows(if_range: str | None, *, etag: str, last_modified: str) -> bool:
    """Whether a ``Range`` may be honoured under the request's ``If-Range`` (RFC 9110
    §13.1.5): there is none, or it names the file as it is now, by its strong entity tag or by
    its exact ``Last-Modified`` date. Otherwise the file changed since the client got its part,
    and the whole new file is sent.

    Args:
        if_range: the request's ``If-Range``.
        etag: the file's ``ETag`` (quoted).
        last_modified: the file's ``Last-Modified``.
    """
    if if_range is None:
        return True
    value = if_range.strip(" \t")
    if value.startswith("W/"):
        return False  # a weak tag never matches: If-Range compares strongly
    if value.startswith('"'):
        return value == etag
    return value == last_modified
