"""The ``offmaps`` command line: thin commands over the library.

Exit codes: 0 success; 1 a domain error (bad input, corrupt archive, unwritable destination...)
printed as one line ``ErrorName: message``, or ``tiles verify`` finding problems; 2 a usage error.
``-v`` prints the traceback of an error as well.
"""

from __future__ import annotations

import sys
import traceback
import warnings
from typing import TextIO

import click

from offmaps.cli.cache import cache
from offmaps.cli.offline import offline
from offmaps.cli.package import package
from offmaps.cli.server import import_group, login, maps, serve
from offmaps.cli.sync import conflicts, sync
from offmaps.cli.tiles import tiles
from offmaps.cli.users import users
from offmaps.errors import OffmapsError, OffmapsWarning

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Print tracebacks of errors.")
@click.version_option(package_name="offmaps")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """offmaps: take web maps offline, edit in the field, sync edits home."""
    ctx.obj = {"verbose": verbose}


cli.add_command(tiles)
cli.add_command(serve)
cli.add_command(import_group)
cli.add_command(login)
cli.add_command(maps)
cli.add_command(users)
cli.add_command(package)
cli.add_command(offline)
cli.add_command(sync)
cli.add_command(conflicts)
cli.add_command(cache)


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
        cli.main(args=args, prog_name="offmaps", standalone_mode=False)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
