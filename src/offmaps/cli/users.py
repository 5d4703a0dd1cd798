"""``offmaps users``: manage the users and OAuth2 clients of a server's data folder."""

from __future__ import annotations

import json
import sys
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import click

from offmaps.errors import UserNotFoundError

if TYPE_CHECKING:
    from offmaps.settings import ServerSettings
    from offmaps.state.users import UserStore

__all__ = ["users"]

USERS_FILE = "users.sqlite"

_DATA = click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The server's data folder (default: $OFFMAPS_DATA_DIR or ./offmaps-data).",
)
_SCOPES = click.option(
    "--scopes",
    required=True,
    help="Comma-separated scopes: maps:read, maps:write, features:edit, offline:sync, admin.",
)


def _settings(data_dir: Path | None) -> ServerSettings:
    from offmaps.settings import ServerSettings  # noqa: PLC0415 - the server extra

    return ServerSettings() if data_dir is None else ServerSettings(data_dir=data_dir)


def _users_file(data_dir: Path | None) -> Path:
    return _settings(data_dir).data_dir / USERS_FILE


def _open(data_dir: Path | None) -> UserStore:
    """The user store the server of these settings reads: ``DATA/users.sqlite``, or
    PostgreSQL with ``OFFMAPS_DATABASE_URL``."""
    from offmaps.services import STATE_BACKENDS, state_backend  # noqa: PLC0415

    settings = _settings(data_dir)
    return STATE_BACKENDS[state_backend(settings)].users(settings)


@click.group()
def users() -> None:
    """Users and OAuth2 clients of a server's data folder."""


@users.command("add")
@click.argument("name")
@_SCOPES
@click.option("--group", "groups", multiple=True, help="A group of the user (repeatable).")
@_DATA
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def add_user(
    name: str, scopes: str, groups: tuple[str, ...], data_dir: Path | None, password_stdin: bool
) -> None:
    """Add user NAME; asks for the password twice unless --password-stdin."""
    from offmaps.access import parse_scopes  # noqa: PLC0415
    from offmaps.state.users import check_name  # noqa: PLC0415

    check_name(name)  # before asking for a password
    scope_list = parse_scopes(scopes)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    with closing(_open(data_dir)) as store:
        user = store.add_user(name, password, scopes=scope_list, groups=groups)
    click.echo(f"added user {user.name} ({' '.join(user.scopes) or 'no scopes'})")


@users.command("list")
@_DATA
@click.option("--json", "as_json", is_flag=True, help="Print the users as JSON.")
def list_users(data_dir: Path | None, as_json: bool) -> None:
    """List the users."""
    if _settings(data_dir).database_url is None and not _users_file(data_dir).exists():
        found = []
    else:
        with closing(_open(data_dir)) as store:
            found = store.list_users()
    if as_json:
        rows = [
            {
                "name": u.name,
                "scopes": list(u.scopes),
                "groups": list(u.groups),
                "disabled": u.disabled,
                "created_at": u.created_at.isoformat(),
            }
            for u in found
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    for user in found:
        groups = f"  groups: {','.join(user.groups)}" if user.groups else ""
        disabled = "  (disabled)" if user.disabled else ""
        click.echo(f"{user.name}  {','.join(user.scopes) or '-'}{groups}{disabled}")


@users.command("delete")
@click.argument("name")
@_DATA
def delete_user(name: str, data_dir: Path | None) -> None:
    """Delete user NAME (tokens already issued stay valid until they expire)."""
    if _settings(data_dir).database_url is None and not _users_file(data_dir).exists():
        raise UserNotFoundError(f"no user {name!r}")
    with closing(_open(data_dir)) as store:
        store.delete_user(name)
    click.echo(f"deleted user {name}")


@users.command("add-client")
@click.argument("client_id")
@_SCOPES
@_DATA
def add_client(client_id: str, scopes: str, data_dir: Path | None) -> None:
    """Add OAuth2 client CLIENT_ID and print its secret (shown this once only)."""
    from offmaps.access import parse_scopes  # noqa: PLC0415

    scope_list = parse_scopes(scopes)
    with closing(_open(data_dir)) as store:
        client, secret = store.add_client(client_id, scopes=scope_list)
    click.echo(f"client_id: {client.client_id}")
    click.echo(f"client_secret: {secret}")
    click.echo("Keep the secret now: it is not stored and cannot be shown again.", err=True)
