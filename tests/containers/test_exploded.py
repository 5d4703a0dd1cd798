"""Exploded folders (XYZ, TMS, Esri exploded): layouts on disk, metadata, hostile folders."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import morecantile
import pytest

from offmaps.containers.base import EntriesSkippedWarning, TilesetMetadata, web_mercator_quad
from offmaps.containers.exploded import (
    EsriExplodedReader,
    EsriExplodedWriter,
    ExplodedReader,
    ExplodedWriter,
    TMSFolderReader,
    TMSFolderWriter,
    XYZFolderReader,
    XYZFolderWriter,
    flip_row,
)
from offmaps.errors import ContainerCorruptError, ContainerError
from offmaps.types import BBox, Tile, TileCompression, TileFormat
from tests.tilegen import make_tile, sample_tiles

PNG = TilesetMetadata(tile_format=TileFormat.PNG, name="t")


def files_below(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def write(
    writer_class: type[ExplodedWriter],
    folder: Path,
    tiles: dict[Tile, bytes],
    meta: TilesetMetadata = PNG,
) -> None:
    with writer_class(folder, meta) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)


@pytest.mark.parametrize(
    ("writer_class", "expected", "beside"),
    [
        (XYZFolderWriter, "4/10/11.png", set()),
        (TMSFolderWriter, "4/10/4.png", set()),
        (EsriExplodedWriter, "_alllayers/L04/R0000000b/C0000000a.png", {"conf.xml", "conf.cdi"}),
    ],
)
def test_tile_lands_at_the_layouts_path(
    writer_class: type[ExplodedWriter], expected: str, beside: set[str], tmp_path: Path
) -> None:
    data = make_tile(Tile(10, 11, 4), TileFormat.PNG)
    write(writer_class, tmp_path / "out", {Tile(10, 11, 4): data})
    assert files_below(tmp_path / "out") == {
        expected,
        "metadata.json",
        "tilematrixset.json",
        *beside,
    }
    assert (tmp_path / "out" / expected).read_bytes() == data


def test_esri_levels_and_rows_are_zero_padded(tmp_path: Path) -> None:
    tiles = {Tile(300, 5, 12): b"\x89PNG\r\n\x1a\na", Tile(0, 0, 0): b"\x89PNG\r\n\x1a\nb"}
    write(EsriExplodedWriter, tmp_path / "out", tiles)
    assert {
        "_alllayers/L12/R00000005/C0000012c.png",
        "_alllayers/L00/R00000000/C00000000.png",
    } <= files_below(tmp_path / "out")


def test_flip_row_counts_rows_from_the_other_edge() -> None:
    wmq = web_mercator_quad()
    assert flip_row(wmq, 4, 11) == 4
    assert flip_row(wmq, 4, flip_row(wmq, 4, 11)) == 11
    assert flip_row(wmq, 0, 0) == 0
    crs84 = morecantile.tms.get("WorldCRS84Quad")
    assert flip_row(crs84, 1, 0) == 1  # 4 x 2 tiles at level 1


def test_tms_folder_made_by_hand_reads_with_rows_flipped(tmp_path: Path) -> None:
    folder = tmp_path / "tms"
    (folder / "1" / "0").mkdir(parents=True)
    (folder / "1" / "0" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\ntop-left")
    with TMSFolderReader(folder) as reader:
        assert dict(reader.iter_tiles()) == {Tile(0, 0, 1): b"\x89PNG\r\n\x1a\ntop-left"}
        assert reader.find_tile(Tile(0, 1, 1)) is None


@pytest.mark.parametrize(
    ("writer_class", "reader_class"),
    [
        (XYZFolderWriter, XYZFolderReader),
        (TMSFolderWriter, TMSFolderReader),
        (EsriExplodedWriter, EsriExplodedReader),
    ],
)
def test_iter_tiles_is_lazy_and_in_numeric_order(
    writer_class: type[ExplodedWriter], reader_class: type[ExplodedReader], tmp_path: Path
) -> None:
    tiles = {
        Tile(x, y, 4): make_tile(Tile(x, y, 4), TileFormat.PNG) for x in (2, 10) for y in (9, 1)
    }
    tiles[Tile(0, 0, 0)] = make_tile(Tile(0, 0, 0), TileFormat.PNG)
    write(writer_class, tmp_path / "out", tiles)
    with reader_class(tmp_path / "out") as reader:
        iterator = reader.iter_tiles()
        assert next(iterator)[0] == Tile(0, 0, 0)
        rest = [tile for tile, _ in iterator]
    # Levels, then the middle folder (column, or row for Esri), numerically (10 after 2).
    if reader_class is EsriExplodedReader:
        assert rest == sorted(rest, key=lambda t: (t.y, t.x))
    else:
        assert [t.x for t in rest] == [2, 2, 10, 10]


def test_last_write_of_a_tile_wins(tmp_path: Path) -> None:
    with XYZFolderWriter(tmp_path / "out", PNG) as writer:
        writer.write_tile(Tile(0, 0, 0), b"\x89PNG\r\n\x1a\nfirst")
        writer.write_tile(Tile(0, 0, 0), b"\x89PNG\r\n\x1a\nsecond")
    with XYZFolderReader(tmp_path / "out") as reader:
        assert reader.get_tile(Tile(0, 0, 0)) == b"\x89PNG\r\n\x1a\nsecond"


def test_metadata_round_trips_with_a_non_web_mercator_grid(tmp_path: Path) -> None:
    crs84 = morecantile.tms.get("WorldCRS84Quad")
    meta = TilesetMetadata(
        tile_format=TileFormat.MVT,
        tile_compression=TileCompression.GZIP,
        tms=crs84,
        name="roads",
        description="Roads of somewhere",
        attribution="© OpenStreetMap contributors",
        vector_layers=[{"id": "points", "fields": {"z": "Number"}}],
        extra={"source": "test"},
    )
    tiles = {
        Tile(3, 1, 1): make_tile(Tile(3, 1, 1), TileFormat.MVT, TileCompression.GZIP),
        Tile(0, 0, 0): make_tile(Tile(0, 0, 0), TileFormat.MVT, TileCompression.GZIP),
    }
    write(XYZFolderWriter, tmp_path / "out", tiles, meta)
    document = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert document["format"] == "pbf"
    assert document["tile_compression"] == "gzip"
    assert (tmp_path / "out" / "1" / "3" / "1.pbf").is_file()
    grid = json.loads((tmp_path / "out" / "tilematrixset.json").read_text())
    assert grid["id"] == "WorldCRS84Quad"
    with XYZFolderReader(tmp_path / "out") as reader:
        got = reader.metadata
        assert got.tms == crs84
        assert (got.tile_format, got.tile_compression) == (TileFormat.MVT, TileCompression.GZIP)
        assert (got.name, got.description, got.attribution) == (
            "roads",
            "Roads of somewhere",
            "© OpenStreetMap contributors",
        )
        assert got.vector_layers == meta.vector_layers
        assert got.extra == {"source": "test"}
        assert (got.minzoom, got.maxzoom) == (0, 1)
        assert got.bounds == BBox(90.0, -90.0, 180.0, 0.0)  # tile 1/3/1 of the 4x2 level
        assert got.center == (135.0, -45.0, 0)
        assert dict(reader.iter_tiles()) == tiles
        assert reader.verify() == []


def test_missing_folder_or_a_file_is_a_container_error(tmp_path: Path) -> None:
    with pytest.raises(ContainerError, match="does not exist"):
        XYZFolderReader(tmp_path / "nowhere")
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(ContainerError, match="is a file"):
        XYZFolderReader(tmp_path / "file")


def test_folder_without_tiles_or_metadata_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ContainerError, match=r"no tiles and no metadata\.json"):
        XYZFolderReader(tmp_path)


def test_format_comes_from_the_first_tile_without_metadata(tmp_path: Path) -> None:
    jpeg = tmp_path / "jpeg"
    (jpeg / "0" / "0").mkdir(parents=True)
    (jpeg / "0" / "0" / "0.jpg").write_bytes(make_tile(Tile(0, 0, 0), TileFormat.JPEG))
    with XYZFolderReader(jpeg) as reader:
        assert reader.metadata.tile_format is TileFormat.JPEG
        assert reader.metadata.tms.id == "WebMercatorQuad"
        assert reader.count_tiles() == 1
    mvt = tmp_path / "mvt"
    (mvt / "L00" / "R00000000").mkdir(parents=True)
    gz = make_tile(Tile(0, 0, 0), TileFormat.MVT, TileCompression.GZIP)
    (mvt / "L00" / "R00000000" / "C00000000.pbf").write_bytes(gz)
    with EsriExplodedReader(mvt) as reader:
        meta = reader.metadata
        assert (meta.tile_format, meta.tile_compression) == (TileFormat.MVT, TileCompression.GZIP)
        assert reader.get_tile(Tile(0, 0, 0)) == gz


def test_esri_reader_accepts_level_folders_without_alllayers(tmp_path: Path) -> None:
    tiles = sample_tiles(TileFormat.PNG, maxzoom=2)
    write(EsriExplodedWriter, tmp_path / "out", tiles)
    cache = tmp_path / "cache"
    cache.mkdir()
    for level in (tmp_path / "out" / "_alllayers").glob("L*"):
        level.rename(cache / level.name)
    for name in ("conf.xml", "metadata.json", "tilematrixset.json"):  # conf.xml says 256 px
        (tmp_path / "out" / name).rename(cache / name)
    with EsriExplodedReader(cache) as reader:
        assert dict(reader.iter_tiles()) == tiles
        assert reader.get_tile(Tile(1, 2, 2)) == tiles[Tile(1, 2, 2)]
        assert reader.verify() == []


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("metadata.json", '{"format": "gif"}', r"metadata\.json.*format"),
        ("metadata.json", '{"bounds": [NaN, 0, 1, 1]}', r"metadata\.json.*bounds.*finite"),
        ("metadata.json", "[" * 100_000, r"metadata\.json.*JSON"),
        ("tilematrixset.json", "{not json", r"tilematrixset\.json: not JSON"),
        ("tilematrixset.json", '{"crs": "nonsense"}', r"tilematrixset\.json: unknown CRS"),
        ("tilematrixset.json", "no-matrices", r"tilematrixset\.json: .*consecutive levels"),
    ],
)
def test_invalid_sidecar_files_are_corrupt_and_named(
    name: str, content: str, match: str, tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    write(XYZFolderWriter, folder, sample_tiles(TileFormat.PNG, maxzoom=0))
    if content == "no-matrices":
        document = json.loads((folder / name).read_text())
        document["tileMatrices"] = []
        content = json.dumps(document)
    (folder / name).write_text(content)
    with pytest.raises(ContainerCorruptError, match=match) as err:
        XYZFolderReader(folder)
    assert err.value.path == folder / name


def test_hostile_names_are_skipped_and_reported_by_verify(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    tiles = sample_tiles(TileFormat.PNG, maxzoom=2)
    write(XYZFolderWriter, folder, tiles)
    png = b"\x89PNG\r\n\x1a\nx"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "3.png").write_bytes(png)
    level = folder / "2"
    shutil.rmtree(level / "3")
    tiles = {tile: data for tile, data in tiles.items() if (tile.z, tile.x) != (2, 3)}
    for name in ("abc.png", "-1.png", "007.png", "99999999999.png", "4294967295.png", "1.jpg"):
        (level / "0" / name).write_bytes(png)
    (level / "abc").mkdir()
    (level / "9" / "0").mkdir(parents=True)  # column 9 is outside the 4x4 level
    (level / "9" / "0.png").write_bytes(png)
    (level / "0" / "3.png").symlink_to(outside / "3.png")
    (level / "3").symlink_to(outside)
    (folder / "3").symlink_to("/etc")
    os.mkfifo(level / "1" / "3.png")
    (folder / "5").symlink_to(folder / "2")
    (folder / "..png").write_bytes(png)
    with XYZFolderReader(folder) as reader:
        with pytest.warns(EntriesSkippedWarning, match="skipped 15 entries") as caught:
            assert dict(reader.iter_tiles()) == tiles
        skipped = {where for where, _ in caught[0].message.entries}  # type: ignore[union-attr]
        assert reader.count_tiles() == len(tiles)
        assert reader.find_tile(Tile(0, 3, 2)) is None  # a symlink to a file outside
        assert reader.find_tile(Tile(3, 3, 2)) is None  # below a symlink to a folder outside
        assert reader.find_tile(Tile(1, 3, 2)) is None  # the FIFO
        assert reader.find_tile(Tile(0, 0, 5)) is None
        assert reader.find_tile(Tile(-1, 0, 2)) is None
        problems = "\n".join(reader.verify())
    for name in ("abc.png", "-1.png", "007.png", "99999999999.png", "4294967295.png", "1.jpg"):
        assert f"2/0/{name}" in problems
    for entry in ("2/abc", "2/9/0.png", "2/0/3.png", "2/3", "2/1/3.png", "out/3", "out/5", "..png"):
        assert entry in problems
    assert {"2/0/3.png", "2/1/3.png", "2/3", "3", "5", "..png", "2/0/1.jpg"} <= skipped


def test_a_full_walk_over_clean_tiles_warns_of_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    tiles = sample_tiles(TileFormat.PNG, maxzoom=2)
    write(XYZFolderWriter, folder, tiles)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with XYZFolderReader(folder) as reader:
            assert dict(reader.iter_tiles()) == tiles


def test_verify_reports_mistyped_and_empty_tiles(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    write(XYZFolderWriter, folder, sample_tiles(TileFormat.PNG, maxzoom=1))
    (folder / "1" / "0" / "0.png").write_bytes(make_tile(Tile(0, 0, 1), TileFormat.JPEG))
    (folder / "1" / "1" / "1.png").write_bytes(b"")
    with XYZFolderReader(folder) as reader:
        problems = reader.verify()
    assert any("1/0/0.png: content is jpg/none, the tile set is png/none" in p for p in problems)
    assert any("1/1/1.png: empty file" in p for p in problems)
