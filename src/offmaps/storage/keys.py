"""Object keys: relative POSIX paths of safe segments, checked before any store touches a file.

Every object store checks keys and prefixes here, and only here, so the local folder, the memory
store and any later backend refuse exactly the same keys. A key is one to
:data:`MAX_KEY_SEGMENTS` segments joined by ``/``; a segment is 1 to :data:`MAX_SEGMENT_BYTES`
bytes of UTF-8 that does not start with ``.`` (which refuses ``.`` and ``..``, and keeps hidden
names free for a store's own bookkeeping) and holds no backslash, no control character (NUL
included) and no lone surrogate. The whole key is at most :data:`MAX_KEY_BYTES` bytes of UTF-8,
S3's own limit. Keys are case-sensitive and not normalised: ``a/B`` and ``a/b`` are two keys.
"""

from __future__ import annotations

import re

from offmaps.errors import InvalidObjectKeyError

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_KEY_SEGMENTS",
    "MAX_SEGMENT_BYTES",
    "check_key_prefix",
    "check_object_key",
    "join_key",
]

MAX_KEY_BYTES = 1024
"""The longest key, in bytes of UTF-8 (S3's limit)."""

MAX_SEGMENT_BYTES = 255
"""The longest segment, in bytes of UTF-8 (a file name's limit on common filesystems)."""

MAX_KEY_SEGMENTS = 32
"""The most segments (folder levels plus the name) a key may have."""

# backslashes, C0 and C1 control characters (NUL, newlines, DEL ...) and lone surrogates
_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def check_object_key(key: object) -> str:
    """``key`` if it is a valid object key (see the module's documentation).

    Raises:
        InvalidObjectKeyError: for anything else (``../x``, ``/abs``, ``a//b``, ``a\\b``, a NUL,
            a 10,000-character key, bytes, ``None``), before any store could use it.
    """
    if not isinstance(key, str):
        raise _invalid(key, f"must be a string, not {type(key).__name__}")
    if not key:
        raise _invalid(key, "must not be empty")
    _check_path(key, key.split("/"))
    return key


def check_key_prefix(prefix: object) -> str:
    """``prefix`` if some valid key could start with it: ``""``, whole segments each followed by
    ``/`` (``tiles/``), optionally ending in the start of a segment (``tiles/1``).

    Raises:
        InvalidObjectKeyError: for a prefix no valid key can start with (``../``, ``/abs``,
            ``a//``), with the same rules as :func:`check_object_key`.
    """
    if not isinstance(prefix, str):
        raise _invalid(prefix, f"a key prefix must be a string, not {type(prefix).__name__}")
    if not prefix:
        return prefix
    *whole, partial = prefix.split("/")
    # the keys it selects have one more segment than its whole ones: the (partial) last one
    if len(whole) + 1 > MAX_KEY_SEGMENTS:
        raise _invalid(prefix, f"has more than {MAX_KEY_SEGMENTS} segments")
    _check_path(prefix, [*whole, partial] if partial else whole)
    return prefix


def join_key(prefix: str, key: str) -> str:
    """``prefix/key``, both checked; the result is checked again (it may grow past the limits)."""
    return check_object_key(f"{check_object_key(prefix)}/{check_object_key(key)}")


def _check_path(key: str, segments: list[str]) -> None:
    if len(segments) > MAX_KEY_SEGMENTS:
        raise _invalid(key, f"has more than {MAX_KEY_SEGMENTS} segments")
    if len(key) > MAX_KEY_BYTES:  # cheap bound first: a character is at least one byte
        raise _invalid(key, f"is longer than {MAX_KEY_BYTES} bytes")
    bad = _UNSAFE.search(key)
    if bad is not None:
        what = "a backslash" if bad.group() == "\\" else f"the character {bad.group()!r}"
        raise _invalid(key, f"holds {what}")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise _invalid(key, f"is longer than {MAX_KEY_BYTES} bytes of UTF-8")
    for segment in segments:
        if not segment:
            if key.startswith("/"):
                raise _invalid(key, "must be relative: it starts with '/'")
            raise _invalid(key, "has an empty segment ('//', or '/' at its end)")
        if segment.startswith("."):
            raise _invalid(key, f"has the segment {segment[:20]!r}, which starts with '.'")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise _invalid(key, f"has a segment longer than {MAX_SEGMENT_BYTES} bytes")


def _invalid(key: object, problem: str) -> InvalidObjectKeyError:
    shown = repr(key)
    if len(shown) > 80:
        shown = f"{shown[:77]}..."
    return InvalidObjectKeyError(f"object key {shown} {problem}", key=key)
