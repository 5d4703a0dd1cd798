"""The object store contract, run against every store: local folder, memory, a prefixed view, and
S3 (SeaweedFS, started by ``scripts/seaweedfs.sh``; see ``conftest.py``)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from offmaps.errors import (
    InvalidByteRangeError,
    InvalidObjectKeyError,
    InvalidPresignedURLError,
    ObjectKeyConflictError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    PresignedURLExpiredError,
    StorageError,
)
from offmaps.storage import (
    MAX_RANGE_LENGTH,
    LocalObjectStore,
    MemoryObjectStore,
    ObjectInfo,
    ObjectStore,
    PrefixedObjectStore,
    S3ObjectStore,
    URLSigner,
    prefixed,
)

DATA = b"offline maps, online edits"
SECRET = b"a test secret of 32 bytes, ok!!!"
NOW = 1_700_000_000.0

HOSTILE_KEYS: list[object] = [
    "../x",
    "a/../../x",
    "..",
    ".",
    "a/./b",
    "/abs",
    "/",
    "a//b",
    "a/",
    "",
    "a\\b",
    "..\\x",
    "a\x00b",
    "a\nb",
    "a\x7fb",
    "\ud800",
    "x" * 10_000,
    "/".join(["a"] * 33),
    "a/" + "b" * 256,
    ".hidden",
    None,
    7,
    b"a/b",
    ["a"],
]


class Clock:
    """A clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def signer(clock: Clock) -> URLSigner:
    return URLSigner(SECRET, base_url="https://maps.example.org/storage", clock=clock)


def hmac_signing_store(kind: str, tmp_path: Path, signer: URLSigner) -> ObjectStore:
    if kind == "local":
        return LocalObjectStore(tmp_path / "objects", signer=signer)
    if kind == "memory":
        return MemoryObjectStore(signer=signer)
    return prefixed(MemoryObjectStore(signer=signer), "jobs/42")


