"""``offmaps db``: the server's state in PostgreSQL (``OFFMAPS_DATABASE_URL``)."""

from __future__ import annotations

import json

import click

__all__ = ["db"]


@click.group()
def db() -> None:
    """The server's state in PostgreSQL ($OFFMAPS_DATABASE_URL): schema upgrades."""


@db.command("upgrade")
@click.option("--json", "as_json", is_flag=True, help="Print what was applied as JSON.")
def upgrade(as_json: bool) -> None:
    """Apply the migrations the state stores' tables lack, and make the tile cache index's.

    Reads OFFMAPS_DATABASE_URL and OFFMAPS_DATABASE_SCHEMA. Safe to run again (nothing to do
    then) and from several hosts at once (the migrations take a lock of the schema).
    """
    from offmaps.services import state_migrations, upgrade_database  # noqa: PLC0415
    from offmaps.settings import ServerSettings  # noqa: PLC0415 - the server extra

    settings = ServerSettings()
    applied = upgrade_database(settings)
    versions = {name: len(steps) for name, steps in state_migrations().items()}
    schema = f"{settings.database_schema}_state"
    if as_json:
        document = {
            "schema": schema,
            "applied": [
                {"component": step.component, "version": step.version, "name": step.name}
                for step in applied
            ],
            "versions": versions,
        }
        click.echo(json.dumps(document, indent=2))
        return
    for step in applied:
        click.echo(f"{step.component}: applied version {step.version} ({step.name})")
    state = ", ".join(f"{name} {version}" for name, version in versions.items())
    click.echo(f"{schema}: up to date ({state})")
