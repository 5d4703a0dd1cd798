"""The contract every tile container passes: one suite, run against each kind.

A new container is added to ``KINDS`` and passes this suite, or it does not ship.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from offmaps.containers.base import TileReader, TilesetMetadata, TileWriter
from offmaps.containers.registry import ContainerKind, Location, open_reader, open_writer
from offmaps.errors import (
    ContainerError,
    DestinationExistsError,
    InvalidTileError,
    TileNotFoundError,
)
from offmaps.types import Tile, TileCompression, TileFormat
from tests.tilegen import sample_tiles

KINDS = list(ContainerKind)
FORMATS = [
    (TileFormat.PNG, TileCompression.NONE),
    (TileFormat.JPEG, TileCompression.NONE),
    (TileFormat.WEBP, TileCompression.NONE),
    (TileFormat.MVT, TileCompression.NONE),
    (TileFormat.MVT, TileCompression.GZIP),
]


def location(kind: ContainerKind, tmp_path: Path, name: str = "out") -> Location:
    return Location(kind, tmp_path / (name if kind.is_folder else f"{name}.{kind.value}"))


def write_all(loc: Location, meta: TilesetMetadata, tiles: dict[Tile, bytes]) -> None:
    with open_writer(loc, meta) as writer:
        assert isinstance(writer, TileWriter)
        for tile, data in tiles.items():
            writer.write_tile(tile, data)


@pytest.fixture(params=KINDS, ids=[k.value for k in KINDS])
def kind(request: pytest.FixtureRequest) -> ContainerKind:
    value: ContainerKind = request.param
    return value


@pytest.mark.parametrize(("fmt", "comp"), FORMATS, ids=[f"{f}-{c}" for f, c in FORMATS])
def test_round_trip_keeps_every_tile_byte_identical(
    kind: ContainerKind, fmt: TileFormat, comp: TileCompression, tmp_path: Path
) -> None:
    tiles = sample_tiles(fmt, comp)
    loc = location(kind, tmp_path)
    write_all(loc, TilesetMetadata(tile_format=fmt, tile_compression=comp, name="t"), tiles)
    with open_reader(loc) as reader:
        assert isinstance(reader, TileReader)
        assert reader.metadata.tile_format is fmt
        assert reader.metadata.tile_compression is comp
        assert reader.count_tiles() == len(tiles)
        assert dict(reader.iter_tiles()) == tiles
        for tile, data in tiles.items():
            assert reader.get_tile(tile) == data
        assert reader.verify() == []


def test_metadata_records_zooms_and_bounds(kind: ContainerKind, tmp_path: Path) -> None:
    tiles = sample_tiles(TileFormat.PNG)
    loc = location(kind, tmp_path)
    write_all(loc, TilesetMetadata(tile_format=TileFormat.PNG, name="zooms"), tiles)
    with open_reader(loc) as reader:
        meta = reader.metadata
        assert meta.tms.id == "WebMercatorQuad"
        assert (meta.minzoom, meta.maxzoom) == (0, 3)
        assert meta.bounds is not None
        west, south, east, north = meta.bounds
        assert -180 <= west < east <= 180
        assert -85.06 <= south < north <= 85.06


def test_iter_tiles_filters_by_zoom(kind: ContainerKind, tmp_path: Path) -> None:
    tiles = sample_tiles(TileFormat.PNG)
    loc = location(kind, tmp_path)
    write_all(loc, TilesetMetadata(tile_format=TileFormat.PNG), tiles)
    with open_reader(loc) as reader:
        got = dict(reader.iter_tiles(zooms=[1, 2]))
    assert got == {t: d for t, d in tiles.items() if t.z in (1, 2)}


def test_missing_tile_is_none_or_not_found(kind: ContainerKind, tmp_path: Path) -> None:
    loc = location(kind, tmp_path)
    write_all(loc, TilesetMetadata(tile_format=TileFormat.PNG), sample_tiles(TileFormat.PNG))
    with open_reader(loc) as reader:
        assert reader.find_tile(Tile(7, 7, 3)) is None
        assert reader.find_tile(Tile(0, 0, 9)) is None
        with pytest.raises(TileNotFoundError, match="3/7/7"):
            reader.get_tile(Tile(7, 7, 3))


def test_empty_container_round_trips(kind: ContainerKind, tmp_path: Path) -> None:
    loc = location(kind, tmp_path)
    write_all(loc, TilesetMetadata(tile_format=TileFormat.PNG), {})
    with open_reader(loc) as reader:
        assert reader.count_tiles() == 0
        assert list(reader.iter_tiles()) == []


@pytest.mark.parametrize(
    "bad", [Tile(-1, 0, 1), Tile(0, 2, 1), Tile(4, 0, 2), Tile(0, 0, 31), Tile(0, 0, -1)]
)
def test_tile_keys_outside_the_matrix_are_refused(
    kind: ContainerKind, bad: Tile, tmp_path: Path
) -> None:
    loc = location(kind, tmp_path)
    with (
        pytest.raises(InvalidTileError),
        open_writer(loc, TilesetMetadata(tile_format=TileFormat.PNG)) as writer,
    ):
        writer.write_tile(bad, b"\x89PNG\r\n\x1a\n")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing_behind(kind: ContainerKind, tmp_path: Path) -> None:
    loc = location(kind, tmp_path)
    tiles = sample_tiles(TileFormat.PNG)
    with (
        pytest.raises(RuntimeError, match="interrupted"),
        open_writer(loc, TilesetMetadata(tile_format=TileFormat.PNG)) as writer,
    ):
        for i, (tile, data) in enumerate(tiles.items()):
            writer.write_tile(tile, data)
            if i == 5:
                raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_existing_destination_is_refused(kind: ContainerKind, tmp_path: Path) -> None:
    loc = location(kind, tmp_path)
    write_all(loc, TilesetMetadata(tile_format=TileFormat.PNG), sample_tiles(TileFormat.PNG))
    with pytest.raises(DestinationExistsError, match="already exists"):
        open_writer(loc, TilesetMetadata(tile_format=TileFormat.PNG))


def test_overwrite_replaces_existing_destination(kind: ContainerKind, tmp_path: Path) -> None:
    loc = location(kind, tmp_path)
    write_all(loc, TilesetMetadata(tile_format=TileFormat.PNG), sample_tiles(TileFormat.PNG))
    tiles = sample_tiles(TileFormat.JPEG, maxzoom=1)
    with open_writer(loc, TilesetMetadata(tile_format=TileFormat.JPEG), overwrite=True) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    with open_reader(loc) as reader:
        assert dict(reader.iter_tiles()) == tiles


def test_read_only_destination_gives_a_clear_error(
    kind: ContainerKind, read_only_dir: Path
) -> None:
    loc = location(kind, read_only_dir)
    with pytest.raises(ContainerError, match="ro"):
        open_writer(loc, TilesetMetadata(tile_format=TileFormat.PNG))
    assert list(read_only_dir.iterdir()) == []


def test_full_disk_gives_a_clear_error_and_leaves_nothing(
    kind: ContainerKind, full_disk: Path
) -> None:
    loc = location(kind, full_disk)
    tiles = sample_tiles(TileFormat.PNG, maxzoom=6, duplicate=False)
    big = {tile: data + bytes(20_000) for tile, data in tiles.items()}
    with (
        pytest.raises(ContainerError),
        open_writer(loc, TilesetMetadata(tile_format=TileFormat.PNG)) as writer,
    ):
        for tile, data in big.items():
            writer.write_tile(tile, data)
    assert list(full_disk.iterdir()) == []


def test_finished_container_has_ordinary_permissions(kind: ContainerKind, tmp_path: Path) -> None:
    loc = location(kind, tmp_path)
    write_all(loc, TilesetMetadata(tile_format=TileFormat.PNG), sample_tiles(TileFormat.PNG))
    mode = loc.path.stat().st_mode & 0o777
    assert mode & 0o044 == 0o044  # group and others can read, as after a plain open()
