"""Where writers may write: what ``overwrite`` replaces, and the leftovers of dead writers.

Every container kind passes these: an existing destination is replaced only when it is a
container of the kind written (never ``.``, ``..``, ``/``, the current folder, a symbolic link,
a file where a folder is expected or a folder holding anything else), and leftovers of writers
killed mid-write are removed by the next write to the same destination.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import subprocess
import warnings
from pathlib import Path

import pytest

from offmaps.containers import LeftoversWarning
from offmaps.containers.base import TilesetMetadata
from offmaps.containers.registry import ContainerKind, Location, open_reader, open_writer
from offmaps.errors import DestinationExistsError
from offmaps.types import Tile, TileFormat
from tests.tilegen import sample_tiles

KINDS = list(ContainerKind)
FOLDER_KINDS = [k for k in KINDS if k.is_folder]
PNG = TilesetMetadata(tile_format=TileFormat.PNG)


def location(kind: ContainerKind, folder: Path, name: str = "out") -> Location:
    return Location(kind, folder / (name if kind.is_folder else f"{name}.{kind.value}"))


def write_all(loc: Location, tiles: dict[Tile, bytes], *, overwrite: bool = False) -> None:
    with open_writer(loc, PNG, overwrite=overwrite) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def snapshot(path: Path) -> dict[str, bytes | str]:
    """Every entry below ``path`` (or ``path`` itself) with its bytes or link target."""
    if path.is_symlink():
        return {".": f"-> {os.readlink(path)}"}
    if path.is_file():
        return {".": path.read_bytes()}
    found: dict[str, bytes | str] = {}
    for entry in sorted(path.rglob("*")):
        key = str(entry.relative_to(path))
        if entry.is_symlink():
            found[key] = f"-> {os.readlink(entry)}"
        elif entry.is_file():
            found[key] = entry.read_bytes()
        else:
            found[key] = "dir"
    return found


@pytest.fixture(params=KINDS, ids=[k.value for k in KINDS])
def kind(request: pytest.FixtureRequest) -> ContainerKind:
    value: ContainerKind = request.param
    return value


# --- what --overwrite may replace -----------------------------------------------------------


def test_overwrite_refuses_a_folder_with_other_files(kind: ContainerKind, tmp_path: Path) -> None:
    loc = location(kind, tmp_path)
    if kind.is_folder:
        write_all(loc, sample_tiles(TileFormat.PNG, maxzoom=1))
        (loc.path / "notes.txt").write_text("field notes, no copy anywhere")
        expect = "notes.txt"
    else:
        loc.path.mkdir()
        (loc.path / "notes.txt").write_text("field notes, no copy anywhere")
        expect = "is a folder"
    before = snapshot(loc.path)
    with pytest.raises(DestinationExistsError, match=expect):
        write_all(loc, sample_tiles(TileFormat.PNG, maxzoom=0), overwrite=True)
    assert snapshot(loc.path) == before
    assert listing(tmp_path) == {loc.path.name}


def test_overwrite_refuses_a_file_that_is_not_a_container(
    kind: ContainerKind, tmp_path: Path
) -> None:
    loc = location(kind, tmp_path)
    loc.path.write_text("not tiles at all\n" * 100)
    before = snapshot(loc.path)
    with pytest.raises(DestinationExistsError, match="not replacing it"):
        write_all(loc, sample_tiles(TileFormat.PNG, maxzoom=0), overwrite=True)
    assert snapshot(loc.path) == before
    assert listing(tmp_path) == {loc.path.name}


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-folder", "dangling"])
def test_overwrite_refuses_a_symbolic_link(
    kind: ContainerKind, tmp_path: Path, dangling: bool
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    work = tmp_path / "work"
    work.mkdir()
    loc = location(kind, work)
    loc.path.symlink_to(tmp_path / "gone" if dangling else elsewhere)
    for overwrite in (False, True):
        with pytest.raises(DestinationExistsError, match=r"symbolic link|already exists"):
            write_all(loc, sample_tiles(TileFormat.PNG, maxzoom=0), overwrite=overwrite)
    assert loc.path.is_symlink()
    assert listing(work) == {loc.path.name}
    assert snapshot(elsewhere) == {"precious.txt": b"keep me"}


@pytest.mark.parametrize("kind", FOLDER_KINDS, ids=[k.value for k in FOLDER_KINDS])
@pytest.mark.parametrize("name", [".", "..", "/", "CWD", "PARENT_OF_CWD"])
def test_dot_dotdot_root_and_the_current_folder_are_never_replaced(
    kind: ContainerKind, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "a" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    target = {"CWD": str(work), "PARENT_OF_CWD": "../../a"}.get(name, name)
    for overwrite in (False, True):
        with pytest.raises(DestinationExistsError):
            write_all(Location(kind, Path(target)), {}, overwrite=overwrite)
    assert listing(work) == set()
    assert listing(tmp_path) == {"a"}
    assert listing(tmp_path / "a") == {"work"}


def test_overwrite_refuses_a_container_of_another_kind(tmp_path: Path) -> None:
    tiles = sample_tiles(TileFormat.PNG, maxzoom=1)
    gpkg = location(ContainerKind.GEOPACKAGE, tmp_path, "cache")
    write_all(gpkg, tiles)
    posing = tmp_path / "cache.mbtiles"
    gpkg.path.rename(posing)
    with pytest.raises(DestinationExistsError, match="not an MBTiles file"):
        write_all(Location(ContainerKind.MBTILES, posing), tiles, overwrite=True)
    esri = location(ContainerKind.ESRI_EXPLODED, tmp_path, "esri")
    write_all(esri, tiles)
    with pytest.raises(DestinationExistsError, match=r"not an XYZ tile folder.*_alllayers"):
        write_all(Location(ContainerKind.XYZ, esri.path), tiles, overwrite=True)
    compact = location(ContainerKind.ESRI_COMPACT, tmp_path, "compact")
    write_all(compact, tiles)
    with pytest.raises(DestinationExistsError, match="_alllayers"):
        write_all(Location(ContainerKind.XYZ, compact.path), tiles, overwrite=True)


def test_overwrite_refuses_a_geopackage_that_holds_features(tmp_path: Path) -> None:
    loc = location(ContainerKind.GEOPACKAGE, tmp_path)
    write_all(loc, sample_tiles(TileFormat.PNG, maxzoom=1))
    with sqlite3.connect(loc.path) as conn:
        conn.execute("CREATE TABLE sites (fid INTEGER PRIMARY KEY, name TEXT)")
        conn.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier) "
            "VALUES ('sites', 'attributes', 'sites')"
        )
    conn.close()
    before = loc.path.read_bytes()
    with pytest.raises(DestinationExistsError, match=r"sites \(attributes\)"):
        write_all(loc, sample_tiles(TileFormat.PNG, maxzoom=0), overwrite=True)
    assert loc.path.read_bytes() == before


@pytest.mark.parametrize("kind", FOLDER_KINDS, ids=[k.value for k in FOLDER_KINDS])
def test_overwrite_may_replace_an_empty_folder(kind: ContainerKind, tmp_path: Path) -> None:
    loc = location(kind, tmp_path)
    loc.path.mkdir()
    tiles = sample_tiles(TileFormat.PNG, maxzoom=1)
    write_all(loc, tiles, overwrite=True)
    with open_reader(loc) as reader:
        assert dict(reader.iter_tiles()) == tiles


# --- leftovers of interrupted writes --------------------------------------------------------


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _leftover(folder: Path, target: str, tag: str, suffix: str, *, directory: bool) -> Path:
    path = folder / f".{target}.{tag}.{suffix}"
    if directory:
        (path / "3" / "1").mkdir(parents=True)
        (path / "3" / "1" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(4096))
    else:
        path.write_bytes(bytes(4096))
    return path


def test_a_write_removes_the_leftovers_of_dead_writers_only(
    kind: ContainerKind, tmp_path: Path
) -> None:
    loc = location(kind, tmp_path)
    name = loc.path.name
    dead = f"{_host()}.{_dead_pid()}.123"
    directory = kind.is_folder
    stale = [
        _leftover(tmp_path, name, dead, "abcd1234.partial", directory=directory),
        _leftover(tmp_path, name, dead, "abcd1234.partial.data", directory=False),
        _leftover(tmp_path, name, dead, "abcd1234.partial-journal", directory=False),
        _leftover(tmp_path, name, dead, "efgh5678.old", directory=directory),
    ]
    alive = _leftover(
        tmp_path, name, f"{_host()}.{os.getpid()}.0", "live0000.partial", directory=directory
    )
    # another destination's leftovers, whose name starts like this one's
    other = _leftover(tmp_path, f"{name}.b", dead, "abcd1234.partial", directory=False)
    tiles = sample_tiles(TileFormat.PNG, maxzoom=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_all(loc, tiles)
    assert not any(path.exists() for path in stale)
    assert alive.exists()
    assert other.exists()
    assert listing(tmp_path) == {name, alive.name, other.name}
    with open_reader(loc) as reader:
        assert dict(reader.iter_tiles()) == tiles


def test_leftovers_it_cannot_attribute_are_named_with_the_command_removing_them(
    kind: ContainerKind, tmp_path: Path
) -> None:
    loc = location(kind, tmp_path)
    name = loc.path.name
    directory = kind.is_folder
    # as offmaps named them before names recorded the process, and another host's
    legacy_old = tmp_path / f".{name}.old"
    (legacy_old / "3").mkdir(parents=True)
    (legacy_old / "3" / "notes.txt").write_text("not empty")
    legacy = tmp_path / f".{name}.x8d9f0a1.partial"
    legacy.write_bytes(b"")
    foreign = _leftover(tmp_path, name, "0badc0de.4242.77", "abcd1234.partial", directory=directory)
    tiles = sample_tiles(TileFormat.PNG, maxzoom=1)
    with pytest.warns(LeftoversWarning, match="rm -rf --") as caught:
        write_all(loc, tiles)
    message = str(caught[0].message)
    for kept in (legacy_old, legacy, foreign):
        assert kept.exists()
        assert str(kept) in message
    # the stale .NAME.old of an older offmaps no longer blocks replacing the container
    with pytest.warns(LeftoversWarning):
        write_all(loc, tiles, overwrite=True)
    assert listing(tmp_path) == {name, legacy_old.name, legacy.name, foreign.name}