@pytest.fixture(params=["local", "memory", "prefixed", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, signer: URLSigner) -> ObjectStore:
    if request.param == "s3":
        return S3ObjectStore(request.getfixturevalue("s3_config"))
    return hmac_signing_store(request.param, tmp_path, signer)


@pytest.fixture(params=["local", "memory", "prefixed"])
def hmac_store(request: pytest.FixtureRequest, tmp_path: Path, signer: URLSigner) -> ObjectStore:
    """The stores whose presigned URLs carry offmaps' HMAC tokens (S3's: test_s3.py)."""
    return hmac_signing_store(request.param, tmp_path, signer)


def full_key(store: ObjectStore, key: str) -> str:
    """The key the signing store sees (a prefixed view adds its prefix)."""
    return f"{store.prefix}/{key}" if isinstance(store, PrefixedObjectStore) else key


def stored_files(store: ObjectStore) -> list[Path]:
    """The regular files a local store holds, temporary ones included (none elsewhere)."""
    if isinstance(store, LocalObjectStore):
        return [path for path in store.root.rglob("*") if path.is_file()]
    return []


def keys(store: ObjectStore, prefix: str = "") -> list[str]:
    return [info.key for info in store.list(prefix)]


def test_stores_implement_the_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


# --- put and get ----------------------------------------------------------------------------


def test_round_trip(store: ObjectStore) -> None:
    info = store.put("maps/helsinki.json", DATA)
    assert (info.key, info.size, info.sha256) == (
        "maps/helsinki.json",
        len(DATA),
        hashlib.sha256(DATA).hexdigest(),
    )
    assert info.modified.tzinfo is UTC
    assert store.get("maps/helsinki.json") == DATA
    with store.open("maps/helsinki.json") as stream:
        assert stream.read() == DATA
    assert store.exists("maps/helsinki.json")
    head = store.head("maps/helsinki.json")
    assert (head.key, head.size, head.etag, head.modified) == (
        info.key,
        info.size,
        info.etag,
        info.modified,
    )
    assert head.sha256 in (None, info.sha256)


def test_an_empty_object_round_trips(store: ObjectStore) -> None:
    assert store.put("empty", b"").size == 0
    assert store.get("empty") == b""
    assert store.head("empty").size == 0


def test_a_put_replaces_the_object(store: ObjectStore) -> None:
    first = store.put("a/b", DATA)
    second = store.put("a/b", b"something else")
    assert store.get("a/b") == b"something else"
    assert store.head("a/b").etag == second.etag != first.etag
    assert keys(store) == ["a/b"]


def test_put_stream_reads_binary_files_in_chunks(store: ObjectStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    info = store.put_stream("big.bin", io.BytesIO(data))
    assert (info.size, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert store.get("big.bin") == data


def test_put_stream_takes_any_bytes_like_chunks(store: ObjectStore) -> None:
    chunks: list[bytes | bytearray | memoryview] = [
        b"offline ",
        bytearray(b"maps"),
        memoryview(b"!"),
    ]
    store.put_stream("k", iter(chunks))
    assert store.get("k") == b"offline maps!"


def test_put_stream_refuses_text_and_leaves_nothing(store: ObjectStore) -> None:
    with pytest.raises(TypeError, match="bytes"):
        store.put_stream("k", io.StringIO("text"))  # type: ignore[arg-type]
    assert not store.exists("k")
    assert stored_files(store) == []


def test_keys_are_case_sensitive_and_unicode(store: ObjectStore) -> None:
    store.put("Kartat/Töölö.png", b"upper")
    store.put("kartat/töölö.png", b"lower")
    assert store.get("Kartat/Töölö.png") == b"upper"
    assert store.get("kartat/töölö.png") == b"lower"


def test_missing_objects_are_not_found(store: ObjectStore) -> None:
    store.put("a/b", DATA)
    assert not store.exists("a/c")
    assert not store.exists("a")  # a folder of objects is no object
    for key in ("a/c", "a", "x/y/z"):
        for call in (store.get, store.open, store.head, lambda k: store.get_range(k, 0, 1)):
            with pytest.raises(ObjectNotFoundError) as raised:
                call(key)
            assert raised.value.key == full_key(store, key)


# --- moving local files in ----------------------------------------------------------------------


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A job's scratch folder, beside the stores."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    return folder


def test_put_file_moves_a_file_in(store: ObjectStore, scratch: Path) -> None:
    data = os.urandom(2 * 1024 * 1024 + 5)
    (scratch / "city.gpkg").write_bytes(data)
    info = store.put_file("package/city.gpkg", scratch / "city.gpkg")
    assert (info.key, info.size) == ("package/city.gpkg", len(data))
    assert info.sha256 in (None, hashlib.sha256(data).hexdigest())
    assert not (scratch / "city.gpkg").exists()
    assert store.get("package/city.gpkg") == data
    assert store.head("package/city.gpkg").etag == info.etag
    assert keys(store) == ["package/city.gpkg"]


def test_put_file_replaces_the_object(store: ObjectStore, scratch: Path) -> None:
    first = store.put("a/b", DATA)
    (scratch / "new").write_bytes(b"new bytes")
    second = store.put_file("a/b", str(scratch / "new"))
    assert store.get("a/b") == b"new bytes"
    assert second.etag != first.etag
    assert keys(store) == ["a/b"]


def test_put_file_takes_only_regular_files(store: ObjectStore, scratch: Path) -> None:
    (scratch / "target").write_bytes(DATA)
    (scratch / "link").symlink_to(scratch / "target")
    (scratch / "folder").mkdir()
    os.mkfifo(scratch / "fifo")  # opening it for reading must not block
    for name in ("link", "folder", "fifo", "missing"):
        with pytest.raises(StorageError) as raised:
            store.put_file("k", scratch / name)
        assert not isinstance(raised.value, ObjectNotFoundError)
    assert keys(store) == []
    assert (scratch / "link").is_symlink()
    assert (scratch / "target").read_bytes() == DATA
    assert stored_files(store) == []


def test_put_file_into_a_taken_key_stores_nothing_and_keeps_the_file(
    store: ObjectStore, scratch: Path
) -> None:
    store.put("a/b", DATA)
    (scratch / "file").write_bytes(b"kept")
    for key in ("a", "a/b/c"):
        with pytest.raises(ObjectKeyConflictError):
            store.put_file(key, scratch / "file")
        assert (scratch / "file").read_bytes() == b"kept"
    assert keys(store) == ["a/b"]
    assert len(stored_files(store)) in (0, 1)


# --- ranges -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "length", "expected"),
    [
        (0, 7, DATA[:7]),
        (8, 4, DATA[8:12]),
        (len(DATA) - 5, 5, DATA[-5:]),
        (0, len(DATA), DATA),
        (20, 100, DATA[20:]),
        (len(DATA), 10, b""),
        (10_000, 10, b""),
        (3, 0, b""),
        (0, MAX_RANGE_LENGTH, DATA),
    ],
    ids=["start", "middle", "end", "whole", "past-end", "at-end", "far-past-end", "zero", "max"],
)
def test_get_range(store: ObjectStore, offset: int, length: int, expected: bytes) -> None:
    store.put("r", DATA)
    assert store.get_range("r", offset, length) == expected


@pytest.mark.parametrize(
    ("offset", "length"),
    [(-1, 5), (0, -1), (True, 5), (0, False), (1.0, 5), (0, "5"), (0, MAX_RANGE_LENGTH + 1)],
)
def test_malformed_ranges_are_refused(store: ObjectStore, offset: object, length: object) -> None:
    store.put("r", DATA)
    with pytest.raises(InvalidByteRangeError) as raised:
        store.get_range("r", offset, length)  # type: ignore[arg-type]
    assert (raised.value.offset, raised.value.length) == (offset, length)


def test_a_range_ending_past_the_largest_offset_is_refused(store: ObjectStore) -> None:
    store.put("r", DATA)
    with pytest.raises(InvalidByteRangeError, match="largest offset"):
        store.get_range("r", 2**63 - 2, 10)


# --- listing ----------------------------------------------------------------------------------

LISTED = ["a/b", "a-c", "a0", "b/x/y", "b/x0", "tiles/1/0.png", "tiles/10/0.png", "tiles/2/0.png"]


def test_list_yields_every_object_in_key_order(store: ObjectStore) -> None:
    for i, key in enumerate(reversed(LISTED)):
        store.put(key, b"x" * i)
    infos = list(store.list())
    assert [info.key for info in infos] == sorted(LISTED)
    assert {info.key: info.size for info in infos} == {
        key: i for i, key in enumerate(reversed(LISTED))
    }
    assert all(isinstance(info, ObjectInfo) for info in infos)


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("tiles/1", ["tiles/1/0.png", "tiles/10/0.png"]),
        ("tiles/1/", ["tiles/1/0.png"]),
        ("tiles/", ["tiles/1/0.png", "tiles/10/0.png", "tiles/2/0.png"]),
        ("a", ["a-c", "a/b", "a0"]),
        ("b/x", ["b/x/y", "b/x0"]),
        ("b/x/y", ["b/x/y"]),
        ("nothing", []),
        ("nothing/here/", []),
        ("a/b/", []),
    ],
)
def test_list_by_prefix(store: ObjectStore, prefix: str, expected: list[str]) -> None:
    for key in LISTED:
        store.put(key, DATA)
    assert keys(store, prefix) == expected


