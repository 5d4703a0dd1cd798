"""PMTiles v3 specifics: clustered layout, deduplication, run lengths, leaf directories, hostile
files, and the ``pmtiles`` package's own reader (and GDAL) reading what we write."""

from __future__ import annotations

import gzip
import random
import struct
import tempfile
from pathlib import Path

import pyogrio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pmtiles.reader import MmapSource, Reader, all_tiles
from pmtiles.tile import (
    Compression,
    Entry,
    HeaderDict,
    TileType,
    deserialize_directory,
    deserialize_header,
    serialize_directory,
    serialize_header,
    zxy_to_tileid,
)

from offmaps.containers.base import TilesetMetadata
from offmaps.containers.pmtiles import ROOT_LIMIT, PMTilesReader, PMTilesWriter
from offmaps.containers.registry import open_reader
from offmaps.errors import (
    ContainerCorruptError,
    ContainerError,
    InvalidTileError,
    UnsupportedTileMatrixSetError,
)
from offmaps.storage import (
    BytesByteSource,
    LocalObjectStore,
    MemoryObjectStore,
    ObjectByteSource,
    ObjectStore,
)
from offmaps.tiling.tms import get_tms
from offmaps.types import BBox, Tile, TileCompression, TileFormat
from tests.tilegen import make_tile, sample_tiles

PNG = TilesetMetadata(tile_format=TileFormat.PNG, name="test")
MVT_GZ = TilesetMetadata(
    tile_format=TileFormat.MVT,
    tile_compression=TileCompression.GZIP,
    name="vector",
    description="points",
    attribution="© OpenStreetMap contributors",
    vector_layers=[{"id": "points", "fields": {"x": "Number", "y": "Number", "z": "Number"}}],
    extra={"version": "1.0.0", "type": "overlay"},
)


def write(path: Path, tiles: dict[Tile, bytes], meta: TilesetMetadata = PNG) -> Path:
    with PMTilesWriter(path, meta) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    return path


def header_of(path: Path) -> HeaderDict:
    header: HeaderDict = deserialize_header(path.read_bytes()[:127])
    return header


def reference_tiles(path: Path) -> dict[Tile, bytes]:
    """Every tile as the ``pmtiles`` package's reader sees it."""
    with path.open("rb") as f:
        source = MmapSource(f)  # type: ignore[no-untyped-call]
        return {Tile(x, y, z): bytes(data) for (z, x, y), data in all_tiles(source)}  # type: ignore[no-untyped-call]


def reference_metadata(path: Path) -> dict[str, object]:
    with path.open("rb") as f:
        reader = Reader(MmapSource(f))  # type: ignore[no-untyped-call]
        document: dict[str, object] = reader.metadata()  # type: ignore[no-untyped-call]
        return document


def our_tiles(path: Path) -> dict[Tile, bytes]:
    with PMTilesReader(path) as reader:
        return dict(reader.iter_tiles())


def random_tiles(count: int, seed: int = 1) -> dict[Tile, bytes]:
    """``count`` distinct small tiles scattered over levels 8 and 9, of random lengths."""
    rng = random.Random(seed)
    tiles: dict[Tile, bytes] = {}
    while len(tiles) < count:
        z = rng.choice((8, 9))
        tile = Tile(rng.randrange(2**z), rng.randrange(2**z), z)
        tiles[tile] = b"%d/%d/%d:" % (tile.z, tile.x, tile.y) + rng.randbytes(rng.randint(1, 40))
    return tiles


# --- round trips checked by the pmtiles package --------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "fmt", "comp", "tile_type", "tile_compression"),
    [
        (PNG, TileFormat.PNG, TileCompression.NONE, TileType.PNG, Compression.NONE),
        (MVT_GZ, TileFormat.MVT, TileCompression.GZIP, TileType.MVT, Compression.GZIP),
    ],
    ids=["png", "mvt-gzip"],
)
def test_pmtiles_package_reads_every_tile_we_write(
    meta: TilesetMetadata,
    fmt: TileFormat,
    comp: TileCompression,
    tile_type: TileType,
    tile_compression: Compression,
    tmp_path: Path,
) -> None:
    tiles = sample_tiles(fmt, comp)
    path = write(tmp_path / "t.pmtiles", tiles, meta)
    assert reference_tiles(path) == tiles
    header = header_of(path)
    assert header["tile_type"] is tile_type
    assert header["tile_compression"] is tile_compression
    assert header["internal_compression"] is Compression.GZIP
    assert header["clustered"] is True
    assert (header["min_zoom"], header["max_zoom"]) == (0, 3)
    assert header["addressed_tiles_count"] == len(tiles)
    assert header["tile_contents_count"] == len(set(tiles.values()))
    assert header["root_offset"] == 127
    assert header["root_offset"] + header["root_length"] <= ROOT_LIMIT


