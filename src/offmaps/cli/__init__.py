"""The ``offmaps`` command line: thin commands over the library.

Exit codes: 0 success; 1 a domain error (bad input, corrupt archive, unwritable destination...)
printed as one line ``ErrorName: message``, or ``tiles verify`` finding problems; 2 a usage error.
``-v`` prints the traceback of an error as well.

The commands are lazy (docs/cli.md, "Start-up"): this module imports click and
:mod:`offmaps.errors` only; a command's module (and the library it needs) is imported when that
command runs or its own help is asked for. :data:`COMMANDS` names each command's module and its
short help, so that ``offmaps --help`` lists them all without importing any
(tests/cli/test_startup.py checks the table against the commands).
"""

from __future__ import annotations

import importlib
import sys
import traceback
import warnings
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, TextIO

import click

from offmaps.errors import OffmapsError, OffmapsWarning

__all__ = ["cli", "main"]

# `import httpx` also imports httpx's own command line (httpx._main) when rich and pygments are
# installed, which costs ~40 ms of every command that talks to a server; offmaps never calls it,
# and httpx falls back to a stub `httpx.main` when that module cannot be imported
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class LazyCommand:
    """Where a top-level command lives, and its short help for ``offmaps --help``."""

    module: str
    attribute: str
    help: str
    """The first paragraph of the command's docstring, as click shows it in a listing."""


COMMANDS: Mapping[str, LazyCommand] = {
    "tiles": LazyCommand(
        "offmaps.cli.tiles", "tiles", "Count, convert, inspect and verify tile archives."
    ),
    "serve": LazyCommand(
        "offmaps.cli.server",
        "serve",
        "Serve web maps, feature services and tile layers over HTTP.",
    ),
    "worker": LazyCommand(
        "offmaps.cli.server",
        "worker",
        "Run the jobs servers put on the job queue ($OFFMAPS_QUEUE_URL) until stopped.",
    ),
    "import": LazyCommand(
        "offmaps.cli.server", "import_group", "Import data into a server's data folder."
    ),
    "login": LazyCommand(
        "offmaps.cli.server",
        "login",
        "Sign in to the server at URL and keep the token for later commands.",
    ),
    "maps": LazyCommand("offmaps.cli.server", "maps", "Web maps on a server."),
    "users": LazyCommand(
        "offmaps.cli.users", "users", "Users and OAuth2 clients of a server's data folder."
    ),
    "package": LazyCommand("offmaps.cli.package", "package", "Check offline map packages."),
    "offline": LazyCommand("offmaps.cli.offline", "offline", "Take a server's web maps offline."),
    "sync": LazyCommand(
        "offmaps.cli.sync",
        "sync",
        "Sync an offline package's edits with its server (``offmaps sync DIR``).",
    ),
    "conflicts": LazyCommand(
        "offmaps.cli.sync", "conflicts", "The server's review queue of sync conflicts."
    ),
    "areas": LazyCommand(
        "offmaps.cli.areas",
        "areas",
        "Preplanned map areas of a server's web maps (docs/preplanned.md).",
    ),
    "cache": LazyCommand(
        "offmaps.cli.cache", "cache", "Create, seed, measure and clean tile caches (docs/cache.md)."
    ),
    "db": LazyCommand(
        "offmaps.cli.db",
        "db",
        "The server's state in PostgreSQL ($OFFMAPS_DATABASE_URL): schema upgrades.",
    ),
}
"""The top-level commands (``offmaps --help`` lists them sorted, as click does)."""


class _LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands by name, each imported on first access (``commands[name]``)."""

    def __init__(self, table: Mapping[str, LazyCommand]) -> None:
        self._table = table
        self._loaded: dict[str, click.Command] = {}

    def loaded(self, name: str) -> click.Command | None:
        """The command if its module has been imported already, else ``None``."""
        return self._loaded.get(name)

    def __getitem__(self, name: str) -> click.Command:
        found = self._loaded.get(name)
        if found is None:
            entry = self._table[name]
            command = getattr(importlib.import_module(entry.module), entry.attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{entry.module}.{entry.attribute} is not a click command")
            found = self._loaded[name] = command
        return found

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self._loaded:
            raise KeyError(name)
        del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        yield from self._table
        yield from (name for name in self._loaded if name not in self._table)

    def __len__(self) -> int:
        return len(self._table) + sum(name not in self._table for name in self._loaded)


class LazyGroup(click.Group):
    """A click group whose commands are imported only when one runs or shows its own help.

    ``offmaps --help`` lists the commands from :data:`COMMANDS` without importing them.
    """

    commands: _LazyCommands

    def __init__(self, name: str | None = None, **attrs: Any) -> None:
        super().__init__(name, commands=_LazyCommands(COMMANDS), **attrs)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's own, with the short help of a command not imported yet from the table."""
        rows: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            command = self.commands.loaded(name)
            if command is None:
                command = click.Command(name, help=COMMANDS[name].help)
            if not command.hidden:
                rows.append((name, command))
        if not rows:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in rows)
        with formatter.section("Commands"):
            formatter.write_dl(
                [(name, command.get_short_help_str(limit)) for name, command in rows]
            )


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Print tracebacks of errors.")
@click.version_option(package_name="offmaps")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """offmaps: take web maps offline, edit in the field, sync edits home."""
    ctx.obj = {"verbose": verbose}


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    click.echo(f"Warning: {message}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; domain errors become one line on stderr and exit code 1."""
    args = sys.argv[1:] if argv is None else argv
    with warnings.catch_warnings():
        warnings.simplefilter("always", OffmapsWarning)
        warnings.showwarning = _show_warning
        return _run(args)


def _run(args: list[str]) -> int:
    try:
        # outside standalone mode click returns a command's ``ctx.exit(code)`` (every command
        # returns None, so a number is always such a code)
        code = cli.main(args=args, prog_name="offmaps", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except OffmapsError as exc:
        if "-v" in args or "--verbose" in args:
            traceback.print_exc()
        click.echo(f"{type(exc).__name__}: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return 130
    except Exception as exc:
        problem = _settings_problem(exc)
        if problem is None:
            raise
        click.echo(problem, err=True)
        return 1
    return code if isinstance(code, int) else 0


def _settings_problem(exc: Exception) -> str | None:
    """One line for settings from the environment that do not validate (``OFFMAPS_...=bad``);
    None for any other error. pydantic is imported here only when one of its errors came."""
    if "pydantic_core" not in sys.modules:
        return None
    from pydantic import ValidationError  # noqa: PLC0415 - loaded already, see above

    if not isinstance(exc, ValidationError) or exc.title != "ServerSettings":
        return None
    problems = "; ".join(
        f"OFFMAPS_{'__'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
        for error in exc.errors()
    )
    return f"SettingsError: {problems}"


if __name__ == "__main__":
    sys.exit(main())