def test_list_of_an_empty_store(store: ObjectStore) -> None:
    assert keys(store) == []


# --- delete and the shape of keys ---------------------------------------------------------------


def test_delete_removes_the_object_and_is_idempotent(store: ObjectStore) -> None:
    store.put("a/b/c", DATA)
    store.put("a/d", DATA)
    store.delete("a/b/c")
    assert not store.exists("a/b/c")
    assert keys(store) == ["a/d"]
    store.delete("a/b/c")
    store.delete("never/there")
    with pytest.raises(ObjectNotFoundError):
        store.get("a/b/c")


def test_an_object_and_objects_below_it_cannot_share_a_key(store: ObjectStore) -> None:
    store.put("a/b", DATA)
    with pytest.raises(ObjectKeyConflictError) as raised:
        store.put("a", DATA)
    assert isinstance(raised.value, StorageError)
    with pytest.raises(ObjectKeyConflictError):
        store.put("a/b/c", DATA)
    assert keys(store) == ["a/b"]
    assert store.get("a/b") == DATA


def test_deleting_the_objects_below_a_key_frees_it(store: ObjectStore) -> None:
    store.put("a/b/c", DATA)
    store.delete("a/b/c")
    store.put("a", b"now an object")
    assert keys(store) == ["a"]
    store.delete("a")
    store.put("a/b", b"and a folder again")
    assert keys(store) == ["a/b"]


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=lambda key: repr(key)[:20])
def test_malformed_keys_are_refused_by_every_method(
    store: ObjectStore, key: str, scratch: Path
) -> None:
    store.put("a/b", DATA)
    (scratch / "file").write_bytes(DATA)
    calls: list[Callable[[], object]] = [
        lambda: store.put(key, DATA),
        lambda: store.put_stream(key, [DATA]),
        lambda: store.put_file(key, scratch / "file"),
        lambda: store.get(key),
        lambda: store.get_range(key, 0, 1),
        lambda: store.open(key),
        lambda: store.head(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.presign_get(key, timedelta(minutes=5)),
        lambda: store.presign_put(key, timedelta(minutes=5)),
    ]
    for call in calls:
        with pytest.raises(InvalidObjectKeyError) as raised:
            call()
        assert raised.value.key is key
    assert keys(store) == ["a/b"]
    assert (scratch / "file").read_bytes() == DATA  # refused before the file was touched


@pytest.mark.parametrize("prefix", ["../", "/a", "a//", "a\\b", "a\x00", "../x", ".tmp/", 3])
def test_malformed_prefixes_are_refused_at_the_call(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidObjectKeyError):
        store.list(prefix)


def test_hostile_keys_never_touch_the_filesystem(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = LocalObjectStore(root / "objects")
    for key in HOSTILE_KEYS:
        with pytest.raises(InvalidObjectKeyError):
            store.put(key, DATA)  # type: ignore[arg-type]
    assert list(tmp_path.rglob("*")) == []


# --- failed puts ------------------------------------------------------------------------------


def failing_stream() -> Iterator[bytes]:
    yield b"partial"
    yield b"more"
    raise ConnectionResetError("client went away")


def test_an_interrupted_put_leaves_nothing(store: ObjectStore) -> None:
    with pytest.raises(ConnectionResetError):
        store.put_stream("up/load.bin", failing_stream())
    assert not store.exists("up/load.bin")
    assert keys(store) == []
    assert stored_files(store) == []


def test_an_interrupted_put_keeps_the_old_value(store: ObjectStore) -> None:
    store.put("up/load.bin", DATA)
    with pytest.raises(ConnectionResetError):
        store.put_stream("up/load.bin", failing_stream())
    assert store.get("up/load.bin") == DATA
    assert len(stored_files(store)) in (0, 1)


def test_a_stream_of_exactly_max_size_is_stored(store: ObjectStore) -> None:
    assert store.put_stream("k", [DATA], max_size=len(DATA)).size == len(DATA)


def test_a_stream_over_max_size_is_refused_and_leaves_nothing(store: ObjectStore) -> None:
    chunks = iter([b"x" * 1000] * 10)
    with pytest.raises(ObjectTooLargeError) as raised:
        store.put_stream("k", chunks, max_size=9999)
    assert raised.value.max_size == 9999
    assert raised.value.key == full_key(store, "k")
    assert next(chunks, None) is None  # stopped at the chunk crossing the limit
    assert not store.exists("k")
    assert stored_files(store) == []


@pytest.mark.parametrize("max_size", [-1, 1.5, True])
def test_a_malformed_max_size_is_a_programming_error(store: ObjectStore, max_size: int) -> None:
    with pytest.raises(ValueError, match="max_size"):
        store.put_stream("k", [DATA], max_size=max_size)
    assert not store.exists("k")


def test_concurrent_puts_of_one_key_end_with_one_whole_value(store: ObjectStore) -> None:
    values = [bytes([i]) * (256 * 1024 + i) for i in range(8)]
    barrier = threading.Barrier(len(values) + 1)
    failures: list[BaseException] = []
    seen: list[bytes] = []

    def put(value: bytes) -> None:
        barrier.wait()
        try:
            for _ in range(5):
                store.put_stream("one/key", iter([value[:1000], value[1000:]]))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    def read() -> None:
        barrier.wait()
        try:
            for _ in range(40):
                with contextlib.suppress(ObjectNotFoundError):
                    seen.append(store.get("one/key"))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=put, args=(value,)) for value in values]
    threads.append(threading.Thread(target=read))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert store.get("one/key") in values
    assert all(value in values for value in seen)  # never a mix of two puts
    assert keys(store) == ["one/key"]
    assert len(stored_files(store)) in (0, 1)


