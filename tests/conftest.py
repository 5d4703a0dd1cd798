"""Shared fixtures: small real filesystems for full-disk and read-only tests, and preplanned
packaging held until a test lets it go."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from offmaps.offline import generate, preplanned

pytest_plugins = ["tests.serverkit", "tests.s3kit"]


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"these tests need to mount a tmpfs (run as root): {done.stderr.strip()}")


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a 192 KiB filesystem: writes past that fail with ENOSPC, as on a full disk."""
    path = tmp_path / "full"
    _mount_tmpfs(path, "size=192k")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on a read-only filesystem (chmod alone does not stop root)."""
    path = tmp_path / "ro"
    _mount_tmpfs(path, "size=1m,ro")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Preplanned packaging jobs wait until the event is set (then build as usual)."""
    release = threading.Event()
    build = generate.build_package

    def held_build(*args: Any, **kwargs: Any) -> Any:
        assert release.wait(30)
        return build(*args, **kwargs)

    monkeypatch.setattr(preplanned, "build_package", held_build)
    yield release
    release.set()
