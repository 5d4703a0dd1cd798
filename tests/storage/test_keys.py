"""Object keys: what is refused, and that whatever is accepted stays inside a folder."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offmaps.errors import InvalidObjectKeyError
from offmaps.storage import (
    MAX_KEY_BYTES,
    MAX_KEY_SEGMENTS,
    MAX_SEGMENT_BYTES,
    MemoryObjectStore,
    check_key_prefix,
    check_object_key,
)

SEGMENT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\\"),
    min_size=1,
    max_size=20,
).filter(lambda segment: not segment.startswith("."))


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "a/b/c.png",
        "tiles/3/4/2.pbf",
        "jobs/42/package.zip",
        "Helsinki map (2024).zip",
        "kartat/Töölö.pmtiles",
        "a.b/c..d/e.",
        "/".join(["a"] * MAX_KEY_SEGMENTS),
        "é" * (MAX_SEGMENT_BYTES // 2),
        "/".join(["b" * 200] * 5)[: MAX_KEY_BYTES - 1] + "c",
    ],
)
def test_valid_keys_are_accepted(key: str) -> None:
    assert check_object_key(key) == key


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("../x", "starts with '.'"),
        ("/abs", "relative"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("a\\b", "backslash"),
        ("a\x00b", "'\\x00'"),
        ("\ud800", "'\\ud800'"),
        ("x" * 10_000, "longer than 1024"),
        ("é" * 600, "bytes of UTF-8"),
        ("é" * 128, f"longer than {MAX_SEGMENT_BYTES}"),
        ("/".join(["a"] * (MAX_KEY_SEGMENTS + 1)), "segments"),
        (b"a", "bytes"),
        (None, "NoneType"),
    ],
)
def test_invalid_keys_say_why(key: object, problem: str) -> None:
    with pytest.raises(InvalidObjectKeyError, match="object key") as raised:
        check_object_key(key)
    assert problem in str(raised.value)
    assert raised.value.key is key
    assert len(str(raised.value)) < 200  # a 10,000-character key is not echoed whole


@pytest.mark.parametrize("prefix", ["", "a", "a/", "a/b", "tiles/1", "tiles/1/"])
def test_prefixes_may_end_anywhere_in_a_segment(prefix: str) -> None:
    assert check_key_prefix(prefix) == prefix


@given(st.text(max_size=60))
def test_any_accepted_key_stays_inside_a_folder(text: str) -> None:
    try:
        key = check_object_key(text)
    except InvalidObjectKeyError:
        return
    assert posixpath.normpath(key) == key
    assert not posixpath.isabs(key)
    assert not key.startswith("..")
    assert all(part and not part.startswith(".") for part in key.split("/"))
    key.encode("utf-8")  # no lone surrogates


@given(st.lists(SEGMENT, min_size=1, max_size=6))
def test_keys_of_safe_segments_are_accepted_and_round_trip(segments: list[str]) -> None:
    key = "/".join(segments)
    assert check_object_key(key) == key
    store = MemoryObjectStore()
    store.put(key, key.encode("utf-8"))
    assert store.get(key) == key.encode("utf-8")
    assert [info.key for info in store.list(key)] == [key]
