"""Esri Compact Cache V2: bundle bytes, independent readers, damaged and hostile bundles."""

from __future__ import annotations

import importlib
import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from offmaps.containers.base import TilesetMetadata
from offmaps.containers.compact import (
    MAX_TILE_BYTES,
    EsriCompactReader,
    EsriCompactWriter,
    bundle_name,
)
from offmaps.errors import ContainerCorruptError, ContainerError, ContainerWriteError
from offmaps.types import Tile, TileCompression, TileFormat
from tests.tilegen import make_tile, sample_tiles

PNG = TilesetMetadata(tile_format=TileFormat.PNG, name="t")
DATA_START = 64 + 131072


def write(folder: Path, tiles: dict[Tile, bytes], meta: TilesetMetadata = PNG) -> None:
    with EsriCompactWriter(folder, meta) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)


def read_tile_by_hand(bundle: Path, row: int, col: int) -> bytes | None:
    """An independent reading of one tile: index entry, then size prefix, then bytes."""
    with bundle.open("rb") as f:
        f.seek(64 + 8 * (128 * (row % 128) + col % 128))
        (entry,) = struct.unpack("<Q", f.read(8))
        offset, size = entry & (2**40 - 1), entry >> 40
        if size == 0:
            return None
        f.seek(offset - 4)
        (prefix,) = struct.unpack("<I", f.read(4))
        assert prefix == size
        return f.read(size)


