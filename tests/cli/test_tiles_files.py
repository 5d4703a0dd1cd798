"""``offmaps tiles`` at the edges of the file system: hostile destinations, writers killed with
``kill -9``, damaged archives and skipped entries, each a one-line message and nothing left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import offmaps
from offmaps.cli import main
from offmaps.containers import ContainerKind, Location, TilesetMetadata, open_reader, open_writer
from offmaps.types import Tile, TileFormat
from tests.tilegen import sample_tiles

PNG = TilesetMetadata(tile_format=TileFormat.PNG, name="t")
MANY = 4_000  # tiles in the source of the kill tests: enough for a write to be caught mid-way


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, name: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{name}: "), err
    assert "Traceback" not in err
    return lines[0]


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A small MBTiles file, in a folder of its own."""
    folder = tmp_path / "src"
    folder.mkdir()
    path = folder / "small.mbtiles"
    with open_writer(path, PNG) as writer:
        for tile, data in sample_tiles(TileFormat.PNG, maxzoom=2).items():
            writer.write_tile(tile, data)
    return path


# --- hostile destinations -------------------------------------------------------------------


@pytest.mark.parametrize("dst", ["xyz:.", "xyz:..", "xyz:/", "tms:.", "esri-compact:.."])
def test_convert_to_dot_dotdot_or_root_is_one_line_and_leaves_nothing(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    source: Path,
    monkeypatch: pytest.MonkeyPatch,
    dst: str,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    root_before = listing(Path("/"))
    code, _, err = run(capsys, "tiles", "convert", str(source), dst, "--overwrite")
    assert code == 1
    assert "never replaced" in one_line_error(err, "DestinationExistsError")
    assert listing(work) == set()
    assert listing(tmp_path) == {"src", "work"}
    assert listing(Path("/")) == root_before


def test_convert_over_a_folder_with_user_files_refuses_and_names_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: Path
) -> None:
    out = tmp_path / "out"
    assert run(capsys, "tiles", "convert", str(source), f"xyz:{out}")[0] == 0
    (out / "notes.txt").write_text("a week of field notes")
    code, _, err = run(capsys, "tiles", "convert", str(source), f"xyz:{out}", "--overwrite")
    assert code == 1
    assert "notes.txt" in one_line_error(err, "DestinationExistsError")
    assert (out / "notes.txt").read_text() == "a week of field notes"
    assert listing(tmp_path) == {"src", "out"}


def test_convert_over_a_symlink_to_elsewhere_refuses(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "thesis.tex").write_text("chapter 1")
    link = tmp_path / "tiles"
    link.symlink_to(elsewhere)
    for dst in (f"xyz:{link}", str(tmp_path / "tiles.mbtiles")):
        if not dst.startswith("xyz:"):
            Path(dst).symlink_to(elsewhere / "thesis.tex")
        code, _, err = run(capsys, "tiles", "convert", str(source), dst, "--overwrite")
        assert code == 1
        assert "symbolic link" in one_line_error(err, "DestinationExistsError")
    assert (elsewhere / "thesis.tex").read_text() == "chapter 1"
    assert listing(elsewhere) == {"thesis.tex"}
    assert listing(tmp_path) == {"src", "elsewhere", "tiles", "tiles.mbtiles"}


def test_convert_to_a_file_where_a_folder_is_expected_refuses(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: Path
) -> None:
    (tmp_path / "out").write_text("a file")
    (tmp_path / "out.pmtiles").mkdir()
    for dst, says in (
        (f"xyz:{tmp_path / 'out'}", "is a file"),
        (f"{tmp_path}/out.pmtiles", "is a folder"),
    ):
        code, _, err = run(capsys, "tiles", "convert", str(source), dst, "--overwrite")
        assert code == 1
        assert says in one_line_error(err, "DestinationExistsError")
    assert (tmp_path / "out").read_text() == "a file"
    assert listing(tmp_path) == {"src", "out", "out.pmtiles"}


# --- kill -9 in the middle of a write -------------------------------------------------------


