"""Copies in the kernel (``copy_file_range``) and their fallbacks: whole whatever the kernel
takes, refuses or lacks, and from a stream that is no file."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from offmaps.storage.copying import copy_file, copy_stream


@pytest.mark.parametrize("after", [0, 5000])
def test_a_copy_the_kernel_refuses_is_finished_the_usual_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: int
) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    data = os.urandom(3 * 1024 * 1024 + 17)
    source.write_bytes(data)
    copy_file_range = os.copy_file_range
    calls: list[int] = []

    def refusing(src: int, dst: int, count: int, *args: Any) -> int:
        if sum(calls) >= after:
            raise OSError(18, "Invalid cross-device link")
        calls.append(copy_file_range(src, dst, min(count, after - sum(calls)), *args))
        return calls[-1]

    monkeypatch.setattr(os, "copy_file_range", refusing)
    copy_file(source, target)
    assert target.read_bytes() == data
    assert sum(calls) == after


def test_a_copy_in_the_kernel_is_whole(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    data = os.urandom(5 * 1024 * 1024 + 3)
    source.write_bytes(data)
    target.write_bytes(b"older and longer" * 1_000_000)
    copy_file(source, target)
    assert target.read_bytes() == data


def test_a_system_without_copy_file_range_copies_the_usual_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    data = os.urandom(2 * 1024 * 1024 + 5)
    source.write_bytes(data)
    monkeypatch.delattr(os, "copy_file_range")  # macOS, Windows
    copy_file(source, target)
    assert target.read_bytes() == data


def test_a_stream_that_is_no_file_is_copied_from_where_it_is(tmp_path: Path) -> None:
    source = io.BytesIO(b"skipped" + os.urandom(100_000))
    source.seek(7)
    target = tmp_path / "target"
    with target.open("wb") as out:
        out.write(b"head")
        copy_stream(source, out)
    assert target.read_bytes() == b"head" + source.getvalue()[7:]


def test_a_file_is_copied_from_its_position_to_the_targets(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    data = os.urandom(1_000_003)
    source.write_bytes(data)
    with source.open("rb") as src, target.open("wb") as out:
        src.seek(1000)
        out.write(b"x" * 10)
        copy_stream(src, out)
    assert target.read_bytes() == b"x" * 10 + data[1000:]