def test_metadata_round_trips_through_json_and_header(tmp_path: Path) -> None:
    tiles = sample_tiles(TileFormat.MVT, TileCompression.GZIP)
    meta = MVT_GZ
    path = write(tmp_path / "v.pmtiles", tiles, meta)
    document = reference_metadata(path)
    assert document["name"] == "vector"
    assert document["format"] == "pbf"
    assert document["tile_compression"] == "gzip"
    assert document["vector_layers"] == meta.vector_layers
    assert document["version"] == "1.0.0"
    with PMTilesReader(path) as reader:
        got = reader.metadata
    assert (got.name, got.description, got.attribution) == (
        meta.name,
        meta.description,
        meta.attribution,
    )
    assert got.vector_layers == meta.vector_layers
    assert got.extra == meta.extra
    assert got.bounds is not None
    assert got.center is not None
    assert got.center[2] == 0


def test_bounds_and_center_are_taken_from_the_metadata(tmp_path: Path) -> None:
    meta = TilesetMetadata(
        tile_format=TileFormat.PNG,
        bounds=BBox(24.8, 60.1, 25.2, 60.3),
        center=(24.94, 60.17, 2),
    )
    path = write(tmp_path / "b.pmtiles", sample_tiles(TileFormat.PNG), meta)
    header = header_of(path)
    assert (header["min_lon_e7"], header["max_lat_e7"]) == (248_000_000, 603_000_000)
    assert (header["center_lon_e7"], header["center_zoom"]) == (249_400_000, 2)
    with PMTilesReader(path) as reader:
        assert reader.metadata.bounds == pytest.approx(meta.bounds)


def test_gdal_reads_the_vector_tiles(tmp_path: Path) -> None:
    tiles = {
        Tile(x, y, 2): make_tile(Tile(x, y, 2), TileFormat.MVT, TileCompression.GZIP)
        for x in range(4)
        for y in range(4)
    }
    path = write(tmp_path / "v.pmtiles", tiles, MVT_GZ)
    layers = pyogrio.list_layers(path)
    assert "points" in [str(name) for name, _ in layers]
    info = pyogrio.read_info(path, layer="points")
    assert info["features"] == len(tiles)


# --- layout ---------------------------------------------------------------------------------------


def test_identical_tiles_are_stored_once(tmp_path: Path) -> None:
    blob = make_tile(Tile(0, 0, 0), TileFormat.PNG) + bytes(5000)
    tiles = {Tile(x, y, 4): blob for x in range(0, 16, 2) for y in range(16)}
    path = write(tmp_path / "d.pmtiles", tiles)
    header = header_of(path)
    assert header["tile_contents_count"] == 1
    assert header["tile_data_length"] == len(blob)
    assert path.stat().st_size < 2 * len(blob)
    assert reference_tiles(path) == tiles


def test_consecutive_identical_tiles_become_one_run(tmp_path: Path) -> None:
    ocean = make_tile(Tile(0, 0, 0), TileFormat.PNG)
    tiles = {Tile(x, y, 3): ocean for x in range(8) for y in range(8)}
    tiles[Tile(0, 0, 2)] = make_tile(Tile(0, 0, 2), TileFormat.PNG)
    path = write(tmp_path / "r.pmtiles", tiles)
    header = header_of(path)
    assert header["addressed_tiles_count"] == 65
    assert header["tile_entries_count"] == 2
    raw = path.read_bytes()
    root = deserialize_directory(
        raw[header["root_offset"] : header["root_offset"] + header["root_length"]]
    )
    assert [(e.tile_id, e.run_length) for e in root] == [
        (zxy_to_tileid(2, 0, 0), 1),
        (zxy_to_tileid(3, 0, 0), 64),
    ]
    assert our_tiles(path) == tiles
    assert reference_tiles(path) == tiles


