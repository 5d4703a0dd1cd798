"""Atomic destinations: write beside the target, then move into place in one rename.

A write goes to a hidden entry beside the target whose name records the writing process::

    .NAME.HOST.PID.START.RANDOM.partial     the container being written (file or folder)
    .NAME.HOST.PID.START.RANDOM.partial.data / -journal / -wal / -shm
                                            scratch files of some writers beside it
    .NAME.HOST.PID.START.RANDOM.old         a replaced folder, while it is being removed

``HOST`` is the first 8 hexadecimal digits of the SHA-256 of the host name, ``PID`` the process
id, ``START`` the process's start time (clock ticks since boot, from ``/proc``; ``0`` where there
is none), which tells a reused process id apart. A process killed with ``kill -9`` (or a machine
losing power) leaves these entries behind; the next write to the same destination removes those
whose process is gone on this host. Entries it cannot attribute (written by another host, or by
offmaps before names recorded the process) are named in a :class:`LeftoversWarning` with the
command that removes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import socket
import stat
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from offmaps.containers.base import LeftoversWarning
from offmaps.errors import ContainerWriteError, DestinationExistsError
from offmaps.processes import process_runs, start_time

__all__ = ["AtomicDestination", "Refusal", "find_leftovers", "remove_stale_leftovers"]

Refusal = Callable[[Path], str | None]
"""Why an existing entry may not be replaced by a writer (``None``: it may), e.g. "it holds
notes.txt, which is not part of an XYZ tile folder"."""

_SIDECARS = ("", ".data", "-journal", "-wal", "-shm")
_OURS = re.compile(
    r"(?P<host>[0-9a-f]{8})\.(?P<pid>[0-9]{1,10})\.(?P<start>[0-9]{1,20})\.[a-z0-9_]{8}"
    r"\.(?:partial(?:\.data|-journal|-wal|-shm)?|old)"
)
# Names written by offmaps before they recorded the process: .NAME.RANDOM.partial, .NAME.old
_LEGACY = re.compile(r"[a-z0-9_]{8}\.partial(?:\.data|-journal|-wal|-shm)?|old")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _process_tag() -> str:
    pid = os.getpid()
    return f"{_host_tag()}.{pid}.{start_time(pid) or '0'}"


def _is_alive(pid: int, start: str) -> bool:
    """Whether the process ``pid`` that started at ``start`` (``"0"``: not known) still runs
    on this host."""
    return process_runs(pid, None if start == "0" else start)


def find_leftovers(target: Path) -> tuple[list[Path], list[Path]]:
    """The leftovers of interrupted writes to ``target``: ``(stale, unknown)``.

    ``stale`` are those of dead processes of this host (safe to remove); ``unknown`` those that
    cannot be attributed (another host's, or named the way offmaps named them before it recorded
    the process). Leftovers of live processes are in neither list.
    """
    prefix = f".{target.name}."
    stale: list[Path] = []
    unknown: list[Path] = []
    try:
        names = sorted(name for name in os.listdir(target.parent) if name.startswith(prefix))
    except OSError:
        return stale, unknown
    host = _host_tag()
    for name in names:
        rest = name[len(prefix) :]
        ours = _OURS.fullmatch(rest)
        if ours is not None:
            if ours["host"] != host:
                unknown.append(target.parent / name)
            elif not _is_alive(int(ours["pid"]), ours["start"]):
                stale.append(target.parent / name)
        elif _LEGACY.fullmatch(rest):
            unknown.append(target.parent / name)
    return stale, unknown


def _remove(path: Path) -> None:
    info = path.lstat()
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def remove_stale_leftovers(target: Path) -> list[Path]:
    """Remove the leftovers of dead processes' writes to ``target``; warn about those that
    cannot be attributed. Returns what was removed.

    Warns:
        LeftoversWarning: naming the leftovers that were kept, with the command removing them.
    """
    stale, unknown = find_leftovers(target)
    removed: list[Path] = []
    kept: list[Path] = []
    for path in stale:
        try:
            _remove(path)
        except FileNotFoundError:
            continue  # another writer cleaned it at the same time
        except OSError:
            kept.append(path)
            continue
        removed.append(path)
    if unknown or kept:
        paths = [*unknown, *kept]
        named = ", ".join(p.name for p in paths[:3]) + (
            f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        )
        warnings.warn(
            LeftoversWarning(
                f"{len(paths)} leftover(s) of an interrupted write to {target} are kept because "
                f"offmaps cannot tell whether their writer is gone ({named}); once no process "
                f"writes {target.name}, remove them with: rm -rf -- "
                + " ".join(shlex.quote(str(p)) for p in paths)
            ),
            stacklevel=3,
        )
    return removed


def _refuse_name(target: Path) -> None:
    """Refuse targets that name no entry of their own: ``.``, ``..``, ``/``, the current folder
    or a folder holding it."""
    if target.name in ("", ".", ".."):
        raise DestinationExistsError(
            f"{str(target) or '.'} names no new file or folder of its own "
            f"(., .. and / are never replaced): give a name, e.g. {target / 'tiles'}",
            path=target,
        )
    with contextlib.suppress(OSError):
        real = Path(os.path.realpath(target))
        cwd = Path.cwd()
        if (
            os.path.lexists(target)
            and not target.is_symlink()
            and (real == cwd or real in cwd.parents)
        ):
            raise DestinationExistsError(
                f"{target} is the current folder or holds it; it is never replaced: "
                "give another destination",
                path=target,
            )