def _many_tiles(path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n"
    with open_writer(path, PNG) as writer:
        for i in range(MANY):
            writer.write_tile(Tile(i % 256, i // 256, 8), png + i.to_bytes(4, "big") + bytes(64))


def _kill_mid_write(src: Path, dst: str, target: Path, *extra: str) -> None:
    """Start ``offmaps tiles convert SRC DST`` in a process and SIGKILL it once its hidden
    partial beside ``target`` exists."""
    env = {**os.environ, "PYTHONPATH": str(Path(offmaps.__file__).parents[1])}
    parent, name = target.parent, target.name
    before = listing(parent)
    process = subprocess.Popen(
        [sys.executable, "-m", "offmaps.cli", "tiles", "convert", str(src), dst, *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        while process.poll() is None:
            partial = [n for n in listing(parent) - before if n.startswith(f".{name}.")]
            if partial:
                break
            time.sleep(0.002)
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(
                f"the conversion ended (exit {process.returncode}) before it could be killed "
                f"mid-write: make the source larger. stderr: {err.decode()}"
            )
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.parametrize(
    ("dst", "kills"), [("xyz:out/tiles", 2), ("out/tiles.mbtiles", 1), ("out/tiles.pmtiles", 1)]
)
def test_kill_9_mid_write_then_a_second_run_leaves_nothing_behind(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dst: str,
    kills: int,
) -> None:
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "many.mbtiles"
    _many_tiles(src)
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / (dst.partition(":")[2] or dst)
    for _ in range(kills):
        _kill_mid_write(src, dst, target)
    assert not target.exists()
    left = listing(out)
    assert left, "the killed writers left nothing to clean: the test proves nothing"
    assert all(name.startswith(f".{target.name}.") for name in left), left
    code, _, err = run(capsys, "tiles", "convert", str(src), dst)
    assert code == 0, err
    assert "Warning" not in err
    assert listing(out) == {target.name}
    with open_reader(Location(ContainerKind.XYZ, target) if ":" in dst else target) as reader:
        assert reader.count_tiles() == MANY


def test_kill_9_while_overwriting_keeps_the_old_folder_and_a_rerun_cleans_up(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: Path
) -> None:
    src = tmp_path / "many.mbtiles"
    _many_tiles(src)
    out = tmp_path / "out"
    out.mkdir()
    dst = f"xyz:{out / 'tiles'}"
    assert run(capsys, "tiles", "convert", str(source), dst)[0] == 0
    with open_reader(Location(ContainerKind.XYZ, out / "tiles")) as reader:
        first = dict(reader.iter_tiles())
    _kill_mid_write(src, dst, out / "tiles", "--overwrite")
    assert len(listing(out)) > 1
    with open_reader(Location(ContainerKind.XYZ, out / "tiles")) as reader:
        assert dict(reader.iter_tiles()) == first
    code, _, err = run(capsys, "tiles", "convert", str(src), dst, "--overwrite")
    assert code == 0, err
    assert listing(out) == {"tiles"}


# --- damaged archives and skipped entries ---------------------------------------------------


def _damage_a_tile_page(path: Path, tile_data: bytes) -> None:
    """Overwrite the 4 KiB page holding ``tile_data`` (a page info never needs to read)."""
    data = bytearray(path.read_bytes())
    at = data.find(tile_data)
    assert at > 4096
    page = at - at % 4096
    data[page : page + 4096] = b"\xff" * 4096
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("suffix", [".mbtiles", ".gpkg"])
def test_info_on_an_archive_with_a_damaged_page_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"damaged{suffix}"
    tiles = sample_tiles(TileFormat.PNG, maxzoom=4, duplicate=False)
    with open_writer(path, PNG) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    _damage_a_tile_page(path, list(tiles.values())[len(tiles) // 2])
    code, out, err = run(capsys, "tiles", "info", str(path))
    assert code == 1
    line = one_line_error(err, "ContainerCorruptError")
    assert str(path) in line
    assert "offmaps tiles verify" in line
    assert out == ""


def test_convert_from_xyz_says_what_it_skipped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    tiles = sample_tiles(TileFormat.PNG, maxzoom=2)
    with open_writer(Location(ContainerKind.XYZ, folder), PNG) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    outside = tmp_path / "secret.png"
    outside.write_bytes(tiles[Tile(0, 0, 0)])
    (folder / "2" / "0" / "9.png").symlink_to(outside)
    (folder / "README").write_text("hello")
    code, out, err = run(
        capsys, "tiles", "convert", f"xyz:{folder}", str(tmp_path / "o.mbtiles"), "--json"
    )
    assert code == 0
    assert f'"written": {len(tiles)}' in out
    warning = [line for line in err.splitlines() if line.startswith("Warning:")]
    assert len(warning) == 1, err
    assert "skipped 2 entries" in warning[0]
    assert "2/0/9.png (not a regular file" in warning[0]
    assert "README" in warning[0]


def test_convert_names_leftovers_it_cannot_remove_with_the_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: Path
) -> None:
    legacy = tmp_path / ".out.mbtiles.k2j4h5g6.partial"
    legacy.write_bytes(bytes(1000))
    code, _, err = run(capsys, "tiles", "convert", str(source), str(tmp_path / "out.mbtiles"))
    assert code == 0
    warning = [line for line in err.splitlines() if line.startswith("Warning:")]
    assert len(warning) == 1, err
    assert f"rm -rf -- {legacy}" in warning[0]