def test_tile_data_is_clustered_in_tile_id_order_whatever_the_write_order(
    tmp_path: Path,
) -> None:
    tiles = sample_tiles(TileFormat.PNG)
    shuffled = list(tiles.items())
    random.Random(3).shuffle(shuffled)
    a = write(tmp_path / "a.pmtiles", tiles)
    b = write(tmp_path / "b.pmtiles", dict(shuffled))
    assert a.read_bytes() == b.read_bytes()
    with PMTilesReader(b) as reader:
        keys = [tile for tile, _ in reader.iter_tiles()]
    assert [zxy_to_tileid(t.z, t.x, t.y) for t in keys] == sorted(
        zxy_to_tileid(t.z, t.x, t.y) for t in tiles
    )


def test_a_second_write_of_a_tile_replaces_the_first(tmp_path: Path) -> None:
    first, second = (
        make_tile(Tile(0, 0, 0), TileFormat.PNG),
        make_tile(Tile(1, 0, 1), TileFormat.PNG),
    )
    path = tmp_path / "w.pmtiles"
    with PMTilesWriter(path, PNG) as writer:
        writer.write_tile(Tile(0, 0, 1), first)
        writer.write_tile(Tile(1, 1, 1), first)
        writer.write_tile(Tile(0, 0, 1), second)
    assert our_tiles(path) == {Tile(0, 0, 1): second, Tile(1, 1, 1): first}
    header = header_of(path)
    assert (header["addressed_tiles_count"], header["tile_contents_count"]) == (2, 2)
    assert header["tile_data_length"] == len(first) + len(second)


def test_many_tiles_go_to_leaf_directories_read_back_by_both_readers(tmp_path: Path) -> None:
    tiles = random_tiles(30_000)
    path = write(tmp_path / "big.pmtiles", tiles, TilesetMetadata(tile_format=TileFormat.MVT))
    header = header_of(path)
    assert header["leaf_directory_length"] > 0
    assert header["root_offset"] + header["root_length"] <= ROOT_LIMIT
    assert header["tile_entries_count"] == 30_000
    assert reference_tiles(path) == tiles
    with PMTilesReader(path) as reader:
        assert reader.count_tiles() == len(tiles)
        assert dict(reader.iter_tiles()) == tiles
        for tile in random.Random(2).sample(sorted(tiles), 500):
            assert reader.get_tile(tile) == tiles[tile]
        assert reader.find_tile(Tile(0, 0, 7)) is None
        assert dict(reader.iter_tiles(zooms=[9])) == {t: d for t, d in tiles.items() if t.z == 9}
        assert reader.verify() == []


def test_temporary_files_are_gone_after_commit(tmp_path: Path) -> None:
    write(tmp_path / "t.pmtiles", sample_tiles(TileFormat.PNG))
    assert [p.name for p in tmp_path.iterdir()] == ["t.pmtiles"]


def test_empty_archive_is_readable_by_the_pmtiles_package(tmp_path: Path) -> None:
    path = write(tmp_path / "e.pmtiles", {})
    assert reference_tiles(path) == {}
    with PMTilesReader(path) as reader:
        assert reader.metadata.minzoom is None
        assert reader.verify() == []


# --- refusals -------------------------------------------------------------------------------------


def test_other_tile_matrix_sets_are_refused(tmp_path: Path) -> None:
    meta = TilesetMetadata(tile_format=TileFormat.PNG, tms=get_tms("WorldCRS84Quad"))
    with pytest.raises(UnsupportedTileMatrixSetError, match="WebMercatorQuad"):
        PMTilesWriter(tmp_path / "x.pmtiles", meta)
    assert list(tmp_path.iterdir()) == []


def test_empty_tiles_are_refused(tmp_path: Path) -> None:
    with (
        pytest.raises(InvalidTileError, match="empty"),
        PMTilesWriter(tmp_path / "x.pmtiles", PNG) as writer,
    ):
        writer.write_tile(Tile(0, 0, 0), b"")
    assert list(tmp_path.iterdir()) == []