def _describe(info: os.stat_result) -> str:
    if stat.S_ISDIR(info.st_mode):
        return "a folder"
    if stat.S_ISREG(info.st_mode):
        return "a file"
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link"
    return "a special file (FIFO, socket or device)"


class AtomicDestination:
    """A temporary file or folder beside ``target`` that becomes ``target`` on commit.

    The temporary name starts with ``.`` and records the writing process (see the module's
    docstring), so that a crash leaves an obviously unfinished, hidden entry rather than a
    half-written archive under the real name, and the next write to ``target`` can tell that its
    writer is gone and remove it.

    An existing ``target`` is replaced only with ``overwrite``, and only when it is an entry of
    the kind written (a file for a file, a folder for a folder; never a symbolic link, ``.``,
    ``..``, ``/`` or the current folder) that ``refusal`` accepts: a tile container of the kind
    being written. Everything is checked before anything is written.

    Args:
        target: the final path.
        directory: whether the container is a folder rather than one file.
        overwrite: replace an existing target on commit instead of refusing at the start.
        refusal: why an existing target may not be replaced (``None``: it may).
        what: the kind of container, for messages ("an XYZ tile folder").

    Raises:
        DestinationExistsError: when ``target`` exists and may not be replaced.
        ContainerWriteError: when the folder of ``target`` cannot be written.
    """

    def __init__(
        self,
        target: Path,
        *,
        directory: bool,
        overwrite: bool = False,
        refusal: Refusal | None = None,
        what: str = "a tile container",
    ) -> None:
        self.target = Path(target)
        self.directory = directory
        self.overwrite = overwrite
        self.what = what
        _refuse_name(self.target)
        parent = self.target.parent
        if not parent.is_dir():
            raise ContainerWriteError(f"{parent} is not an existing folder", path=self.target)
        self._replaced = self._check_existing(refusal)
        remove_stale_leftovers(self.target)
        prefix = f".{self.target.name}.{_process_tag()}."
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

    def _check_existing(self, refusal: Refusal | None) -> tuple[int, int] | None:
        """Refuse an existing target unless it may be replaced; its identity if it may."""
        try:
            info = self.target.lstat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ContainerWriteError(
                f"cannot look at {self.target}: {exc.strerror or exc}", path=self.target
            ) from exc
        if not self.overwrite:
            raise DestinationExistsError(
                f"{self.target} already exists (choose another destination, or overwrite it)",
                path=self.target,
            )
        expected = stat.S_ISDIR if self.directory else stat.S_ISREG
        if not expected(info.st_mode):
            link = ""
            if stat.S_ISLNK(info.st_mode):
                with contextlib.suppress(OSError):
                    link = f" to {os.readlink(self.target)}"
            raise DestinationExistsError(
                f"{self.target} is {_describe(info)}{link}, not {self.what}; not replacing it",
                path=self.target,
            )
        reason = refusal(self.target) if refusal is not None else None
        if reason is not None:
            raise DestinationExistsError(
                f"{self.target} is not {self.what} ({reason}); not replacing it: remove it "
                "yourself or choose another destination",
                path=self.target,
            )
        return info.st_dev, info.st_ino

    def _still_replaceable(self) -> None:
        """Refuse at commit when the target appeared, or changed, since the start."""
        try:
            info = self.target.lstat()
        except FileNotFoundError:
            return
        if self._replaced is None or not self.overwrite:
            raise DestinationExistsError(
                f"{self.target} appeared while writing; not replacing it", path=self.target
            )
        if (info.st_dev, info.st_ino) != self._replaced:
            raise DestinationExistsError(
                f"{self.target} was replaced by something else while writing; not replacing it",
                path=self.target,
            )

    def commit(self) -> None:
        """Move the temporary entry to the target (replacing it when ``overwrite``)."""
        if self.done:
            return
        try:
            self._still_replaceable()
            # mkstemp/mkdtemp create private (0600/0700) entries: give the finished container
            # the permissions a plain open() would have had
            os.chmod(self.temp, (0o777 if self.directory else 0o666) & ~_umask())
            if self.directory and os.path.lexists(self.target):
                self._swap_folders()
            else:
                os.replace(self.temp, self.target)
        except OSError as exc:
            self.abort()
            raise ContainerWriteError(
                f"cannot move the finished container {self.temp.name} to {self.target}: "
                f"{exc.strerror or exc}",
                path=self.target,
            ) from exc
        except DestinationExistsError:
            self.abort()
            raise
        self.done = True

    def _swap_folders(self) -> None:
        # A folder cannot replace a non-empty folder in one rename: move the old one aside under
        # a name recording this process (so a crash here leaves a leftover the next write
        # removes), move the new one in, then remove the old one.
        old = self.temp.with_name(self.temp.name.removesuffix(".partial") + ".old")
        os.replace(self.target, old)
        try:
            os.replace(self.temp, self.target)
        except OSError:
            with contextlib.suppress(OSError):
                os.replace(old, self.target)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Remove the temporary entry; the target is left as it was."""
        if self.done:
            return
        self.done = True
        for sidecar in _SIDECARS:
            path = Path(f"{self.temp}{sidecar}")
            if self.directory and not sidecar:
                shutil.rmtree(path, ignore_errors=True)
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
