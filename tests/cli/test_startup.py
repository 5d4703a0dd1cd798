"""``offmaps`` starts fast: a command imports only what it uses (docs/cli.md, "Start-up").

Checked in fresh interpreters by the modules they import, never by timings (bench/cli_startup.py
times them). ``offmaps --help`` lists every command from :data:`offmaps.cli.COMMANDS` without
importing it; the table is checked against the commands themselves so that it cannot drift.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

import offmaps.cli
from offmaps.cli import COMMANDS

SERVER = ("offmaps.server", "offmaps.services", "fastapi", "starlette", "uvicorn")
FILTERS = ("pygeofilter", "lark")
# what the sync command needs not import: the server side, CQL2, the web map models, tile code,
# and geometry libraries (a sync with geometries to send or store imports shapely then); rich
# only draws a progress bar on a terminal, and httpx's own command line (rich, pygments) never
NOT_FOR_SYNC = (
    *SERVER,
    *FILTERS,
    "offmaps.schemas.webmap",
    "offmaps.offline.editing",
    "offmaps.client.offline",
    "offmaps.containers",
    "offmaps.tiling",
    "morecantile",
    "pyproj",
    "shapely",
    "numpy",
    "asyncio",
    "rich",
    "pygments",
    "httpx._main",
)
# ``import offmaps.cli`` and ``offmaps --help`` need click and offmaps.errors, and no library
NOT_FOR_HELP = (
    *NOT_FOR_SYNC,
    "offmaps.schemas",
    "offmaps.client",
    "offmaps.offline",
    "offmaps.features",
    "offmaps.sync",
    "offmaps.cli.offline",
    "offmaps.cli.sync",
    "offmaps.cli.tiles",
    "pydantic",
    "httpx",
)

_CHILD = """\
import json
import sys

{code}
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump(sorted(name for name, module in sys.modules.items() if module is not None), out)
"""


def _imported(code: str, tmp_path: Path) -> tuple[set[str], str]:
    """The modules a fresh interpreter has imported after running ``code``, and its stdout."""
    found = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _CHILD.format(code=code), str(found)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modules: list[str] = json.loads(found.read_text(encoding="utf-8"))
    return set(modules), done.stdout


def _among(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """The modules that are one of ``names`` or inside one of them."""
    return sorted(m for m in modules if any(m == n or m.startswith(f"{n}.") for n in names))


def test_importing_the_cli_imports_no_command_and_no_library(tmp_path: Path) -> None:
    modules, _ = _imported("import offmaps.cli", tmp_path)
    assert "click" in modules  # the check sees what is imported
    assert _among(modules, NOT_FOR_HELP) == []


def test_offmaps_help_lists_every_command_without_importing_any(tmp_path: Path) -> None:
    modules, out = _imported("from offmaps.cli import main\nassert main(['--help']) == 0", tmp_path)
    assert _among(modules, NOT_FOR_HELP) == []
    listed = out.split("Commands:", 1)[1].split()
    assert set(COMMANDS) <= set(listed)


@pytest.mark.parametrize(
    "code",
    [
        "import offmaps.cli.sync",
        "from offmaps.cli import main\nassert main(['sync', 'run', '--help']) == 0",
    ],
    ids=["import", "help"],
)
def test_the_sync_command_needs_no_server_no_filters_no_web_map(code: str, tmp_path: Path) -> None:
    modules, _ = _imported(code, tmp_path)
    assert "offmaps.client.sync" in modules
    assert _among(modules, NOT_FOR_SYNC) == []


def test_the_table_gives_each_command_its_own_short_help() -> None:
    for name, entry in COMMANDS.items():
        command = getattr(importlib.import_module(entry.module), entry.attribute)
        assert isinstance(command, click.Command)
        assert command.name == name
        stand_in = click.Command(name, help=entry.help)
        for limit in (20, 45, 60, 70, 80, 1000):
            assert command.get_short_help_str(limit) == stand_in.get_short_help_str(limit), name


def test_every_command_a_cli_module_exports_is_in_the_table() -> None:
    tabled = {(entry.module, entry.attribute) for entry in COMMANDS.values()}
    exported = set()
    for info in pkgutil.iter_modules(offmaps.cli.__path__, "offmaps.cli."):
        if info.name.rpartition(".")[2].startswith("_"):  # __main__ runs the CLI
            continue
        module = importlib.import_module(info.name)
        exported |= {
            (info.name, attribute)
            for attribute in module.__all__
            if isinstance(getattr(module, attribute), click.Command)
        }
    assert exported == tabled


def test_help_is_the_same_once_every_command_is_imported(tmp_path: Path) -> None:
    _, lazy = _imported("from offmaps.cli import main\nmain(['--help'])", tmp_path)
    load_all = "from offmaps.cli import COMMANDS, cli, main\nfor n in COMMANDS: cli.commands[n]"
    modules, loaded = _imported(f"{load_all}\nmain(['--help'])", tmp_path)
    assert "offmaps.cli.offline" in modules
    assert lazy == loaded


def test_a_sync_looking_for_scheduled_updates_imports_no_tile_code(tmp_path: Path) -> None:
    """Every sync asks whether its package takes scheduled updates: the tile update code (the
    containers, morecantile, pyproj) is imported only where a tile update is applied."""
    modules, _ = _imported("import offmaps.client.scheduled", tmp_path)
    assert "offmaps.offline.updates.features" in modules
    assert _among(modules, ("offmaps.offline.updates.tiles", "offmaps.containers")) == []
    assert _among(modules, ("morecantile", "pyproj")) == []