# --- hostile files --------------------------------------------------------------------------------


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return write(tmp_path / "good.pmtiles", sample_tiles(TileFormat.PNG))


def read_everything(path: Path) -> None:
    with open_reader(path) as reader:
        list(reader.iter_tiles())
        reader.find_tile(Tile(1, 1, 2))
        reader.count_tiles()


def assert_corrupt(path: Path, match: str | None = None) -> ContainerCorruptError:
    with pytest.raises(ContainerCorruptError, match=match) as info:
        read_everything(path)
    message = str(info.value)
    assert str(path) in message
    assert info.value.offset is not None
    assert f"byte {info.value.offset}" in message
    return info.value


def patched(path: Path, offset: int, data: bytes) -> Path:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    out = path.with_name("bad.pmtiles")
    out.write_bytes(bytes(raw))
    return out


def crafted(
    tmp_path: Path,
    root: list[Entry],
    *,
    leaves: bytes = b"",
    data: bytes = b"\x89PNG\r\n\x1a\n" * 4,
) -> Path:
    """An archive laid out by hand around the given directory entries."""
    root_bytes = serialize_directory(root)
    meta = gzip.compress(b'{"name": "x"}')
    header: HeaderDict = {
        "version": 3,
        "root_offset": 127,
        "root_length": len(root_bytes),
        "metadata_offset": 127 + len(root_bytes),
        "metadata_length": len(meta),
        "leaf_directory_offset": 127 + len(root_bytes) + len(meta),
        "leaf_directory_length": len(leaves),
        "tile_data_offset": 127 + len(root_bytes) + len(meta) + len(leaves),
        "tile_data_length": len(data),
        "addressed_tiles_count": 0,
        "tile_entries_count": 0,
        "tile_contents_count": 0,
        "clustered": False,
        "internal_compression": Compression.GZIP,
        "tile_compression": Compression.NONE,
        "tile_type": TileType.PNG,
        "min_zoom": 0,
        "max_zoom": 3,
        "min_lon_e7": -1_800_000_000,
        "min_lat_e7": -850_000_000,
        "max_lon_e7": 1_800_000_000,
        "max_lat_e7": 850_000_000,
        "center_zoom": 0,
        "center_lon_e7": 0,
        "center_lat_e7": 0,
    }
    path = tmp_path / "crafted.pmtiles"
    path.write_bytes(serialize_header(header) + root_bytes + meta + leaves + data)
    return path


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.05, 0.5, 0.9, 0.999])
def test_truncated_files_are_corrupt(archive: Path, fraction: float) -> None:
    raw = archive.read_bytes()
    cut = archive.with_name("cut.pmtiles")
    cut.write_bytes(raw[: int(len(raw) * fraction)])
    assert_corrupt(cut)


@pytest.mark.parametrize("cut", [1, 7, 8, 126, 127, 130])
def test_files_cut_near_the_header_are_corrupt(archive: Path, cut: int) -> None:
    short = archive.with_name("cut.pmtiles")
    short.write_bytes(archive.read_bytes()[:cut])
    assert_corrupt(short)


def test_wrong_magic_is_corrupt(archive: Path) -> None:
    assert assert_corrupt(patched(archive, 0, b"MBTiles"), "magic").offset == 0


def test_other_versions_are_refused(archive: Path) -> None:
    assert assert_corrupt(patched(archive, 7, b"\x02"), "version 2").offset == 7


@pytest.mark.parametrize(
    ("field", "value", "reported"),
    [
        (8, 2**63, 8),
        (16, 2**40, 8),
        (24, 10**9, 24),
        (48, 10**9, 40),
        (56, 2**64 - 1, 56),
        (64, 10**6, 56),
    ],
)
def test_header_sections_past_the_end_are_corrupt(
    archive: Path, field: int, value: int, reported: int
) -> None:
    error = assert_corrupt(patched(archive, field, struct.pack("<Q", value)), "past the end")
    assert error.offset == reported


def test_unknown_enum_values_are_corrupt(archive: Path) -> None:
    assert assert_corrupt(patched(archive, 99, b"\xc8"), "tile type").offset == 99