# --- presigned URLs ---------------------------------------------------------------------------


def test_presigned_urls_round_trip(hmac_store: ObjectStore, signer: URLSigner) -> None:
    get = hmac_store.presign_get("maps/a b.pmtiles", timedelta(minutes=10))
    put = hmac_store.presign_put("maps/a b.pmtiles", timedelta(hours=1))
    assert (get.method, put.method) == ("GET", "PUT")
    assert get.key == put.key == "maps/a b.pmtiles"
    assert get.expires_at == datetime.fromtimestamp(NOW + 600, UTC)
    assert put.expires_at == datetime.fromtimestamp(NOW + 3600, UTC)
    assert get.url.startswith("https://maps.example.org/storage/")
    assert "maps/a%20b.pmtiles?token=" in get.url
    expected = full_key(hmac_store, "maps/a b.pmtiles")
    assert signer.verify(get.url, "GET") == expected
    assert signer.verify(put.url, "PUT") == expected
    token = get.url.split("token=")[1]
    assert signer.verify(token, "get") == expected


def test_presigned_urls_expire(hmac_store: ObjectStore, signer: URLSigner, clock: Clock) -> None:
    url = hmac_store.presign_get("k", timedelta(seconds=30))
    clock.now = NOW + 29
    assert signer.verify(url.url, "GET") == full_key(hmac_store, "k")
    clock.now = NOW + 30
    with pytest.raises(PresignedURLExpiredError) as raised:
        signer.verify(url.url, "GET")
    assert raised.value.expired_at == url.expires_at
    assert isinstance(raised.value, InvalidPresignedURLError)


