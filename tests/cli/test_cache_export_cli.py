"""``offmaps cache export`` of local containers: clipped, limited, one line on bad input."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from offmaps.cli import main
from offmaps.cli.cache import EXPORT_TILE_LIMIT
from offmaps.containers import TilesetMetadata, open_reader, open_writer
from offmaps.containers.export import DEFAULT_EXPORT_TILE_LIMIT
from offmaps.types import Tile, TileFormat
from tests.containers.test_export import LEVEL2, image

# tiles 2/1/* and 2/2/* are cut (their edges: lon -90, 0, 90), 2/0/* and 2/3/* out; 2 by 4 tiles
BBOX = "-60,-80,60,80"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def source(tmp_path: Path) -> str:
    path = str(tmp_path / "s.mbtiles")
    with open_writer(path, TilesetMetadata(TileFormat.PNG)) as writer:
        for tile in LEVEL2:
            writer.write_tile(tile, image(tile, TileFormat.PNG))
    return path


def test_export_prints_the_documented_json(
    source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = f"esri-compact:{tmp_path / 'c'}"
    code, out, err = run(capsys, "cache", "export", source, dst, "--bbox", BBOX, "--json")
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result == {
        "source": source,
        "destination": dst,
        "tiles": 8,
        "tile_format": "png",
        "reencoded": 0,
        "read": 4,
        "written": 4,
        "copied": 0,
        "clipped": 4,
        "left_out": 0,
        "failures": 0,
        "failed": [],
    }
    assert (tmp_path / "c" / "conf.xml").is_file()
    with open_reader(dst) as reader:
        assert sorted(t for t, _ in reader.iter_tiles()) == sorted(
            Tile(x, y, 2) for x in (1, 2) for y in (1, 2)
        )


def test_the_tile_limit_is_one_line_and_no_file(
    source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = tmp_path / "d.gpkg"
    code, out, err = run(
        capsys, "cache", "export", source, str(dst), "--bbox", BBOX, "--max-tiles", "7"
    )
    assert code == 1
    assert out == ""
    assert err.startswith("TileLimitError: the export covers 8 tiles, more than the limit of 7")
    assert err.count("\n") == 1
    assert not dst.exists()
    code, _, err = run(capsys, "cache", "export", source, str(dst), "--bbox", BBOX, "--zooms", "2")
    assert code == 0, err
    assert "4 tiles written" in err


def test_bad_input_is_one_line(
    source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = str(tmp_path / "d.mbtiles")
    cases = [
        (("x.zip", dst), "UnknownContainerError: "),
        ((source, str(tmp_path / "d.zip")), "UnknownContainerError: "),
        ((source, dst, "--bbox", "10,-80,20,-70"), "InvalidAOIError: "),
        ((source, source), "DestinationExistsError: "),
        ((source, dst, "--zooms", "5-3"), "InvalidZoomError: "),
    ]
    for args, start in cases:
        code, _, err = run(capsys, "cache", "export", *args)
        assert code == 1, args
        assert err.startswith(start), (args, err)
        assert err.count("\n") == 1, err
    code, _, err = run(capsys, "cache", "export", source, dst, "--background", "red")
    assert code == 2
    assert "#RRGGBB or R,G,B" in err
    assert not Path(dst).exists()


def test_overwrite_tiles_replaces_the_destination(
    source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = str(tmp_path / "d.mbtiles")
    assert run(capsys, "cache", "export", source, dst, "--zooms", "2")[0] == 0
    code, _, err = run(
        capsys, "cache", "export", source, dst, "--bbox", BBOX, "--overwrite-tiles", "--aoi-crs",
        "EPSG:4326", "--background", "0,90,200",
    )  # fmt: skip
    assert code == 0, err
    assert "0 copied, 4 clipped" in err


def test_the_cli_limit_is_the_librarys() -> None:
    assert EXPORT_TILE_LIMIT == DEFAULT_EXPORT_TILE_LIMIT


def test_other_cache_commands_load_no_raster_library() -> None:
    code = (
        "import sys\n"
        "from offmaps.cli import main\n"
        "try:\n    main(['cache', 'list', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted({'rasterio', 'PIL', 'offmaps.containers.clip'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "[]"


def test_a_data_folders_cache_exports_as_its_archive_does(
    source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    Path(data).mkdir()
    code, _, err = run(capsys, "cache", "create", "c", "--archive", source, "--data", data)
    assert code == 0, err
    area = ("--bbox", "-20,-80,120,80")  # 2/1/* and 2/3/* cut, 2/2/* inside
    code, _, err = run(capsys, "cache", "seed", "c", *area, "--zooms", "2", "--data", data)
    assert code == 0, err
    from_cache, from_archive = str(tmp_path / "c.mbtiles"), str(tmp_path / "a.mbtiles")
    code, out, err = run(
        capsys, "cache", "export", "c", from_cache, *area, "--data", data, "--json"
    )
    assert code == 0, err
    assert json.loads(out)["copied"] == 2
    assert run(capsys, "cache", "export", source, from_archive, *area)[0] == 0
    with open_reader(from_cache) as cached, open_reader(from_archive) as archived:
        assert dict(cached.iter_tiles()) == dict(archived.iter_tiles())
    # a blob whose bytes changed since they were stored is named and left out
    with sqlite3.connect(Path(data) / "tile-caches" / "blobs.sqlite") as db:
        db.execute("UPDATE blobs SET data = x'00' WHERE rowid = (SELECT min(rowid) FROM blobs)")
    code, out, err = run(
        capsys, "cache", "export", "c", str(tmp_path / "d.mbtiles"), *area, "--data", data,
        "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["failures"] == 1
    assert "do not hash to" in result["failed"][0]["error"]
    assert result["written"] == 5


def test_a_data_folders_cache_needs_an_area_and_a_name_it_has(
    source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path)
    assert run(capsys, "cache", "create", "c", "--archive", source, "--data", data)[0] == 0
    dst = str(tmp_path / "d.mbtiles")
    code, _, err = run(capsys, "cache", "export", "c", dst, "--data", data)
    assert (code, err.split(":")[0]) == (1, "InvalidAOIError")
    code, _, err = run(capsys, "cache", "export", "nope", dst, "--bbox", BBOX, "--data", data)
    assert (code, err.split(":")[0]) == (1, "CacheNotFoundError")
    code, _, err = run(
        capsys, "cache", "export", "c", dst, "--bbox", BBOX, "--zooms", "2", "--data", data
    )
    assert (code, err.split(":")[0]) == (1, "ContainerError")  # nothing seeded yet
    assert "nothing to export" in err
