"""The docs stay true: every CLI command and option is documented."""

from __future__ import annotations

from pathlib import Path

import click

from offmaps.cli import cli

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