def test_presigned_urls_are_for_their_method_only(
    hmac_store: ObjectStore, signer: URLSigner
) -> None:
    get = hmac_store.presign_get("k", timedelta(minutes=1))
    put = hmac_store.presign_put("k", timedelta(minutes=1))
    with pytest.raises(InvalidPresignedURLError, match="allows GET, not PUT"):
        signer.verify(get.url, "PUT")
    with pytest.raises(InvalidPresignedURLError, match="allows PUT, not GET"):
        signer.verify(put.url, "GET")
    with pytest.raises(ValueError, match="GET or PUT"):
        signer.verify(get.url, "DELETE")


def tampered_urls(url: str) -> list[str]:
    base, token = url.split("?token=")
    payload, signature = token.split(".")
    flipped = "A" if signature[5] != "A" else "B"
    return [
        f"{base}?token={payload}.{signature[:5]}{flipped}{signature[6:]}",
        f"{base}?token={payload[:-2]}xx.{signature}",
        f"{base}?token={payload}.",
        f"{base}?token={payload}",
        f"{base}?token={payload}.{signature}!",
        f"{base}?token={payload}.{signature}&token={payload}.{signature}",
        f"{base}?token=",
        base,
        f"{base.replace('/k', '/other')}?token={token}",
        f"https://maps.example.org/elsewhere/k?token={token}",
        "",
        "x" * 10_000,
    ]


def test_tampered_presigned_urls_are_refused(hmac_store: ObjectStore, signer: URLSigner) -> None:
    url = hmac_store.presign_get("k", timedelta(minutes=1)).url
    assert signer.verify(url, "GET") == full_key(hmac_store, "k")
    for bad in tampered_urls(url):
        with pytest.raises(InvalidPresignedURLError):
            signer.verify(bad, "GET")


def test_urls_of_another_secret_are_refused(hmac_store: ObjectStore, clock: Clock) -> None:
    url = hmac_store.presign_get("k", timedelta(minutes=1)).url
    other = URLSigner(
        b"another secret, also 32 bytes!!!",
        base_url="https://maps.example.org/storage",
        clock=clock,
    )
    with pytest.raises(InvalidPresignedURLError, match="signature"):
        other.verify(url, "GET")


