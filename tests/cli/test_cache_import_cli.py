"""``offmaps cache import SRC NAME --data DIR``: merged, overwritten, one line on bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from offmaps.cli import main
from offmaps.containers import TilesetMetadata
from offmaps.types import Tile, TileFormat
from tests.cache.test_import import TILES, archive, basemap, overlay
from tests.tilegen import make_tile


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """A data folder with cache ``c`` (PNG, WebMercatorQuad), empty."""
    base = archive(tmp_path / "base.mbtiles", {tile: basemap(tile) for tile in TILES})
    folder = tmp_path / "data"
    folder.mkdir()
    assert run(capsys, "cache", "create", "c", "--archive", base, "--data", str(folder))[0] == 0
    return str(folder)


def test_import_then_merge_then_overwrite(
    data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = str(tmp_path / "base.mbtiles")
    code, out, err = run(capsys, "cache", "import", base, "c", "--data", data, "--json")
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert (result["new"], result["merged"], result["imported"], result["failed"]) == (6, 0, 6, [])
    top = archive(
        tmp_path / "o.mbtiles", {tile: overlay(slice(0, 8), (255, 0, 0)) for tile in TILES}
    )
    code, out, _ = run(capsys, "cache", "import", top, "c", "--data", data, "--json")
    assert (code, json.loads(out)["merged"], json.loads(out)["changed"]) == (0, 6, 6)
    code, out, _ = run(capsys, "cache", "import", top, "c", "--data", data, "--json")
    assert (code, json.loads(out)["changed"]) == (0, 0)  # a rerun changes nothing
    code, _, err = run(
        capsys, "cache", "import", top, "c", "--data", data, "--overwrite-tiles", "--zooms", "3-3"
    )
    assert code == 0
    assert "6 tiles imported into c (0 new, 0 merged, 6 overwritten; 0 clipped" in err


def test_an_area_clips_the_import(
    data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = str(tmp_path / "base.mbtiles")
    # level 3 columns 2-3 lie between -90 and 0 degrees of longitude: column 3 is cut at -22.5,
    # and every tile by the parallels at 60 degrees
    args = ("cache", "import", base, "c", "--data", data, "--bbox", "-80,-60,-22.5,60", "--json")
    code, out, _ = run(capsys, *args)
    result = json.loads(out)
    assert (code, result["read"], result["new"], result["clipped"]) == (0, 4, 4, 4)


def test_a_corrupt_tile_is_listed_the_rest_imported_exit_1(
    data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiles = {tile: basemap(tile) for tile in TILES}
    tiles[Tile(2, 2, 3)] = b"\xff\xd8\xff not a png"
    src = archive(tmp_path / "bad.mbtiles", tiles)
    code, _, err = run(capsys, "cache", "import", src, "c", "--data", data)
    assert code == 1
    assert "failed: tile 3/2/2 should be png but its bytes are jpg" in err
    assert "5 tiles imported into c (5 new" in err
    assert err.splitlines()[-1].startswith("CacheError: 1 tiles of ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope",), "CacheNotFoundError"),
        (("c", "--bbox", "100,10,120,20"), "InvalidAOIError: the area of interest does not meet"),
        (("c", "--zooms", "18-21"), "CacheError: cache 'c' holds levels"),
        (("c", "--bbox", "1,2"), "W,S,E,N"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(
    data: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    meta = TilesetMetadata(TileFormat.PNG, bounds=None)
    src = archive(tmp_path / "s.mbtiles", {tile: basemap(tile) for tile in TILES}, meta)
    code, out, err = run(capsys, "cache", "import", src, *args, "--data", data)
    assert (code, out) == (1, "")
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_a_jpeg_source_into_a_png_cache_names_both_formats(
    data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tile = TILES[0]
    meta = TilesetMetadata(TileFormat.JPEG)
    src = archive(tmp_path / "j.mbtiles", {tile: make_tile(tile, TileFormat.JPEG)}, meta)
    code, _, err = run(capsys, "cache", "import", src, "c", "--data", data)
    assert code == 1
    assert err.strip() == (
        "CacheError: the source's tiles are jpg, cache 'c' holds png tiles: an import keeps "
        "the cache's format"
    )


def test_a_stopped_import_run_again_skips_what_it_stored_unless_restarted(
    data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import offmaps.cache.imports as imports_module  # noqa: PLC0415
    import offmaps.containers.export as export_module  # noqa: PLC0415

    monkeypatch.setattr(imports_module, "IMPORT_BATCH", 2)
    monkeypatch.setattr(export_module, "_PROGRESS_STEP", 2)
    base = str(tmp_path / "base.mbtiles")
    assert run(capsys, "cache", "import", base, "c", "--data", data)[0] == 0
    top = archive(
        tmp_path / "o.mbtiles", {tile: overlay(slice(0, 8), (255, 0, 0)) for tile in TILES}
    )
    calls = [0]
    real = imports_module.import_tiles

    def stopped(*args: object, **options: Any) -> object:
        def progress(count: int) -> None:
            calls[0] += count
            if calls[0] >= 4:
                raise KeyboardInterrupt  # the user's Ctrl-C, after two batches

        return real(*args, **{**options, "progress": progress})  # type: ignore[arg-type]

    monkeypatch.setattr(imports_module, "import_tiles", stopped)
    assert main(["cache", "import", top, "c", "--data", data]) != 0  # click: "Aborted!"
    monkeypatch.setattr(imports_module, "import_tiles", real)
    capsys.readouterr()
    code, _, err = run(capsys, "cache", "import", top, "c", "--data", data)
    assert code == 0, err
    assert "2 merged" in err
    assert "4 stored by an earlier run" in err
    code, out, _ = run(capsys, "cache", "import", top, "c", "--data", data, "--restart", "--json")
    assert (code, json.loads(out)["skipped"], json.loads(out)["merged"]) == (0, 0, 6)


def test_a_mixed_cache_is_created_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = archive(tmp_path / "base.mbtiles", {tile: basemap(tile) for tile in TILES})
    folder = str(tmp_path / "data")
    Path(folder).mkdir()
    args = ("--archive", base, "--format", "mixed", "--data", folder, "--json")
    code, out, err = run(capsys, "cache", "create", "m", *args)
    assert code == 0, err
    assert (json.loads(out)["format"], json.loads(out)["mixed"]) == ("mixed", True)
