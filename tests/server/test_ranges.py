"""Parsing ``Range`` and ``If-Range`` (RFC 9110): one range served, everything odd ignored or
refused with 416, never an exception."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offmaps.server.ranges import ByteRange, Unsatisfiable, if_range_allows, parse_range

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=0-0", ByteRange(0, 0)),
        ("bytes=100-", ByteRange(100, 999)),
        ("bytes=999-", ByteRange(999, 999)),
        ("bytes=-1", ByteRange(999, 999)),
        ("bytes=-10", ByteRange(990, 999)),
        ("bytes=-1000", ByteRange(0, 999)),
        ("bytes=-5000", ByteRange(0, 999)),  # more than the file: all of it
        ("bytes=500-5000", ByteRange(500, 999)),  # clamped to the last byte
        ("bytes=0-" + "9" * 100, ByteRange(0, 999)),
        ("bytes=-" + "9" * 100, ByteRange(0, 999)),
        ("bytes=0007-0008", ByteRange(7, 8)),
        ("bytes=" + "0" * 100 + "5-6", ByteRange(5, 6)),  # leading zeros are no huge number
        ("BYTES=1-2", ByteRange(1, 2)),
        ("bytes=1-2,", ByteRange(1, 2)),  # empty list elements are skipped
        ("bytes=, ,1-2", ByteRange(1, 2)),
        ("bytes= 1-2 ", ByteRange(1, 2)),
    ],
)
def test_one_range_is_served(header: str, expected: ByteRange) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes=1000-",
        "bytes=1000-1000",
        "bytes=5000-6000",
        "bytes=-0",
        "bytes=-000",
        "bytes=" + "9" * 5000 + "-",  # no ValueError from int(): past every end
        "bytes=18446744073709551616-",
    ],
)
def test_a_range_with_no_byte_of_the_file_is_unsatisfiable(header: str) -> None:
    assert parse_range(header, SIZE) == Unsatisfiable(SIZE)
    assert Unsatisfiable(SIZE).content_range() == "bytes */1000"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes",
        "bytes=",
        "bytes=,",
        "bytes=-",
        "bytes=--1",
        "bytes=-1-",
        "bytes=1-2-3",
        "bytes=5-2",  # last before first: invalid, so ignored
        "bytes=abc",
        "bytes=a-b",
        "bytes=0x10-",
        "bytes=+1-2",
        "bytes=-+1",
        "bytes=1_0-20",
        "bytes=1.5-2",
        "bytes=1e3-",
        "bytes=1 -2",
        "bytes=\u0661-\u0662",  # Arabic-Indic digits: int() would take them
        "bytes=\u00b2-",  # a superscript two: str.isdigit() would take it
        "bytes=1\x00-2",
        "bytes=0-1,5-9",  # several ranges: the whole file, never multipart
        "bytes=0-1,0-1",
        "bytes=0-1," + ",".join(["0-1"] * 10_000),
        "bytes=2000-,0-1",  # several, even if one is unsatisfiable
        "items=0-1",
        "bytes 0-1",
        "bytes:0-1",
        "=0-1",
    ],
)
def test_a_header_that_does_not_ask_for_one_range_is_ignored(header: str | None) -> None:
    assert parse_range(header, SIZE) is None


def test_an_empty_file() -> None:
    assert parse_range("bytes=0-", 0) == Unsatisfiable(0)
    assert parse_range("bytes=-0", 0) == Unsatisfiable(0)
    assert parse_range("bytes=-5", 0) is None  # satisfiable, but no Content-Range says "none"
    assert parse_range(None, 0) is None


def test_a_negative_size_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_range("bytes=0-", -1)


def test_content_range_and_length() -> None:
    assert ByteRange(5, 9).length == 5
    assert ByteRange(5, 9).content_range(SIZE) == "bytes 5-9/1000"


@given(header=st.text(max_size=200), size=st.integers(min_value=0, max_value=2**63 - 1))
def test_any_header_gets_an_answer_inside_the_file(header: str, size: int) -> None:
    found = parse_range(header, size)
    if isinstance(found, ByteRange):
        assert 0 <= found.start <= found.end < size
    else:
        assert found is None or found == Unsatisfiable(size)


@given(
    start=st.integers(min_value=0, max_value=2000),
    end=st.integers(min_value=0, max_value=2000) | st.none(),
)
def test_first_last_ranges_select_what_slicing_selects(start: int, end: int | None) -> None:
    data = bytes(SIZE)
    header = f"bytes={start}-{'' if end is None else end}"
    found = parse_range(header, SIZE)
    if end is not None and end < start:
        assert found is None
    elif start >= SIZE:
        assert found == Unsatisfiable(SIZE)
    else:
        assert isinstance(found, ByteRange)
        stop = SIZE if end is None else end + 1
        assert found.length == len(data[start:stop])


ETAG = '"abc-123"'
MODIFIED = "Tue, 14 Nov 2023 22:13:20 GMT"


@pytest.mark.parametrize(
    ("if_range", "allowed"),
    [
        (None, True),
        (ETAG, True),
        (MODIFIED, True),
        ('"abc-124"', False),
        (f"W/{ETAG}", False),  # weak tags never match
        ("abc-123", False),  # not a quoted tag
        ("Tue, 14 Nov 2023 22:13:21 GMT", False),
        ("", False),
        ("garbage", False),
    ],
)
def test_if_range(if_range: str | None, allowed: bool) -> None:
    assert if_range_allows(if_range, etag=ETAG, last_modified=MODIFIED) is allowed
