"""Progress bars for long CLI work, on stderr so that ``--json`` output stays clean."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["Advance", "progress_bar"]


class Advance(Protocol):
    """Advance a progress bar by a number of units; ``total`` sets the bar's total, for work
    whose size is known only once it has started."""

    def __call__(self, amount: int, total: int | None = None) -> None: ...


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Advance]:
    """A progress bar on stderr; yields a function advancing it."""
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(
        *columns, console=console, transient=False, disable=not console.is_terminal
    ) as bar:
        task = bar.add_task(description, total=total)

        def advance(amount: int, total: int | None = None) -> None:
            if total is not None:
                bar.update(task, total=total)
            bar.advance(task, amount)

        yield advance