def test_garbage_root_directory_is_corrupt(archive: Path) -> None:
    header = header_of(archive)
    garbage = bytes(range(7, 7 + header["root_length"]))
    error = assert_corrupt(patched(archive, header["root_offset"], garbage), "root directory")
    assert error.offset == header["root_offset"]


def test_flipped_byte_in_root_directory_fails_the_gzip_check(archive: Path) -> None:
    header = header_of(archive)
    spot = header["root_offset"] + header["root_length"] - 6
    flipped = bytes([archive.read_bytes()[spot] ^ 0xFF])
    assert_corrupt(patched(archive, spot, flipped), "root directory")


def test_truncated_varints_are_corrupt(tmp_path: Path) -> None:
    path = crafted(tmp_path, [])
    raw = bytearray(path.read_bytes())
    bad_root = gzip.compress(b"\x05\x01\x80", mtime=0)
    header = deserialize_header(bytes(raw[:127]))
    header["root_length"] = len(bad_root)
    rest = raw[127 + len(serialize_directory([])) :]
    header["metadata_offset"] = 127 + len(bad_root)
    header["leaf_directory_offset"] = header["metadata_offset"] + header["metadata_length"]
    header["tile_data_offset"] = header["leaf_directory_offset"]
    path.write_bytes(serialize_header(header) + bad_root + rest)
    assert_corrupt(path, "unreadable")


def test_entries_pointing_past_the_tile_data_are_corrupt(tmp_path: Path) -> None:
    path = crafted(tmp_path, [Entry(0, 30, 10, 1)])
    assert_corrupt(path, "tile data")


def test_zero_length_entries_are_corrupt(tmp_path: Path) -> None:
    assert_corrupt(crafted(tmp_path, [Entry(0, 0, 0, 1)]), "length 0")


def test_leaf_pointing_at_itself_does_not_loop(tmp_path: Path) -> None:
    leaf = serialize_directory([Entry(0, 0, 0, 0)])
    leaf = serialize_directory([Entry(0, 0, len(leaf), 0)])
    assert len(leaf) == len(serialize_directory([Entry(0, 0, len(leaf), 0)]))
    path = crafted(tmp_path, [Entry(0, 0, len(leaf), 0)], leaves=leaf)
    assert_corrupt(path, "deeper")
    with PMTilesReader(path) as reader:
        with pytest.raises(ContainerCorruptError, match="deeper"):
            reader.find_tile(Tile(0, 0, 0))
        assert any("deeper" in problem for problem in reader.verify())


def test_leaf_holding_tiles_outside_its_range_is_corrupt(tmp_path: Path) -> None:
    leaf = serialize_directory([Entry(zxy_to_tileid(3, 0, 0), 0, 8, 1)])
    root = [Entry(0, 0, len(leaf), 0), Entry(1, 8, 8, 1)]
    assert_corrupt(crafted(tmp_path, root, leaves=leaf), "outside its range")


def test_missing_or_non_json_metadata_is_corrupt(archive: Path) -> None:
    header = header_of(archive)
    error = assert_corrupt(patched(archive, header["metadata_offset"] + 12, b"\x00\x00"))
    assert error.offset == header["metadata_offset"]


def test_missing_file_is_a_container_error(tmp_path: Path) -> None:
    with pytest.raises(ContainerError, match="nope"):
        PMTilesReader(tmp_path / "nope.pmtiles")


@settings(max_examples=150, deadline=None)
@given(
    flips=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=6
    )
)
def test_random_damage_gives_container_errors_only(flips: list[tuple[float, int]]) -> None:
    raw = bytearray(_GOOD_ARCHIVE)
    for where, mask in flips:
        raw[int(where * len(raw))] ^= mask
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "damaged.pmtiles"
        path.write_bytes(bytes(raw))
        error: ContainerError | None = None
        try:
            read_everything(path)
            with PMTilesReader(path) as reader:
                assert isinstance(reader.verify(), list)
        except ContainerError as exc:
            error = exc
        if error is not None:
            assert str(path) in str(error)


def _good_archive() -> bytes:
    tiles = sample_tiles(TileFormat.PNG, maxzoom=2)
    with tempfile.TemporaryDirectory() as folder:
        return write(Path(folder) / "g.pmtiles", tiles).read_bytes()


