"""Progress bars for long CLI work, on stderr so that ``--json`` output stays clean.

A bar is shown only when stderr is a terminal, and rich is imported only then: a command run
from a script or a cron job (``offmaps sync``) does not load it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Advance", "progress_bar"]


class Advance(Protocol):
    """Advance a progress bar by a number of units; ``total`` sets the bar's total, for work
    whose size is known only once it has started."""

    def __call__(self, amount: int, total: int | None = None) -> None: ...


def _nothing(amount: int, total: int | None = None) -> None:
    """What advances a bar that is not shown."""


def _terminal() -> Console | None:
    """stderr as a rich console when it is a terminal; ``None`` (and rich not imported) if not."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console  # noqa: PLC0415 - only for a terminal (see above)

    console = Console(stderr=True)
    return console if console.is_terminal else None


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Advance]:
    """A progress bar on stderr when it is a terminal; yields a function advancing it."""
    console = _terminal()
    if console is None:
        yield _nothing
        return
    from rich.progress import (  # noqa: PLC0415 - only for a terminal (see above)
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)

        def advance(amount: int, total: int | None = None) -> None:
            if total is not None:
                bar.update(task, total=total)
            bar.advance(task, amount)

        yield advance
