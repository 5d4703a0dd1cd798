"""The blob store contract, run against every store: local folder, SQLite file, memory and S3
(SeaweedFS, started by ``scripts/seaweedfs.sh``; see ``conftest.py``)."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import pickle
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from offmaps.errors import (
    BlobIntegrityError,
    BlobNotFoundError,
    BlobTooLargeError,
    InvalidBlobKeyError,
    StorageError,
)
from offmaps.storage import (
    BlobRef,
    BlobStore,
    LocalBlobStore,
    MemoryBlobStore,
    S3BlobStore,
    SQLiteBlobStore,
    check_blob_key,
)

DATA = b"offline maps, online edits"
KEY = hashlib.sha256(DATA).hexdigest()
MISSING = "0" * 64

HOSTILE_KEYS = [
    "../../etc/passwd",
    "/etc/passwd",
    "",
    "ab",
    KEY.upper(),
    KEY[:63],
    KEY + "0",
    KEY + "\n",
    KEY[:63] + "\x00",
    "../" + KEY[3:],
    KEY[:62] + "/.",
    "g" * 64,
]


@pytest.fixture(params=["local", "sqlite", "memory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    if request.param == "sqlite":
        return SQLiteBlobStore(tmp_path / "blobs.sqlite")
    if request.param == "s3":
        return S3BlobStore(request.getfixturevalue("s3_config"))
    return MemoryBlobStore()


def test_stores_implement_the_protocol(store: BlobStore) -> None:
    assert isinstance(store, BlobStore)


def test_put_returns_the_sha256_and_size(store: BlobStore) -> None:
    assert store.put(DATA) == BlobRef(KEY, len(DATA))


def test_round_trip(store: BlobStore) -> None:
    ref = store.put(DATA)
    assert store.get(ref.sha256) == DATA
    with store.open(ref.sha256) as stream:
        assert stream.read() == DATA
    assert store.exists(ref.sha256)
    assert store.size(ref.sha256) == len(DATA)
    store.verify(ref.sha256)


def test_empty_blob_round_trips(store: BlobStore) -> None:
    ref = store.put(b"")
    assert ref == BlobRef(hashlib.sha256(b"").hexdigest(), 0)
    assert store.get(ref.sha256) == b""


def test_putting_the_same_content_again_stores_it_once(store: BlobStore) -> None:
    first = store.put(DATA)
    second = store.put_stream([DATA[:5], DATA[5:]])
    assert first == second
    assert list(store.iter_keys()) == [KEY]


def test_iter_keys_yields_every_key_in_order(store: BlobStore) -> None:
    refs = [store.put(bytes([i]) * 10) for i in range(20)]
    assert list(store.iter_keys()) == sorted(ref.sha256 for ref in refs)


def test_iter_keys_of_an_empty_store(store: BlobStore) -> None:
    assert list(store.iter_keys()) == []


def test_put_stream_reads_binary_files_in_chunks(store: BlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    ref = store.put_stream(io.BytesIO(data))
    assert ref == BlobRef(hashlib.sha256(data).hexdigest(), len(data))
    assert store.get(ref.sha256) == data


def test_put_stream_takes_any_bytes_like_chunks(store: BlobStore) -> None:
    chunks: list[bytes | bytearray | memoryview] = [
        b"offline ",
        bytearray(b"maps, "),
        memoryview(b"online edits"),
    ]
    ref = store.put_stream(iter(chunks))
    assert ref.sha256 == hashlib.sha256(b"offline maps, online edits").hexdigest()


def test_put_stream_refuses_text(store: BlobStore) -> None:
    with pytest.raises(TypeError, match="bytes"):
        store.put_stream(io.StringIO("text"))  # type: ignore[arg-type]
    assert list(store.iter_keys()) == []


def test_a_stream_of_exactly_max_size_is_stored(store: BlobStore) -> None:
    assert store.put_stream([DATA], max_size=len(DATA)).size == len(DATA)


def test_a_stream_over_max_size_is_refused_and_leaves_nothing(
    store: BlobStore, tmp_path: Path
) -> None:
    chunks = iter([b"x" * 1000] * 10)
    with pytest.raises(BlobTooLargeError) as raised:
        store.put_stream(chunks, max_size=9999)
    assert raised.value.max_size == 9999
    assert isinstance(raised.value, StorageError)
    assert next(chunks, None) is None  # stopped at the chunk crossing the limit
    assert list(store.iter_keys()) == []
    if isinstance(store, LocalBlobStore):
        assert [p for p in store.root.rglob("*") if p.is_file()] == []


def test_a_negative_max_size_is_a_programming_error(store: BlobStore) -> None:
    with pytest.raises(ValueError, match="max_size"):
        store.put_stream([DATA], max_size=-1)


def test_a_failing_stream_leaves_nothing(store: BlobStore) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.put_stream(chunks())
    assert list(store.iter_keys()) == []
    if isinstance(store, LocalBlobStore):
        assert list(store.root.iterdir()) == []


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_malformed_keys_are_refused_by_every_method(store: BlobStore, key: str) -> None:
    store.put(DATA)
    calls = [
        store.get,
        store.open,
        store.exists,
        store.size,
        store.delete,
        store.verify,
    ]
    for call in calls:
        with pytest.raises(InvalidBlobKeyError):
            call(key)
    assert list(store.iter_keys()) == [KEY]


@pytest.mark.parametrize("key", [None, 7, KEY.encode()])
def test_keys_must_be_strings(key: object) -> None:
    with pytest.raises(InvalidBlobKeyError):
        check_blob_key(key)


def test_hostile_keys_never_touch_the_filesystem(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    for key in HOSTILE_KEYS:
        with pytest.raises(InvalidBlobKeyError):
            store.exists(key)
    assert not (tmp_path / "blobs").exists()


def test_missing_blobs_are_not_found(store: BlobStore) -> None:
    assert not store.exists(MISSING)
    for call in (store.get, store.open, store.size, store.delete, store.verify):
        with pytest.raises(BlobNotFoundError) as raised:
            call(MISSING)
        assert raised.value.key == MISSING


def test_delete_removes_the_blob(store: BlobStore) -> None:
    store.put(DATA)
    store.delete(KEY)
    assert not store.exists(KEY)
    assert list(store.iter_keys()) == []
    with pytest.raises(BlobNotFoundError):
        store.delete(KEY)


def test_blob_ref_checks_its_values() -> None:
    with pytest.raises(InvalidBlobKeyError):
        BlobRef("not a key", 1)
    with pytest.raises(ValueError, match="negative"):
        BlobRef(KEY, -1)


def test_concurrent_puts_of_the_same_content_store_one_blob(store: BlobStore) -> None:
    data = os.urandom(256 * 1024)
    barrier = threading.Barrier(8)
    refs: list[BlobRef] = []
    failures: list[BaseException] = []

    def put() -> None:
        barrier.wait()
        try:
            for _ in range(10):
                refs.append(store.put_stream(iter([data[:1000], data[1000:]])))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(refs) == 80
    assert set(refs) == {BlobRef(hashlib.sha256(data).hexdigest(), len(data))}
    assert store.get(refs[0].sha256) == data
    assert list(store.iter_keys()) == [refs[0].sha256]
    if isinstance(store, LocalBlobStore):
        assert [p.name for p in store.root.glob(".blob-*")] == []


# --- the local folder -----------------------------------------------------------------------


def test_local_layout_is_two_levels_of_key_prefixes(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put(DATA)
    path = tmp_path / "blobs" / KEY[:2] / KEY[2:4] / KEY
    assert path.read_bytes() == DATA


def test_local_store_creates_its_folder_lazily(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "deep" / "blobs")
    assert not (tmp_path / "deep").exists()
    assert list(store.iter_keys()) == []
    store.put(DATA)
    assert store.exists(KEY)


def test_verify_detects_bytes_damaged_on_disk(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.put(DATA)
    (tmp_path / KEY[:2] / KEY[2:4] / KEY).write_bytes(b"offline maps, online edit!")
    with pytest.raises(BlobIntegrityError, match=KEY):
        store.verify(KEY)


def test_putting_again_repairs_a_damaged_blob(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.put(DATA)
    (tmp_path / KEY[:2] / KEY[2:4] / KEY).write_bytes(DATA.upper())
    assert store.put(DATA) == BlobRef(KEY, len(DATA))
    store.verify(KEY)
    assert store.get(KEY) == DATA


def test_verify_detects_damage_in_memory() -> None:
    store = MemoryBlobStore()
    store.put(DATA)
    store._blobs[KEY] = DATA.upper()
    with pytest.raises(BlobIntegrityError):
        store.verify(KEY)
    store.put(DATA)
    store.verify(KEY)


def test_iter_keys_skips_foreign_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.put(DATA)
    (tmp_path / ".blob-left-over.partial").write_bytes(b"x")
    (tmp_path / KEY[:2] / KEY[2:4] / "notes.txt").write_text("x")
    (tmp_path / KEY[:2] / KEY[2:4] / ("f" * 64)).write_text("in the wrong folder")
    (tmp_path / "zz").mkdir()
    assert list(store.iter_keys()) == [KEY]


def test_a_failing_rename_is_a_storage_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path)

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(StorageError, match="No space left"):
        store.put(DATA)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_failing_write_is_a_storage_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path)

    def fail(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(StorageError, match="Input/output error"):
        store.put(DATA)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_an_unwritable_root_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StorageError):
        LocalBlobStore(tmp_path / "file" / "blobs").put(DATA)


# --- the SQLite file -------------------------------------------------------------------------


def test_sqlite_put_many_stores_every_blob_in_one_transaction(tmp_path: Path) -> None:
    store = SQLiteBlobStore(tmp_path / "blobs.sqlite")
    blobs = [bytes([i]) * 100 for i in range(50)] + [DATA, DATA]
    refs = store.put_many(blobs)
    assert refs == [BlobRef(hashlib.sha256(b).hexdigest(), len(b)) for b in blobs]
    assert len(list(store.iter_keys())) == 51
    assert all(store.get(ref.sha256) == b for ref, b in zip(refs, blobs, strict=True))


def test_sqlite_iter_keys_pages_through_many_blobs(tmp_path: Path) -> None:
    store = SQLiteBlobStore(tmp_path / "blobs.sqlite")
    refs = store.put_many(i.to_bytes(4, "big") for i in range(2500))
    assert list(store.iter_keys()) == sorted(ref.sha256 for ref in refs)


def test_sqlite_refuses_a_blob_over_its_limit_and_stores_none_of_the_batch(
    tmp_path: Path,
) -> None:
    store = SQLiteBlobStore(tmp_path / "blobs.sqlite", max_blob_bytes=1000)
    with pytest.raises(BlobTooLargeError):
        store.put_many([DATA, b"x" * 1001])
    with pytest.raises(BlobTooLargeError):
        store.put_stream(io.BytesIO(b"x" * 1001))
    assert list(store.iter_keys()) == []
    assert store.put(b"x" * 1000).size == 1000


def test_sqlite_verify_detects_and_a_put_repairs_damaged_bytes(tmp_path: Path) -> None:
    store = SQLiteBlobStore(tmp_path / "blobs.sqlite")
    store.put(DATA)
    with closing(sqlite3.connect(tmp_path / "blobs.sqlite")) as conn, conn:
        conn.execute("UPDATE blobs SET data = ?", (DATA.upper(),))
    with pytest.raises(BlobIntegrityError, match=KEY):
        store.verify(KEY)
    assert store.put(DATA) == BlobRef(KEY, len(DATA))
    store.verify(KEY)


def test_sqlite_store_travels_to_another_process_as_its_file(tmp_path: Path) -> None:
    store = SQLiteBlobStore(tmp_path / "blobs.sqlite", url_prefix="tile-blobs")
    store.put(DATA)
    copy = pickle.loads(pickle.dumps(store))
    assert (copy.path, copy.url_prefix) == (store.path, "tile-blobs")
    assert copy.get(KEY) == DATA
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_put_elsewhere, (store,)) == hashlib.sha256(b"elsewhere").hexdigest()
    assert store.get(hashlib.sha256(b"elsewhere").hexdigest()) == b"elsewhere"


def _put_elsewhere(store: SQLiteBlobStore) -> str:
    return store.put(b"elsewhere").sha256


def test_sqlite_a_file_that_is_no_database_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "blobs.sqlite").write_bytes(b"not a database, " * 100)
    with pytest.raises(StorageError, match="blob store"):
        SQLiteBlobStore(tmp_path / "blobs.sqlite").put(DATA)


def test_sqlite_a_full_disk_is_a_storage_error_and_stores_nothing(tmp_path: Path) -> None:
    store = SQLiteBlobStore(tmp_path / "blobs.sqlite")
    store.put(DATA)
    with closing(sqlite3.connect(tmp_path / "blobs.sqlite")) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn().execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StorageError, match="full"):
        store.put_many([os.urandom(64 * 1024)])
    assert list(store.iter_keys()) == [KEY]


def test_sqlite_move_from_a_folder_store_moves_good_blobs_and_drops_damaged_ones(
    tmp_path: Path,
) -> None:
    folder = LocalBlobStore(tmp_path / "blobs")
    refs = [folder.put(bytes([i]) * 100) for i in range(30)]
    damaged = refs[7].sha256
    (tmp_path / "blobs" / damaged[:2] / damaged[2:4] / damaged).write_bytes(b"rot")
    store = SQLiteBlobStore(tmp_path / "blobs.sqlite")
    assert store.move_from(folder, batch=8) == 29
    assert list(folder.iter_keys()) == []
    assert list(store.iter_keys()) == sorted(ref.sha256 for ref in refs if ref.sha256 != damaged)
    assert store.get(refs[0].sha256) == bytes([0]) * 100
    assert store.move_from(folder) == 0


def test_the_public_names_exist() -> None:
    import offmaps.storage  # noqa: PLC0415

    for name in offmaps.storage.__all__:
        assert hasattr(offmaps.storage, name), name
