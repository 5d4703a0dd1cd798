"""The byte-range seam: every ByteSource answers exactly, or says why not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from offmaps.errors import (
    IncompleteReadError,
    InvalidByteRangeError,
    ObjectNotFoundError,
    StorageError,
)
from offmaps.storage import (
    BytesByteSource,
    ByteSource,
    FileByteSource,
    LocalObjectStore,
    MemoryObjectStore,
    ObjectByteSource,
    prefixed,
)

DATA = bytes(range(256)) * 4


@pytest.fixture(params=["file", "bytes", "memory-object", "local-object", "prefixed-object"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ByteSource]:
    made: ByteSource
    if request.param == "file":
        (tmp_path / "data.bin").write_bytes(DATA)
        made = FileByteSource(tmp_path / "data.bin")
    elif request.param == "bytes":
        made = BytesByteSource(bytearray(DATA))
    elif request.param == "memory-object":
        memory = MemoryObjectStore()
        memory.put("archives/data.bin", DATA)
        made = ObjectByteSource(memory, "archives/data.bin")
    elif request.param == "local-object":
        local = LocalObjectStore(tmp_path / "objects")
        local.put("archives/data.bin", DATA)
        made = ObjectByteSource(local, "archives/data.bin")
    else:
        view = prefixed(MemoryObjectStore(), "jobs/1")
        view.put("data.bin", DATA)
        made = ObjectByteSource(view, "data.bin")
    yield made
    made.close()


def test_sources_implement_the_protocol(source: ByteSource) -> None:
    assert isinstance(source, ByteSource)
    assert source.size == len(DATA)


@pytest.mark.parametrize(
    ("offset", "length"), [(0, 127), (500, 10), (0, len(DATA)), (len(DATA) - 1, 1), (7, 0)]
)
def test_get_bytes_answers_exactly(source: ByteSource, offset: int, length: int) -> None:
    assert source.get_bytes(offset, length) == DATA[offset : offset + length]


@pytest.mark.parametrize(
    ("offset", "length", "available"),
    [(len(DATA) - 3, 10, 3), (len(DATA), 1, 0), (10**9, 5, 0)],
)
def test_reads_past_the_end_are_incomplete(
    source: ByteSource, offset: int, length: int, available: int
) -> None:
    with pytest.raises(IncompleteReadError) as raised:
        source.get_bytes(offset, length)
    error = raised.value
    assert (error.offset, error.length, error.available) == (offset, length, available)
    assert isinstance(error, StorageError)


@pytest.mark.parametrize(("offset", "length"), [(-1, 1), (0, -1), (True, 1), (0, 2.0)])
def test_malformed_ranges_are_refused(source: ByteSource, offset: int, length: int) -> None:
    with pytest.raises(InvalidByteRangeError):
        source.get_bytes(offset, length)


def test_a_file_that_shrank_is_an_incomplete_read(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    source = FileByteSource(path)
    path.write_bytes(DATA[:100])
    with pytest.raises(IncompleteReadError) as raised:
        source.get_bytes(50, 100)
    assert raised.value.available == 50
    source.close()


def test_a_missing_file_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="nope"):
        FileByteSource(tmp_path / "nope.bin")


def test_a_missing_object_is_not_found() -> None:
    with pytest.raises(ObjectNotFoundError):
        ObjectByteSource(MemoryObjectStore(), "nope")