@pytest.mark.parametrize(
    "expires", [timedelta(0), timedelta(seconds=-5), timedelta(days=7, seconds=1), 60]
)
def test_presigned_expiry_must_be_sensible(store: ObjectStore, expires: timedelta) -> None:
    with pytest.raises(ValueError, match="expires"):
        store.presign_get("k", expires)


def test_stores_verify_their_own_urls(tmp_path: Path) -> None:
    for store in (LocalObjectStore(tmp_path), MemoryObjectStore()):
        url = store.presign_put("incoming/upload.zip", timedelta(minutes=5))
        assert store.verify_presigned(url.url, "PUT") == "incoming/upload.zip"
        with pytest.raises(InvalidPresignedURLError):  # another store: another random secret
            LocalObjectStore(tmp_path).verify_presigned(url.url, "PUT")


def test_signers_want_a_real_secret_and_keep_it() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        URLSigner(b"short")
    assert SECRET.decode() not in repr(URLSigner(SECRET))


# --- a prefixed view --------------------------------------------------------------------------


def test_a_prefixed_view_stores_below_its_prefix() -> None:
    base = MemoryObjectStore()
    base.put("jobs/420/x", b"another job")
    view = prefixed(base, "jobs/42")
    info = view.put("out/package.zip", DATA)
    assert info.key == "out/package.zip"
    assert base.get("jobs/42/out/package.zip") == DATA
    assert keys(view) == ["out/package.zip"]
    assert keys(view, "out/") == ["out/package.zip"]
    assert keys(base) == ["jobs/42/out/package.zip", "jobs/420/x"]
    assert view.head("out/package.zip").key == "out/package.zip"
    view.delete("out/package.zip")
    assert keys(base) == ["jobs/420/x"]


def test_views_of_views_collapse() -> None:
    base = MemoryObjectStore()
    view = prefixed(prefixed(base, "jobs/"), "42")
    assert (view.store, view.prefix) == (base, "jobs/42")
    view.put("a", DATA)
    assert base.get("jobs/42/a") == DATA


@pytest.mark.parametrize("prefix", ["", "/", "../x", "a//b", "a/../b"])
def test_a_view_needs_a_valid_prefix(prefix: str) -> None:
    with pytest.raises(InvalidObjectKeyError):
        prefixed(MemoryObjectStore(), prefix)


def test_a_view_cannot_be_left_with_dot_dot() -> None:
    base = MemoryObjectStore()
    base.put("jobs/41/secret", DATA)
    view = prefixed(base, "jobs/42")
    with pytest.raises(InvalidObjectKeyError):
        view.get("../41/secret")
    with pytest.raises(InvalidObjectKeyError):
        view.list("../")


# --- the local folder -----------------------------------------------------------------------


def test_local_objects_are_plain_files_at_their_key(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("a/b/c.txt", DATA)
    assert (tmp_path / "a" / "b" / "c.txt").read_bytes() == DATA
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()] == [
        "a/b/c.txt"
    ]


def test_local_store_makes_its_folder_on_the_first_put(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "deep" / "objects")
    assert keys(store) == []
    assert not store.exists("a")
    with pytest.raises(ObjectNotFoundError):
        store.get("a")
    store.delete("a")
    assert not (tmp_path / "deep").exists()
    store.put("a", DATA)
    assert store.get("a") == DATA


