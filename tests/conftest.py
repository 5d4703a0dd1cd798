"""Shared fixtures: small real filesystems for full-disk and read-only tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

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
