"""Conversion between every pair of containers, clipping, and the CLI around it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from offmaps.cli import main
from offmaps.containers import (
    ContainerKind,
    Location,
    TilesetMetadata,
    convert,
    open_reader,
    open_writer,
)
from offmaps.errors import ContainerCorruptError, DestinationExistsError, InvalidZoomError
from offmaps.tiling import AreaOfInterest
from offmaps.types import Tile, TileCompression, TileFormat, ZoomRange
from tests.tilegen import sample_tiles

KINDS = list(ContainerKind)


def location(kind: ContainerKind, folder: Path, name: str) -> Location:
    return Location(kind, folder / (name if kind.is_folder else f"{name}.{kind.value}"))


def make_source(
    kind: ContainerKind, folder: Path, tiles: dict[Tile, bytes], meta: TilesetMetadata
) -> Location:
    loc = location(kind, folder, "source")
    with open_writer(loc, meta) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    return loc


@pytest.mark.parametrize("source_kind", KINDS, ids=[k.value for k in KINDS])
@pytest.mark.parametrize("target_kind", KINDS, ids=[k.value for k in KINDS])
def test_every_pair_converts_byte_for_byte(
    source_kind: ContainerKind, target_kind: ContainerKind, tmp_path: Path
) -> None:
    tiles = sample_tiles(TileFormat.MVT, TileCompression.GZIP)
    meta = TilesetMetadata(
        tile_format=TileFormat.MVT,
        tile_compression=TileCompression.GZIP,
        name="pairs",
        attribution="© test",
        vector_layers=[{"id": "points", "fields": {"z": "Number"}}],
    )
    source = make_source(source_kind, tmp_path, tiles, meta)
    target = location(target_kind, tmp_path, "target")
    with open_reader(source) as reader:
        result = convert(reader, target)
    assert (result.read, result.written) == (len(tiles), len(tiles))
    with open_reader(target) as reader:
        assert dict(reader.iter_tiles()) == tiles
        assert reader.metadata.tile_format is TileFormat.MVT
        assert reader.metadata.tile_compression is TileCompression.GZIP
        assert reader.metadata.name == "pairs"
        assert reader.metadata.attribution == "© test"
        assert (reader.metadata.minzoom, reader.metadata.maxzoom) == (0, 3)
        assert reader.verify() == []


def test_zooms_and_aoi_clip_the_conversion(tmp_path: Path) -> None:
    tiles = sample_tiles(TileFormat.PNG, maxzoom=3)
    source = make_source(
        ContainerKind.MBTILES, tmp_path, tiles, TilesetMetadata(tile_format=TileFormat.PNG)
    )
    target = location(ContainerKind.PMTILES, tmp_path, "target")
    # the north-west quarter of the world, away from the equator and the meridian
    aoi = AreaOfInterest.from_bbox(-170, 10, -10, 80)
    with open_reader(source) as reader:
        result = convert(reader, target, zooms=ZoomRange(1, 2), aoi=aoi)
    with open_reader(target) as reader:
        got = set(dict(reader.iter_tiles()))
        assert (reader.metadata.minzoom, reader.metadata.maxzoom) == (1, 2)
    assert got == {Tile(0, 0, 1), Tile(0, 0, 2), Tile(1, 0, 2), Tile(0, 1, 2), Tile(1, 1, 2)}
    assert result.written == len(got)


def test_zooms_outside_the_tms_are_refused_before_writing(tmp_path: Path) -> None:
    source = make_source(
        ContainerKind.MBTILES,
        tmp_path,
        sample_tiles(TileFormat.PNG),
        TilesetMetadata(tile_format=TileFormat.PNG),
    )
    with open_reader(source) as reader, pytest.raises(InvalidZoomError):
        convert(reader, location(ContainerKind.GEOPACKAGE, tmp_path, "t"), zooms=ZoomRange(0, 40))
    assert not (tmp_path / "t.gpkg").exists()


def test_a_corrupt_source_leaves_no_destination(tmp_path: Path) -> None:
    tiles = sample_tiles(TileFormat.PNG, maxzoom=5, duplicate=False)
    source = make_source(
        ContainerKind.ESRI_COMPACT, tmp_path, tiles, TilesetMetadata(tile_format=TileFormat.PNG)
    )
    bundle = tmp_path / "source" / "_alllayers" / "L05" / "R0000C0000.bundle"
    bundle.write_bytes(bundle.read_bytes()[: 64 + 131072 + 10])  # cut inside the tile data
    target = location(ContainerKind.MBTILES, tmp_path, "target")
    with open_reader(source) as reader, pytest.raises(ContainerCorruptError, match="R0000C0000"):
        convert(reader, target)
    assert not target.path.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["source"]


def test_existing_destination_is_kept_on_failure_even_with_overwrite(tmp_path: Path) -> None:
    tiles = sample_tiles(TileFormat.PNG)
    source = make_source(
        ContainerKind.XYZ, tmp_path, tiles, TilesetMetadata(tile_format=TileFormat.PNG)
    )
    target = tmp_path / "target.pmtiles"
    target.write_bytes(b"precious")
    with open_reader(source) as reader, pytest.raises(DestinationExistsError):
        convert(reader, str(target))
    # a tile that a PMTiles writer refuses (empty) makes the conversion fail midway
    (tmp_path / "source" / "3" / "1" / "1.png").write_bytes(b"")
    with open_reader(source) as reader, pytest.raises(Exception):  # noqa: B017, PT011
        convert(reader, str(target), overwrite=True)
    assert target.read_bytes() == b"precious"


def test_cli_convert_info_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiles = sample_tiles(TileFormat.WEBP)
    source = make_source(
        ContainerKind.GEOPACKAGE,
        tmp_path,
        tiles,
        TilesetMetadata(tile_format=TileFormat.WEBP, name="w"),
    )
    target = tmp_path / "out.pmtiles"
    assert main(["tiles", "convert", str(source.path), str(target), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "source": str(source.path),
        "destination": str(target),
        "read": len(tiles),
        "written": len(tiles),
    }
    assert main(["tiles", "info", str(target), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "pmtiles"
    assert info["tile_format"] == "webp"
    assert info["tile_count"] == len(tiles)
    assert (info["minzoom"], info["maxzoom"]) == (0, 3)
    assert info["tms"] == "WebMercatorQuad"
    assert main(["tiles", "verify", str(target)]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")
    assert main(["tiles", "convert", str(source.path), str(target)]) == 1
    assert "DestinationExistsError" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".mbtiles", ".gpkg", ".pmtiles"])
def test_cli_on_corrupt_archives_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    archive = tmp_path / f"bad{suffix}"
    archive.write_bytes(b"this is not a tile archive at all" * 10)
    for command in ("info", "verify"):
        code = main(["tiles", command, str(archive)])
        err = capsys.readouterr().err
        assert code == 1
        assert str(archive) in err
        assert "Traceback" not in err


def test_cli_verify_names_the_damaged_tile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiles = sample_tiles(TileFormat.PNG)
    source = make_source(
        ContainerKind.PMTILES, tmp_path, tiles, TilesetMetadata(tile_format=TileFormat.PNG)
    )
    data = bytearray(source.path.read_bytes())
    data[-5:] = b"\x00" * 5  # the end of the last tile (or metadata): damaged either way
    truncated = tmp_path / "cut.pmtiles"
    truncated.write_bytes(bytes(data[: len(data) // 2]))
    code = main(["tiles", "verify", str(truncated)])
    err = capsys.readouterr().err
    assert code == 1
    assert "cut.pmtiles" in err
    assert "byte" in err