def test_deleting_removes_the_folders_it_empties(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("a/b/c/d", DATA)
    store.put("a/x", DATA)
    store.delete("a/b/c/d")
    assert not (tmp_path / "a" / "b").exists()
    assert (tmp_path / "a" / "x").is_file()


def test_an_empty_leftover_folder_does_not_block_a_key(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    (tmp_path / "a").mkdir()
    store.put("a", DATA)
    assert store.get("a") == DATA


def test_list_skips_foreign_entries(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("a/b", DATA)
    (tmp_path / ".tmp" / "left-over.partial").write_bytes(b"x")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    (tmp_path / "a" / ".hidden").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    os.mkfifo(tmp_path / "a" / "fifo")
    assert keys(store) == ["a/b"]


def test_a_fifo_named_like_an_object_is_not_opened(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    os.mkfifo(tmp_path / "pipe")
    for call in (store.get, store.open, store.head):
        with pytest.raises(ObjectNotFoundError):
            call("pipe")
    assert not store.exists("pipe")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret").write_bytes(b"not yours")
    return folder


def test_a_planted_folder_link_is_not_followed(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "objects"
    store = LocalObjectStore(root)
    store.put("real", DATA)
    (root / "evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ObjectNotFoundError):
        store.get("evil/secret")
    with pytest.raises(ObjectNotFoundError):
        store.get_range("evil/secret", 0, 3)
    with pytest.raises(ObjectNotFoundError):
        store.head("evil/secret")
    assert not store.exists("evil/secret")
    assert keys(store) == ["real"]
    assert keys(store, "evil/") == []
    with pytest.raises(ObjectKeyConflictError):
        store.put("evil/planted", DATA)
    store.delete("evil/secret")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"not yours"


def test_a_planted_file_link_is_not_followed(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "objects"
    store = LocalObjectStore(root)
    store.put("real", DATA)
    (root / "link").symlink_to(outside / "secret")
    with pytest.raises(ObjectNotFoundError):
        store.get("link")
    assert not store.exists("link")
    assert keys(store) == ["real"]
    store.delete("link")
    assert (root / "link").is_symlink()
    store.put("link", DATA)  # replaces the link itself, never writes through it
    assert (outside / "secret").read_bytes() == b"not yours"
    assert store.get("link") == DATA


def test_a_root_given_through_a_link_works(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    store = LocalObjectStore(tmp_path / "alias")
    store.put("a", DATA)
    assert (tmp_path / "real" / "a").read_bytes() == DATA


def test_a_root_that_is_a_file_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StorageError):
        LocalObjectStore(tmp_path / "file").put("a", DATA)


def test_a_full_disk_is_a_storage_error_and_leaves_nothing(full_disk: Path) -> None:
    store = LocalObjectStore(full_disk)
    store.put("small", DATA)
    with pytest.raises(StorageError, match="No space left"):
        store.put_stream("huge", iter([b"x" * 65536] * 16))
    assert not store.exists("huge")
    assert [p.name for p in full_disk.rglob("*") if p.is_file()] == ["small"]


def test_a_failing_rename_is_a_storage_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalObjectStore(tmp_path)

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(StorageError, match="Input/output error"):
        store.put("a/b", DATA)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_put_file_renames_a_file_of_the_same_filesystem(tmp_path: Path, scratch: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    (scratch / "big").write_bytes(DATA)
    inode = (scratch / "big").stat().st_ino
    info = store.put_file("a/big", scratch / "big")
    placed = tmp_path / "objects" / "a" / "big"
    assert placed.stat().st_ino == inode  # moved, not copied
    assert placed.stat().st_mode & 0o777 == 0o600
    assert info.sha256 is None  # nothing was read
    assert not list((tmp_path / "objects" / ".tmp").iterdir())


def test_put_file_copies_a_file_with_other_links(tmp_path: Path, scratch: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    (scratch / "file").write_bytes(DATA)
    os.link(scratch / "file", scratch / "other")
    info = store.put_file("k", scratch / "file")
    assert info.sha256 == hashlib.sha256(DATA).hexdigest()
    assert not (scratch / "file").exists()
    (scratch / "other").write_bytes(b"changed through the other link")
    assert store.get("k") == DATA


def test_put_file_copies_a_file_of_another_filesystem(tmp_path: Path, full_disk: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    (full_disk / "file").write_bytes(DATA)
    info = store.put_file("k", full_disk / "file")
    assert info.sha256 == hashlib.sha256(DATA).hexdigest()
    assert store.get("k") == DATA
    assert not (full_disk / "file").exists()


def test_a_failing_move_into_place_gives_the_file_back(
    tmp_path: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    (scratch / "file").write_bytes(DATA)

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(StorageError, match="Input/output error"):
        store.put_file("a/b", scratch / "file")
    assert (scratch / "file").read_bytes() == DATA
    assert [p for p in (tmp_path / "objects").rglob("*") if p.is_file()] == []


def test_object_info_checks_its_size() -> None:
    with pytest.raises(ValueError, match="negative"):
        ObjectInfo("k", -1, "etag", datetime.now(UTC))
