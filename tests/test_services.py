"""Services built from settings: the object store, the secret its presigned URLs use, and the
tile caches' blob store."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from datetime import timedelta
from http import HTTPMethod
from pathlib import Path

import pytest
from pydantic import SecretStr

from offmaps.errors import InvalidPresignedURLError, StorageError
from offmaps.services import STORAGE_BACKENDS, STORAGE_KEY_FILE, Services, build_services
from offmaps.settings import ServerSettings
from offmaps.storage import LocalBlobStore, LocalObjectStore, PrefixedObjectStore, SQLiteBlobStore

SHARED = SecretStr("a shared secret, 32 bytes long")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    built = build_services(ServerSettings(data_dir=tmp_path / "data"))
    yield built
    built.close()


def test_the_object_store_is_a_folder_of_the_data_folder(
    services: Services, tmp_path: Path
) -> None:
    assert isinstance(services.objects, LocalObjectStore)
    services.objects.put("jobs/x/files/a.txt", b"a")
    assert (tmp_path / "data" / "objects" / "jobs" / "x" / "files" / "a.txt").read_bytes() == b"a"
    output = services.jobs.output("0" * 32)
    assert isinstance(output, PrefixedObjectStore)
    assert (output.store, output.prefix) == (services.objects, f"jobs/{'0' * 32}/files")


def test_the_storage_key_is_generated_once_and_private(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path)
    first = STORAGE_BACKENDS["local"].objects(settings)
    key = tmp_path / STORAGE_KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(bytes.fromhex(key.read_text())) == 32
    written = key.read_text()
    again = STORAGE_BACKENDS["local"].objects(settings)
    assert key.read_text() == written
    # a URL presigned by one process is accepted by another of the same data folder
    url = first.presign_get("a/b", timedelta(minutes=5))
    assert isinstance(again, LocalObjectStore)
    assert again.verify_presigned(url.url, HTTPMethod.GET) == "a/b"
    assert [p.name for p in tmp_path.iterdir()] == [STORAGE_KEY_FILE]  # no temporary left


def test_a_storage_secret_in_the_settings_is_used_instead(tmp_path: Path) -> None:
    one = STORAGE_BACKENDS["local"].objects(
        ServerSettings(data_dir=tmp_path, storage_secret=SHARED)
    )
    elsewhere = ServerSettings(data_dir=tmp_path / "elsewhere", storage_secret=SHARED)
    other = STORAGE_BACKENDS["local"].objects(elsewhere)
    assert isinstance(other, LocalObjectStore)
    assert other.verify_presigned(one.presign_get("k", timedelta(minutes=1)).url, "GET") == "k"
    assert not (tmp_path / STORAGE_KEY_FILE).exists()
    another = SecretStr("another secret, also long enough")
    stranger = STORAGE_BACKENDS["local"].objects(
        ServerSettings(data_dir=tmp_path, storage_secret=another)
    )
    assert isinstance(stranger, LocalObjectStore)
    with pytest.raises(InvalidPresignedURLError):
        stranger.verify_presigned(one.presign_get("k", timedelta(minutes=1)).url, "GET")


@pytest.mark.parametrize("content", ["", "not hex", "abcd"])
def test_a_damaged_storage_key_is_a_storage_error(tmp_path: Path, content: str) -> None:
    (tmp_path / STORAGE_KEY_FILE).write_text(content)
    with pytest.raises(StorageError, match="storage key"):
        STORAGE_BACKENDS["local"].objects(ServerSettings(data_dir=tmp_path))


def test_the_tile_caches_keep_their_blobs_in_one_sqlite_file(services: Services) -> None:
    blobs = services.caches.blobs
    assert isinstance(blobs, SQLiteBlobStore)
    assert blobs.path == services.settings.data_dir / "tile-caches" / "blobs.sqlite"
    assert blobs.presign_get(blobs.put(b"tile").sha256, timedelta(minutes=1)).key.startswith(
        "tile-blobs/"
    )


def test_tile_blobs_of_the_old_folder_layout_are_moved_in_on_open(tmp_path: Path) -> None:
    folder = LocalBlobStore(tmp_path / "tile-caches" / "blobs")
    refs = [folder.put(bytes([i]) * 64) for i in range(10)]
    blobs = STORAGE_BACKENDS["local"].tile_blobs(ServerSettings(data_dir=tmp_path))
    assert sorted(blobs.iter_keys()) == sorted(ref.sha256 for ref in refs)
    assert all(blobs.get(ref.sha256) == bytes([i]) * 64 for i, ref in enumerate(refs))
    assert not (tmp_path / "tile-caches" / "blobs").exists()
