from __future__ import annotations

import json
from pathlib import Path

import pytest

from offmaps.cli import main
from offmaps.tiling import get_tms

HELSINKI = "24.935,60.164,24.953,60.179"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_count_prints_the_documented_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tiles", "count", "--bbox", HELSINKI, "--zooms", "12-16", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["tms"] == "WebMercatorQuad"
    assert result["zooms"] == {"12": 1, "13": 2, "14": 4, "15": 9, "16": 24}
    assert result["total"] == 40
    assert result["total_bytes"] == sum(result["bytes"].values())


def test_count_reads_an_aoi_file_in_another_crs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(
        json.dumps(
            {
                "type": "Polygon",
                "coordinates": [
                    [[385000, 6671000], [386500, 6671000], [386500, 6672500], [385000, 6671000]]
                ],
            }
        )
    )
    code, out, _ = run(
        capsys,
        "tiles",
        "count",
        "--aoi",
        str(aoi),
        "--aoi-crs",
        "EPSG:3067",
        "--zooms",
        "14",
        "--json",
    )
    assert code == 0
    assert json.loads(out)["total"] >= 1


def test_count_by_scale_range(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "tiles",
        "count",
        "--bbox",
        HELSINKI,
        "--min-scale",
        "100000",
        "--max-scale",
        "5000",
        "--json",
    )
    assert code == 0
    assert list(json.loads(out)["zooms"]) == ["13", "14", "15", "16"]


def test_count_with_another_tms(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "tiles",
        "count",
        "--bbox",
        "-10,-10,10,10",
        "--zooms",
        "0-2",
        "--tms",
        "WorldCRS84Quad",
        "--json",
    )
    assert code == 0
    assert json.loads(out)["zooms"] == {"0": 2, "1": 4, "2": 4}


def test_count_human_output_has_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tiles", "count", "--bbox", HELSINKI, "--zooms", "15-16")
    assert code == 0
    assert "33" in out.splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bbox", "1,2,3", "--zooms", "1"], "InvalidAOIError: --bbox must be four numbers"),
        (["--bbox", "a,b,c,d", "--zooms", "1"], "InvalidAOIError: --bbox must be four numbers"),
        (["--bbox", HELSINKI, "--zooms", "0-30"], "InvalidZoomError: zoom 30 is outside"),
        (["--bbox", HELSINKI, "--zooms", "5-3"], "InvalidZoomError: zoom range '5-3' is inverted"),
        (["--bbox", HELSINKI, "--zooms", "x"], "InvalidZoomError: zooms must look like"),
        (["--bbox", HELSINKI, "--zooms", "1", "--tms", "Nope"], "UnknownTileMatrixSetError"),
        (["--bbox", HELSINKI, "--zooms", "1", "--aoi-crs", "EPSG:0"], "UnknownCRSError"),
        (["--bbox", "0,86,1,89", "--zooms", "1"], "InvalidAOIError: the area of interest lies"),
        (["--bbox", "0,0,1,1", "--zooms", "1", "--min-scale", "5"], "Error: give --zooms or"),
        (["--bbox", "0,0,1,1"], "Error: give --zooms"),
        (["--zooms", "1"], "Error: give the area"),
    ],
)
def test_count_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run(capsys, "tiles", "count", *args)
    assert code in (1, 2)
    assert out == ""
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{", "InvalidAOIError: "),
        (b'{"type": "Point", "coordinates": [1, 2]}', "must be a Polygon"),
        (b"\xff\xfe\x00", "not JSON"),
    ],
)
def test_count_bad_aoi_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, message: str
) -> None:
    aoi = tmp_path / "aoi.geojson"
    aoi.write_bytes(content)
    code, _, err = run(capsys, "tiles", "count", "--aoi", str(aoi), "--zooms", "3")
    assert code == 1
    assert f"{aoi}: " in err
    assert message in err


def test_count_repairs_a_bowtie_with_a_one_line_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(
        '{"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}'
    )
    code, out, err = run(capsys, "tiles", "count", "--aoi", str(aoi), "--zooms", "3", "--json")
    assert code == 0
    assert json.loads(out)["total"] > 0
    assert err.startswith("Warning: the area of interest was not a valid polygon")


def test_count_missing_aoi_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "tiles", "count", "--aoi", str(tmp_path / "no.json"), "--zooms", "1")
    assert code == 1
    assert "cannot read" in err


def test_unknown_container_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "tiles", "info", str(tmp_path / "x.zip"))
    assert code == 1
    assert err.startswith("UnknownContainerError: ")
    assert err.count("\n") == 1


def test_missing_source_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "tiles", "verify", str(tmp_path / "x.mbtiles"))
    assert code == 1
    assert "does not exist" in err


def test_verbose_prints_the_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "-v", "tiles", "info", str(tmp_path / "x.zip"))
    assert code == 1
    assert "Traceback" in err


def test_count_with_a_custom_tms_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    grid = tmp_path / "grid.json"
    grid.write_text(get_tms("WorldCRS84Quad").model_dump_json(exclude_none=True))
    code, out, _ = run(
        capsys,
        "tiles",
        "count",
        "--bbox",
        "-10,-10,10,10",
        "--zooms",
        "1",
        "--tms",
        str(grid),
        "--json",
    )
    assert code == 0
    assert json.loads(out)["zooms"] == {"1": 4}


@pytest.mark.parametrize("content", [None, "{", '{"id": "x"}'])
def test_count_with_a_bad_tms_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None
) -> None:
    grid = tmp_path / "grid.json"
    if content is not None:
        grid.write_text(content)
    code, _, err = run(
        capsys, "tiles", "count", "--bbox", HELSINKI, "--zooms", "1", "--tms", str(grid)
    )
    assert code == 1
    assert err.startswith("UnknownTileMatrixSetError: ")