_GOOD_ARCHIVE = _good_archive()


# --- other byte sources -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_an_archive_reads_the_same_from_an_object_store(
    kind: str, archive: Path, tmp_path: Path
) -> None:
    many = random_tiles(30_000)
    big = write(tmp_path / "big.pmtiles", many, TilesetMetadata(tile_format=TileFormat.MVT))
    assert header_of(big)["leaf_directory_length"] > 0
    store: ObjectStore = (
        MemoryObjectStore() if kind == "memory" else LocalObjectStore(tmp_path / "objects")
    )
    for path in (archive, big):
        with path.open("rb") as file:
            store.put_stream(f"archives/{path.name}", file)
        source = ObjectByteSource(store, f"archives/{path.name}")
        with PMTilesReader(path, source=source) as reader, PMTilesReader(path) as direct:
            assert reader.metadata == direct.metadata
            from_store = dict(reader.iter_tiles())
            assert from_store == dict(direct.iter_tiles())
            for tile in random.Random(3).sample(sorted(from_store), min(200, len(from_store))):
                assert reader.find_tile(tile) == direct.find_tile(tile)
    assert from_store == many


def test_an_archive_reads_from_bytes_in_memory(archive: Path) -> None:
    with PMTilesReader(archive, source=BytesByteSource(archive.read_bytes())) as reader:
        assert dict(reader.iter_tiles()) == our_tiles(archive)


def test_a_truncated_object_is_corrupt(archive: Path) -> None:
    store = MemoryObjectStore()
    raw = archive.read_bytes()
    store.put("cut.pmtiles", raw[: len(raw) // 2])
    with pytest.raises(ContainerCorruptError, match="past the end") as raised:
        PMTilesReader("cut.pmtiles", source=ObjectByteSource(store, "cut.pmtiles"))
    assert raised.value.offset is not None


def test_an_object_that_shrinks_while_read_is_corrupt(archive: Path) -> None:
    store = MemoryObjectStore()
    raw = archive.read_bytes()
    store.put("a.pmtiles", raw)
    reader = PMTilesReader("a.pmtiles", source=ObjectByteSource(store, "a.pmtiles"))
    store.put("a.pmtiles", raw[: header_of(archive)["tile_data_offset"] + 1])
    with reader, pytest.raises(ContainerCorruptError, match="truncated at byte") as raised:
        list(reader.iter_tiles())
    assert raised.value.offset == header_of(archive)["tile_data_offset"] + 1


# --- verify ---------------------------------------------------------------------------------------


def test_verify_reports_counts_that_disagree_with_the_header(archive: Path) -> None:
    bad = patched(archive, 72, struct.pack("<Q", 5))
    with PMTilesReader(bad) as reader:
        problems = reader.verify()
    assert any("addressed_tiles_count is 5" in p for p in problems)


def test_verify_reports_unclustered_data_under_a_clustered_flag(tmp_path: Path) -> None:
    path = crafted(tmp_path, [Entry(0, 16, 8, 1), Entry(1, 0, 8, 1)], data=b"\x89PNG\r\n\x1a\n" * 3)
    clustered = patched(path, 96, b"\x01")
    with PMTilesReader(clustered) as reader:
        problems = reader.verify()
    assert any("clustered" in p for p in problems)


def test_verify_reports_tiles_of_another_format(tmp_path: Path) -> None:
    tiles = sample_tiles(TileFormat.PNG, maxzoom=1)
    tiles[Tile(0, 0, 1)] = make_tile(Tile(0, 0, 1), TileFormat.JPEG)
    path = write(tmp_path / "mixed.pmtiles", tiles)
    with PMTilesReader(path) as reader:
        problems = reader.verify()
    assert len(problems) == 1
    assert "jpg" in problems[0]


def test_unknown_tile_type_falls_back_on_the_metadata_or_the_tiles(archive: Path) -> None:
    unknown = patched(archive, 98, bytes([Compression.UNKNOWN.value, TileType.UNKNOWN.value]))
    with PMTilesReader(unknown) as reader:
        assert reader.metadata.tile_format is TileFormat.PNG
        assert reader.metadata.tile_compression is TileCompression.NONE