def test_bundles_are_named_and_placed_as_arcgis_does(tmp_path: Path) -> None:
    tiles = {
        Tile(130, 5, 8): make_tile(Tile(130, 5, 8), TileFormat.PNG),
        Tile(0, 0, 0): make_tile(Tile(0, 0, 0), TileFormat.PNG),
        Tile(4000, 300, 12): make_tile(Tile(4000, 300, 12), TileFormat.PNG),
    }
    write(tmp_path / "out", tiles)
    found = {str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.*")}
    assert found == {
        "_alllayers/L08/R0000C0080.bundle",
        "_alllayers/L00/R0000C0000.bundle",
        "_alllayers/L12/R0100C0f80.bundle",
        "conf.cdi",
        "conf.xml",
        "metadata.json",
        "tilematrixset.json",
    }
    assert bundle_name(0x100, 0xF80) == "R0100C0f80.bundle"


def test_header_bytes_follow_the_specification(tmp_path: Path) -> None:
    small, large = b"\x89PNG\r\n\x1a\nsmall", b"\x89PNG\r\n\x1a\n" + bytes(1000)
    write(tmp_path / "out", {Tile(0, 0, 1): small, Tile(1, 1, 1): large})
    bundle = tmp_path / "out" / "_alllayers" / "L01" / "R0000C0000.bundle"
    raw = bundle.read_bytes()
    assert len(raw) == DATA_START + 4 + len(small) + 4 + len(large)
    assert struct.unpack("<4I3Q6I", raw[:64]) == (
        3,  # version
        16384,  # record count
        len(large),  # max record size
        5,  # offset byte count
        0,  # slack space
        len(raw),  # file size
        40,  # user header offset
        20 + 131072,  # user header size
        3,  # legacy
        16,  # legacy
        16384,  # legacy
        5,  # legacy
        131072,  # index size
    )
    entries = struct.unpack("<16384Q", raw[64:DATA_START])
    assert sum(1 for e in entries if e) == 2
    assert entries[0] == (len(small) << 40) | (DATA_START + 4)


def test_a_tile_reads_back_byte_by_byte_without_our_reader(tmp_path: Path) -> None:
    tiles = sample_tiles(TileFormat.PNG, maxzoom=3)
    tiles[Tile(130, 5, 8)] = make_tile(Tile(130, 5, 8), TileFormat.PNG)
    write(tmp_path / "out", tiles)
    bundle = tmp_path / "out" / "_alllayers" / "L08" / "R0000C0080.bundle"
    assert read_tile_by_hand(bundle, 5, 130) == tiles[Tile(130, 5, 8)]
    assert read_tile_by_hand(bundle, 5, 131) is None
    level3 = tmp_path / "out" / "_alllayers" / "L03" / "R0000C0000.bundle"
    for tile in (t for t in tiles if t.z == 3):
        assert read_tile_by_hand(level3, tile.y, tile.x) == tiles[tile]


def test_mapproxy_reads_our_bundles(tmp_path: Path) -> None:
    compact = importlib.import_module("mapproxy.cache.compact")  # bench extra, always installed
    mapproxy_tile = importlib.import_module("mapproxy.cache.tile")
    tiles = sample_tiles(TileFormat.JPEG, maxzoom=3)
    write(tmp_path / "out", tiles, TilesetMetadata(tile_format=TileFormat.JPEG))
    for tile, data in tiles.items():
        bundle = compact.BundleV2(
            str(tmp_path / "out" / "_alllayers" / f"L{tile.z:02d}" / "R0000C0000")
        )
        loaded = mapproxy_tile.Tile((tile.x, tile.y, tile.z))
        assert bundle.load_tile(loaded)
        assert loaded.image_result.as_buffer().read() == data


def test_bundle_written_by_hand_with_offset_four_empty_entries_reads(tmp_path: Path) -> None:
    # MapProxy and some ArcGIS versions mark missing tiles with offset 4 and size 0.
    data = make_tile(Tile(2, 1, 2), TileFormat.PNG)
    index = [4] * 16384
    index[128 * 1 + 2] = (len(data) << 40) | (DATA_START + 4)
    size = DATA_START + 4 + len(data)
    header = struct.pack(
        "<4I3Q6I", 3, 16384, len(data), 5, 0, size, 40, 131092, 3, 16, 16384, 5, 131072
    )
    level = tmp_path / "cache" / "_alllayers" / "L02"
    level.mkdir(parents=True)
    (level / "R0000C0000.bundle").write_bytes(
        header + struct.pack("<16384Q", *index) + struct.pack("<I", len(data)) + data
    )
    with EsriCompactReader(tmp_path / "cache") as reader:
        assert reader.metadata.tile_format is TileFormat.PNG  # no metadata.json: from the bytes
        assert dict(reader.iter_tiles()) == {Tile(2, 1, 2): data}
        assert reader.find_tile(Tile(0, 0, 2)) is None
        assert reader.verify() == []


def test_tiles_in_any_order_across_bundles_with_few_open(tmp_path: Path) -> None:
    tiles = {
        Tile(x, y, 10): make_tile(Tile(x, y, 10), TileFormat.WEBP)
        for x in range(0, 1024, 97)
        for y in range(5, 1024, 211)
    }
    order = sorted(tiles, key=lambda t: (t.y * 7 + t.x * 13) % 101)
    meta = TilesetMetadata(tile_format=TileFormat.WEBP)
    writer = EsriCompactWriter(tmp_path / "out", meta)
    writer.max_open_bundles = 2
    with writer:
        for tile in order:
            writer.write_tile(tile, tiles[tile])
        writer.write_tile(order[0], b"RIFF\x04\x00\x00\x00WEBPlast")
    tiles[order[0]] = b"RIFF\x04\x00\x00\x00WEBPlast"
    with EsriCompactReader(tmp_path / "out") as reader:
        assert reader.count_tiles() == len(tiles)
        assert dict(reader.iter_tiles()) == tiles
        assert reader.verify() == []


_MEASURE_WRITER = """
import sys, tracemalloc
from pathlib import Path
from offmaps.containers.base import TilesetMetadata
from offmaps.containers.compact import EsriCompactWriter
from offmaps.types import Tile, TileFormat
from tests.tilegen import make_tile

out = Path(sys.argv[1])
png = TilesetMetadata(tile_format=TileFormat.PNG, name="t")
data = make_tile(Tile(0, 0, 0), TileFormat.PNG)
# 16 bundles, visited round-robin: holding every index would take 16 x 128 KiB.
keys = [Tile(128 * (i % 4) + i // 16, 128 * (i // 4 % 4), 9) for i in range(256)]
# a first cache loads what writing one loads once (modules, pyproj's database for conf.xml)
with EsriCompactWriter(out / "warm", png) as warm:
    warm.write_tile(keys[0], data)
writer = EsriCompactWriter(out / "out", png)
writer.max_open_bundles = 2
tracemalloc.start()
with writer:
    for tile in keys:
        writer.write_tile(tile, data)
print(tracemalloc.get_traced_memory()[1])
"""


def test_writer_memory_is_bounded_by_open_bundles(tmp_path: Path) -> None:
    # measured in a process of its own: tracemalloc counts every thread's allocations, and a
    # test process may run others' threads (a full run once traced 4.4 MB that were not ours)
    measured = subprocess.run(
        [sys.executable, "-c", _MEASURE_WRITER, str(tmp_path)],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    peak = int(measured.stdout)
    assert peak < 6 * 131072
    with EsriCompactReader(tmp_path / "out") as reader:
        assert reader.count_tiles() == 256


def test_tile_too_large_for_a_bundle_is_refused(tmp_path: Path) -> None:
    with (
        pytest.raises(ContainerWriteError, match="16777215"),
        EsriCompactWriter(tmp_path / "out", PNG) as writer,
    ):
        writer.write_tile(Tile(0, 0, 0), bytes(MAX_TILE_BYTES + 1))
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    write(tmp_path / "out", sample_tiles(TileFormat.PNG, maxzoom=2))
    return tmp_path / "out" / "_alllayers" / "L02" / "R0000C0000.bundle"


def patch(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def test_truncated_bundle_is_corrupt(bundle: Path) -> None:
    with bundle.open("r+b") as f:
        f.truncate(os.path.getsize(bundle) - 10)
    with EsriCompactReader(bundle.parents[2]) as reader:
        with pytest.raises(ContainerCorruptError, match=r"R0000C0000\.bundle.*truncated") as err:
            reader.find_tile(Tile(1, 1, 2))
        assert err.value.path == bundle
        with pytest.raises(ContainerCorruptError):
            dict(reader.iter_tiles())
        assert reader.find_tile(Tile(0, 0, 1)) is not None  # other bundles still read
        problems = reader.verify()
    assert len(problems) == 1
    assert "truncated" in problems[0]


def test_bundle_cut_inside_the_index_is_corrupt(bundle: Path) -> None:
    with bundle.open("r+b") as f:
        f.truncate(1000)
    with (
        EsriCompactReader(bundle.parents[2]) as reader,
        pytest.raises(ContainerCorruptError, match="truncated: 1000 bytes"),
    ):
        reader.find_tile(Tile(1, 1, 2))


def test_index_entry_past_the_end_names_bundle_tile_and_offset(bundle: Path) -> None:
    size = os.path.getsize(bundle)
    slot = 128 * 2 + 1  # tile 2/1/2
    patch(bundle, 64 + 8 * slot, struct.pack("<Q", (100 << 40) | (size - 50)))
    with EsriCompactReader(bundle.parents[2]) as reader:
        with pytest.raises(ContainerCorruptError, match="past the end") as err:
            reader.find_tile(Tile(1, 2, 2))
        message = str(err.value)
        assert "R0000C0000.bundle" in message
        assert "tile 2/1/2" in message
        assert f"byte {size - 50}" in message
        assert (err.value.tile, err.value.offset) == ((1, 2, 2), size - 50)
        assert reader.find_tile(Tile(0, 0, 2)) is not None
        problems = reader.verify()
    assert len(problems) == 1
    assert "tile 2/1/2" in problems[0]


def test_index_entry_into_the_header_is_corrupt(bundle: Path) -> None:
    patch(bundle, 64, struct.pack("<Q", (8 << 40) | 4))
    with (
        EsriCompactReader(bundle.parents[2]) as reader,
        pytest.raises(ContainerCorruptError, match="into the header or index"),
    ):
        reader.find_tile(Tile(0, 0, 2))


def test_wrong_size_prefix_is_corrupt(bundle: Path) -> None:
    patch(bundle, DATA_START, struct.pack("<I", 7))
    with EsriCompactReader(bundle.parents[2]) as reader:
        with pytest.raises(ContainerCorruptError, match="size prefix 7") as err:
            dict(reader.iter_tiles(zooms=[2]))
        assert err.value.offset == DATA_START


@pytest.mark.parametrize(
    ("offset", "value", "match"),
    [(0, 2, "version is 2"), (4, 100, "record_count is 100"), (60, 5, "index_size is 5")],
)
def test_wrong_header_is_corrupt(bundle: Path, offset: int, value: int, match: str) -> None:
    patch(bundle, offset, struct.pack("<I", value))
    with EsriCompactReader(bundle.parents[2]) as reader:
        with pytest.raises(ContainerCorruptError, match=match) as err:
            reader.find_tile(Tile(0, 0, 2))
        assert err.value.offset == offset
        assert any(match in p for p in reader.verify())


def test_wrong_file_size_in_header_is_corrupt(bundle: Path) -> None:
    patch(bundle, 24, struct.pack("<Q", 10**12))
    with (
        EsriCompactReader(bundle.parents[2]) as reader,
        pytest.raises(ContainerCorruptError, match="header says the file is 1000000000000 bytes"),
    ):
        reader.find_tile(Tile(0, 0, 2))


def test_verify_reports_non_standard_header_fields(bundle: Path) -> None:
    patch(bundle, 44, struct.pack("<I", 0))
    patch(bundle, 8, struct.pack("<I", 1))
    with EsriCompactReader(bundle.parents[2]) as reader:
        assert reader.get_tile(Tile(0, 0, 2))
        problems = reader.verify()
    assert any("legacy1 is 0, not 3" in p for p in problems)
    assert any("max record size 1" in p for p in problems)


def test_hostile_bundle_names_are_ignored_and_reported(tmp_path: Path) -> None:
    tiles = sample_tiles(TileFormat.PNG, maxzoom=2)
    write(tmp_path / "out", tiles)
    layers = tmp_path / "out" / "_alllayers"
    good = (layers / "L02" / "R0000C0000.bundle").read_bytes()
    hostile = [
        "L02/R0001C0000.bundle",  # not a multiple of 128
        "L02/R0000C0000.bundle.bak",
        "L02/RZZZZC0000.bundle",
        "L02/R0000C0000.BUNDLE",
        "L02/R00000C0000.bundle",  # not canonical
        "L02/R0080C0000.bundle",  # outside the 4x4 level
    ]
    for name in hostile:
        (layers / name).write_bytes(good)
    (layers / "L03").mkdir()
    (layers / "L03" / "R0000C0000.bundle").symlink_to(layers / "L02" / "R0000C0000.bundle")
    (layers / "L04").symlink_to(layers / "L02")
    (layers / "L5").mkdir()
    (layers / "..bundle").write_bytes(good)
    (layers / "L09").mkdir()
    os.mkfifo(layers / "L09" / "R0000C0000.bundle")
    with EsriCompactReader(tmp_path / "out") as reader:
        assert dict(reader.iter_tiles()) == tiles
        assert reader.count_tiles() == len(tiles)
        assert reader.find_tile(Tile(0, 0, 3)) is None
        assert reader.find_tile(Tile(0, 0, 4)) is None
        assert reader.find_tile(Tile(0, 0, 9)) is None
        problems = "\n".join(reader.verify())
    for name in [*hostile, "L03/R0000C0000.bundle", "L04", "L5", "..bundle", "L09/R0000C0000"]:
        assert f"_alllayers/{name}" in problems


def test_missing_folder_or_file_is_a_container_error(tmp_path: Path) -> None:
    with pytest.raises(ContainerError, match="does not exist"):
        EsriCompactReader(tmp_path / "nowhere")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ContainerError, match="is a file"):
        EsriCompactReader(tmp_path / "file")
    with pytest.raises(ContainerError, match=r"no tiles and no metadata\.json"):
        EsriCompactReader(tmp_path)


def test_gzip_vector_tiles_round_trip_with_their_metadata(tmp_path: Path) -> None:
    tiles = sample_tiles(TileFormat.MVT, TileCompression.GZIP, maxzoom=2)
    meta = TilesetMetadata(
        tile_format=TileFormat.MVT,
        tile_compression=TileCompression.GZIP,
        vector_layers=[{"id": "points", "fields": {}}],
    )
    write(tmp_path / "out", tiles, meta)
    with EsriCompactReader(tmp_path / "out") as reader:
        assert reader.metadata.tile_compression is TileCompression.GZIP
        assert reader.metadata.vector_layers == [{"id": "points", "fields": {}}]
        assert dict(reader.iter_tiles()) == tiles
    buffer = io.BytesIO((tmp_path / "out" / "metadata.json").read_bytes())
    assert b'"tile_compression": "gzip"' in buffer.getvalue()
