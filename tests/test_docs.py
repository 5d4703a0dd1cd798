"""The docs stay true: every CLI command and option is documented, the README's commands are
commands, and the offline job body is documented member by member."""

from __future__ import annotations

import json
import shlex
import warnings
from pathlib import Path

import click
import pytest
from pydantic import BaseModel

from offmaps.cli import cli
from offmaps.offline.parameters import (
    ExportTileCacheParameters,
    GenerateGeodatabaseParameters,
    GenerateLayerOption,
    GenerateOfflineMapParameterOverrides,
    GenerateOfflineMapParameters,
    OfflineItemInfo,
)
from offmaps.server.rest.offline import OfflineRequest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _commands(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found.extend(_commands(command, path))
        else:
            found.append((path, command))
    return found


def test_every_cli_command_and_option_is_in_docs_cli() -> None:
    text = (DOCS / "cli.md").read_text()
    commands = _commands(cli, "offmaps")
    assert commands
    for path, command in commands:
        assert f"## `{path}`" in text, path
        for param in command.params:
            if isinstance(param, click.Option):
                assert any(opt in text for opt in param.opts), (path, param.opts)


ROOT = DOCS.parent


def _readme_commands() -> list[list[str]]:
    """The arguments of every ``offmaps`` command the README shows."""
    return [
        shlex.split(line, comments=True)[1:]
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith(".venv/bin/offmaps ")
    ]


def _parse(args: list[str]) -> click.Command:
    """The command ``offmaps ARGS`` runs, after click parsed its arguments and options (nothing
    runs; files are not opened)."""
    command: click.Command = cli
    name: str | None = "offmaps"
    while True:
        if not isinstance(command, click.Group):
            # the parser alone: unknown options raise, values are not converted (no file opened)
            command.make_parser(click.Context(command, info_name=name)).parse_args(list(args))
            return command
        ctx = command.make_context(name, list(args), resilient_parsing=True)
        with warnings.catch_warnings():  # click 8.2+ deprecates protected_args; 9 merges them
            warnings.simplefilter("ignore", DeprecationWarning)
            rest = [*ctx.protected_args, *ctx.args]
        name, sub, args = command.resolve_command(ctx, rest)
        if sub is None:
            raise click.UsageError(f"{name}: no such command: {rest[:1]}")
        command = sub


def test_every_readme_command_is_a_cli_command_with_its_options() -> None:
    commands = _readme_commands()
    assert len(commands) >= 15
    for args in commands:
        try:
            command = _parse(args)
        except click.UsageError as exc:
            raise AssertionError(f"README.md: offmaps {shlex.join(args)}: {exc}") from None
        assert not isinstance(command, click.Group), args


def test_a_wrong_option_in_a_readme_command_would_be_caught() -> None:
    with pytest.raises(click.UsageError):
        _parse(["offline", "generate", "--server", "http://x", "--mapp", "ID"])
    with pytest.raises(click.UsageError):
        _parse(["tiles", "countt", "--zooms", "1-2"])


def _offline_jobs_section() -> str:
    text = (DOCS / "server.md").read_text()
    return text.split("## Offline jobs\n")[1].split("\n## ")[0]


def test_every_member_of_the_offline_job_body_is_in_docs_server() -> None:
    section = _offline_jobs_section()
    models: list[type[BaseModel]] = [
        OfflineRequest,
        GenerateOfflineMapParameters,
        GenerateOfflineMapParameterOverrides,
        GenerateGeodatabaseParameters,
        GenerateLayerOption,
        ExportTileCacheParameters,
        OfflineItemInfo,
    ]
    for model in models:
        for name in model.model_fields:
            assert f"`{name}`" in section, (model.__name__, name)


def test_the_offline_job_example_of_docs_server_is_a_valid_body() -> None:
    (example,) = [part.split("```")[0] for part in _offline_jobs_section().split("```json\n")[1:]]
    body = OfflineRequest.model_validate(json.loads(example))
    assert body.overrides is not None
    assert body.parameters.tile_format == "pmtiles"
