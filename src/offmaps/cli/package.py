"""``offmaps package``: check offline map packages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from offmaps.cli.progress import progress_bar
from offmaps.offline.package import read_manifest, verify_package

__all__ = ["package"]


@click.group()
def package() -> None:
    """Check offline map packages."""


@package.command("verify")
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_command(directory: Path, as_json: bool) -> None:
    """Check that the package in DIR is whole and sound; exit 1 naming each problem otherwise.

    Every listed file is hashed and compared with package.json; unlisted files, symbolic links,
    damaged GeoPackages and unreadable tile archives are problems too.
    """
    total = sum(entry.size for entry in read_manifest(directory).files)
    with progress_bar("Verifying", total) as advance:
        report = verify_package(directory, progress=advance)
    if as_json:
        document = {
            "path": str(directory),
            "ok": report.ok,
            "files": report.files,
            "bytes": report.bytes,
            "problems": [{"path": p.path, "reason": p.reason} for p in report.problems],
        }
        click.echo(json.dumps(document, indent=2))
    elif report.ok:
        click.echo(f"{directory}: OK ({report.files} files, {report.bytes} bytes)")
    else:
        for problem in report.problems:
            click.echo(f"{directory}: {problem.path}: {problem.reason}", err=True)
    if not report.ok:
        sys.exit(1)
