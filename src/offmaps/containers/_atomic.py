"""Atomic destinations: write beside the target, then move into place in one rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from offmaps.errors import ContainerWriteError, DestinationExistsError

__all__ = ["AtomicDestination"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicDestination:
    """A temporary file or folder beside ``target`` that becomes ``target`` on commit.

    The temporary name starts with ``.`` and ends with ``.partial`` so that a crash leaves an
    obviously unfinished, hidden entry rather than a half-written archive under the real name.

    Args:
        target: the final path.
        directory: whether the container is a folder rather than one file.
        overwrite: replace an existing target on commit instead of refusing at the start.
    """

    def __init__(self, target: Path, *, directory: bool, overwrite: bool = False) -> None:
        self.target = Path(target)
        self.directory = directory
        self.overwrite = overwrite
        if self.target.exists() and not overwrite:
            raise DestinationExistsError(
                f"{self.target} already exists (choose another destination or remove it)",
                path=self.target,
            )
        parent = self.target.parent
        if not parent.is_dir():
            raise ContainerWriteError(f"{parent} is not an existing folder", path=self.target)
        prefix = f".{self.target.name}."
        try:
            if directory:
                self.temp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".partial", dir=parent))
            else:
                fd, name = tempfile.mkstemp(prefix=prefix, suffix=".partial", dir=parent)
                os.close(fd)
                self.temp = Path(name)
        except OSError as exc:
            raise ContainerWriteError(
                f"cannot write in {parent}: {exc.strerror or exc}", path=self.target
            ) from exc
        self.done = False

    def commit(self) -> None:
        """Move the temporary entry to the target (replacing it when ``overwrite``)."""
        if self.done:
            return
        try:
            if self.target.exists() and not self.overwrite:
                raise DestinationExistsError(
                    f"{self.target} appeared while writing; not replacing it", path=self.target
                )
            # mkstemp/mkdtemp create private (0600/0700) entries: give the finished container
            # the permissions a plain open() would have had
            os.chmod(self.temp, (0o777 if self.directory else 0o666) & ~_umask())
            if self.directory and self.target.exists():
                old = self.target.with_name(f".{self.target.name}.old")
                os.replace(self.target, old)
                os.replace(self.temp, self.target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(self.temp, self.target)
        except OSError as exc:
            self.abort()
            raise ContainerWriteError(
                f"cannot move the finished container to {self.target}: {exc.strerror or exc}",
                path=self.target,
            ) from exc
        except DestinationExistsError:
            self.abort()
            raise
        self.done = True

    def abort(self) -> None:
        """Remove the temporary entry; the target is left as it was."""
        if self.done:
            return
        self.done = True
        if self.directory:
            shutil.rmtree(self.temp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.temp.unlink()
        for sidecar in ("-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.temp}{sidecar}").unlink()
