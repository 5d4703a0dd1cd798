"""Export and import of MIXED tile sets (JPEG tiles, PNG where a tile has transparency): a mixed
cache or an ArcGIS MIXED cache exported into an Esri cache stays MIXED, each tile its bytes and
each clipped tile PNG; into MBTiles, GeoPackage or PMTiles it becomes PNG, and says so; imported,
it goes into a mixed cache only; a tile of neither format is listed, never a traceback."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from offmaps.cache import (
    CacheDefinition,
    CacheSource,
    SourceKind,
    SQLiteTileIndex,
    TileCacheService,
    store_tiles,
)
from offmaps.cache.export import CacheTileReader
from offmaps.cache.imports import import_tiles
from offmaps.cache.jobs import ExportCache, export_cache
from offmaps.cli import main
from offmaps.containers import TilesetMetadata, open_reader, open_writer
from offmaps.containers import export as export_module
from offmaps.containers.base import detect_tile_format
from offmaps.containers.export import ExportResult, export_tiles, plan_export
from offmaps.containers.registry import ContainerKind
from offmaps.errors import CacheError
from offmaps.jobs import FolderJobStore, Job, JobContext
from offmaps.storage import MemoryBlobStore, MemoryObjectStore
from offmaps.tiling import AreaOfInterest, area_from_bbox
from offmaps.types import Tile, TileFormat
from tests.containers.test_esri_mixed import (
    LEVEL2,
    MIXED_TILES,
    SIZE,
    arcgis_compact,
    arcgis_exploded,
)

# the Web Mercator world east of longitude -45, through the middle of column 1 of level 2:
# column 0 outside, column 1 cut (JPEG tiles), columns 2-3 inside (JPEG, and PNG with a
# transparent half)
HALF = 20037508.342789244
WEST = f"{-HALF / 4},{-HALF},{HALF},{HALF}"
AREA = AreaOfInterest.from_bbox(-HALF / 4, -HALF, HALF, HALF, "EPSG:3857")
JPEG_TILES = [t for t in LEVEL2 if t.x in (1, 2)]


def kind(data: bytes) -> TileFormat:
    return detect_tile_format(data)[0]


def rgba(data: bytes) -> NDArray[np.uint8]:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def mixed_cache(tmp_path: Path) -> tuple[SQLiteTileIndex, MemoryBlobStore]:
    """Cache ``c`` of format mixed holding :data:`MIXED_TILES`."""
    index, blobs = SQLiteTileIndex(tmp_path / "index.sqlite"), MemoryBlobStore()
    source = CacheSource(kind=SourceKind.ARCHIVE, location="x.mbtiles")
    index.create_cache(CacheDefinition(name="c", source=source, format=TileFormat.PNG, mixed=True))
    store_tiles(index, blobs, "c", list(MIXED_TILES.items()))
    return index, blobs


def read_all(location: str) -> tuple[TilesetMetadata, dict[Tile, bytes]]:
    with open_reader(location) as reader:
        return reader.metadata, dict(reader.iter_tiles())


def check_clipped_mixed(got: dict[Tile, bytes], result: ExportResult) -> None:
    """What a MIXED export clipped to :data:`AREA` holds."""
    assert result.tile_format == "mixed"
    assert not any(t.x == 0 for t in got)
    for tile in LEVEL2:
        if tile.x >= 2:  # inside: byte for byte, JPEG or PNG
            assert got[tile] == MIXED_TILES[tile]
        elif tile.x == 1:  # JPEG tiles cut: PNG, transparent outside, their pixels inside
            assert kind(got[tile]) is TileFormat.PNG
            pixels = rgba(got[tile])
            assert (pixels[:, : SIZE // 2 - 2, 3] == 0).all()
            assert (pixels[:, SIZE // 2 + 2 :, 3] == 255).all()
            source = rgba(MIXED_TILES[tile])
            assert (pixels[:, SIZE // 2 + 2 :] == source[:, SIZE // 2 + 2 :]).all()
    assert (result.copied, result.clipped, result.reencoded) == (8, 4, 0)


@pytest.mark.parametrize("prefix", ["esri-compact", "esri-exploded"])
def test_a_mixed_cache_exports_into_an_esri_cache_as_mixed(prefix: str, tmp_path: Path) -> None:
    index, blobs = mixed_cache(tmp_path)
    reader = CacheTileReader(index, blobs, "c")
    assert reader.metadata.mixed
    dst = f"{prefix}:{tmp_path / 'out'}"
    whole = export_tiles(reader, dst, plan_export(reader))
    assert (whole.tile_format, whole.copied, whole.reencoded) == ("mixed", 16, 0)
    meta, got = read_all(dst)
    assert meta.mixed
    assert got == MIXED_TILES
    assert "<CacheTileFormat>MIXED</CacheTileFormat>" in (tmp_path / "out/conf.xml").read_text()
    clipped = export_tiles(reader, f"{prefix}:{tmp_path / 'clip'}", plan_export(reader, aoi=AREA))
    check_clipped_mixed(read_all(f"{prefix}:{tmp_path / 'clip'}")[1], clipped)
    index.close()


@pytest.mark.parametrize("name", ["o.mbtiles", "o.gpkg", "o.pmtiles"])
def test_a_mixed_cache_exports_into_an_archive_as_png_and_says_so(
    name: str, tmp_path: Path
) -> None:
    index, blobs = mixed_cache(tmp_path)
    reader = CacheTileReader(index, blobs, "c")
    dst = str(tmp_path / name)
    result = export_tiles(reader, dst, plan_export(reader))
    assert (result.tile_format, result.copied, result.reencoded) == ("png", 16, 8)
    meta, got = read_all(dst)
    assert (meta.tile_format, meta.mixed) == (TileFormat.PNG, False)
    for tile, data in got.items():
        assert kind(data) is TileFormat.PNG
        if tile in JPEG_TILES:  # the JPEG's own decoded pixels, losslessly
            assert (rgba(data) == rgba(MIXED_TILES[tile])).all()
        else:
            assert data == MIXED_TILES[tile]
    index.close()


def test_a_mixed_export_clips_alike_in_worker_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = f"esri-compact:{arcgis_compact(tmp_path / 'arcgis', MIXED_TILES)}"
    monkeypatch.setattr(export_module, "INLINE_CUT_TILES", 1)
    monkeypatch.setattr(export_module, "TASKS_PER_PROCESS", 1)
    results = {}
    for processes in (1, 2):
        dst = f"esri-compact:{tmp_path / str(processes)}"
        with open_reader(src) as reader:
            plan = plan_export(reader, aoi=AREA)
            results[processes] = export_tiles(reader, dst, plan, processes=processes)
        check_clipped_mixed(read_all(dst)[1], results[processes])
    assert results[1] == results[2]
    assert read_all(f"esri-compact:{tmp_path / '1'}") == read_all(f"esri-compact:{tmp_path / '2'}")


def test_the_cli_exports_an_arcgis_mixed_cache_as_mixed_or_as_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = f"esri-exploded:{arcgis_exploded(tmp_path / 'arcgis', MIXED_TILES)}"
    out = tmp_path / "out"
    area = ("--bbox", WEST, "--aoi-crs", "EPSG:3857")
    code, stdout, err = run(capsys, "cache", "export", src, f"esri-compact:{out}", *area, "--json")
    assert code == 0, err
    document = json.loads(stdout)
    assert (document["tile_format"], document["reencoded"]) == ("mixed", 0)
    check_clipped_mixed(read_all(f"esri-compact:{out}")[1], _counts(document))
    code, _, err = run(capsys, "cache", "export", src, str(tmp_path / "o.mbtiles"))
    assert code == 0, err
    assert "the source is mixed (PNG and JPEG tiles)" in err
    assert "8 JPEG tiles were re-encoded as PNG" in err
    meta, got = read_all(str(tmp_path / "o.mbtiles"))
    assert meta.tile_format is TileFormat.PNG
    assert {kind(data) for data in got.values()} == {TileFormat.PNG}


def _counts(document: dict[str, object]) -> ExportResult:
    def number(key: str) -> int:
        value = document[key]
        assert isinstance(value, int)
        return value

    return ExportResult(
        read=number("read"),
        copied=number("copied"),
        clipped=number("clipped"),
        left_out=number("left_out"),
        failures=number("failures"),
        failed=(),
        tile_format=str(document["tile_format"]),
        reencoded=number("reencoded"),
    )


@pytest.fixture
def data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """A data folder with cache ``m`` (mixed) and cache ``p`` (PNG), holding no tile."""
    base = tmp_path / "base.mbtiles"
    with open_writer(str(base), TilesetMetadata(TileFormat.PNG)) as writer:
        writer.write_tile(Tile(0, 0, 0), MIXED_TILES[Tile(0, 0, 2)])
    folder = tmp_path / "data"
    folder.mkdir()
    for name, tile_format in (("m", "mixed"), ("p", "png")):
        args = ("--archive", str(base), "--format", tile_format, "--data", str(folder))
        assert run(capsys, "cache", "create", name, *args)[0] == 0
    return str(folder)


def test_an_arcgis_mixed_cache_imports_into_a_mixed_cache_and_exports_back_mixed(
    data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = f"esri-compact:{arcgis_compact(tmp_path / 'arcgis', MIXED_TILES)}"
    code, stdout, err = run(capsys, "cache", "import", src, "m", "--data", data, "--json")
    assert code == 0, err
    assert (json.loads(stdout)["new"], json.loads(stdout)["failures"]) == (16, 0)
    out = tmp_path / "out"
    args = ("--data", data, "--bbox", WEST, "--aoi-crs", "EPSG:3857", "--json")
    code, stdout, err = run(capsys, "cache", "export", "m", f"esri-compact:{out}", *args)
    assert code == 0, err
    check_clipped_mixed(read_all(f"esri-compact:{out}")[1], _counts(json.loads(stdout)))


def test_an_arcgis_mixed_cache_is_refused_by_a_png_cache(
    data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = f"esri-compact:{arcgis_compact(tmp_path / 'arcgis', MIXED_TILES)}"
    code, _, err = run(capsys, "cache", "import", src, "p", "--data", data)
    assert code == 1
    assert err.startswith("CacheError: the source's tiles are mixed (PNG and JPEG), cache 'p'")
    assert "import into a mixed cache" in err
    assert err.count("\n") == 1


def test_a_mixed_cache_source_is_refused_by_a_png_cache(tmp_path: Path) -> None:
    index, blobs = mixed_cache(tmp_path)
    source = CacheSource(kind=SourceKind.ARCHIVE, location="x.mbtiles")
    index.create_cache(CacheDefinition(name="p", source=source, format=TileFormat.PNG))
    with pytest.raises(CacheError, match="source's tiles are mixed"):
        import_tiles(index, blobs, "p", CacheTileReader(index, blobs, "c"))
    index.close()


def bad_tiles() -> dict[Tile, bytes]:
    """:data:`MIXED_TILES` with a WebP tile inside the area and garbage in a cut tile."""
    webp = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (1, 2, 3)).save(webp, "WEBP")
    return MIXED_TILES | {Tile(2, 2, 2): webp.getvalue(), Tile(1, 2, 2): b"\xff\xd8\xff garbage"}


@pytest.mark.parametrize("area", [(), ("--bbox", WEST, "--aoi-crs", "EPSG:3857")])
def test_a_mixed_cache_with_tiles_of_neither_format_lists_them_and_exports_the_rest(
    area: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = f"esri-compact:{arcgis_compact(tmp_path / 'arcgis', bad_tiles())}"
    for dst in (f"esri-exploded:{tmp_path / 'out'}", str(tmp_path / "o.mbtiles")):
        code, stdout, err = run(capsys, "cache", "export", src, dst, *area, "--json")
        assert code == 0, err
        document = json.loads(stdout)
        failed = {tuple(f["tile"]): f["error"] for f in document["failed"]}
        assert failed[(2, 2, 2)] == "tile 2/2/2 is webp: a mixed tile set holds PNG and JPEG tiles"
        got = read_all(dst)[1]
        assert Tile(2, 2, 2) not in got
        # a JPEG tile copied whole is checked by its magic bytes only (as any tile copied);
        # one clipped or re-encoded as PNG is decoded, and fails
        decoded = bool(area) or dst.endswith(".mbtiles")
        if decoded:
            assert failed[(2, 1, 2)].startswith("tile 2/1/2 is not a valid jpg image")
        assert (document["failures"], Tile(1, 2, 2) in got) == (2 if decoded else 1, not decoded)
        assert len(got) == (10 if area else 16 - document["failures"])


def test_an_import_of_tiles_of_neither_format_lists_them_and_exits_1(
    data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = f"esri-exploded:{arcgis_exploded(tmp_path / 'arcgis', bad_tiles())}"
    code, stdout, err = run(capsys, "cache", "import", src, "m", "--data", data, "--json")
    assert code == 1
    document = json.loads(stdout)
    assert sorted(tuple(f["tile"]) for f in document["failed"]) == [(2, 2, 2)]
    assert document["failed"][0]["error"] == (
        "tile 2/2/2 is webp: a mixed tile set holds PNG and JPEG tiles"
    )
    assert err.startswith("CacheError: 1 tiles of")
    assert err.count("\n") == 1
    assert document["new"] == 15  # the garbage JPEG is stored as given: its header is JPEG's


@pytest.mark.parametrize(
    ("container", "tile_format"), [("esri-compact", "mixed"), ("pmtiles", "png")]
)
def test_a_server_export_job_of_a_mixed_cache_is_mixed_or_png_by_its_container(
    container: str, tile_format: str, tmp_path: Path
) -> None:
    index, blobs = mixed_cache(tmp_path)
    store = FolderJobStore(tmp_path / "jobs")
    job = Job(id="a" * 32, kind="export_tile_cache", owner=None)
    store.create(job)
    output = MemoryObjectStore()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    context = JobContext(store, job, output=output, scratch=scratch)
    payload = ExportCache(
        cache="c",
        max_tiles=1000,
        format=ContainerKind(container),
        area=area_from_bbox(-180, -85, 180, 85),
        min_zoom=2,
        max_zoom=2,
    )
    result = export_cache(TileCacheService(index, blobs), payload, context)
    # rows 1-2 wholly inside (their JPEG tiles copied or re-encoded), rows 0 and 3 cut at 85°
    assert (result["tile_format"], result["reencoded"]) == (
        tile_format,
        4 * (container == "pmtiles"),
    )
    assert (result["copied"], result["clipped"]) == (8, 8)
    for entry in result["files"]:  # the export's files, as a client downloads them
        target = tmp_path / "download" / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(output.get(entry["path"]))
    where = tmp_path / "download" / ("c" if container == "esri-compact" else "c.pmtiles")
    meta, got = read_all(f"{container}:{where}" if container == "esri-compact" else str(where))
    assert meta.mixed is (container == "esri-compact")
    formats = {kind(data) for data in got.values()}
    if container == "esri-compact":
        assert formats == {TileFormat.PNG, TileFormat.JPEG}
        assert got[Tile(1, 1, 2)] == MIXED_TILES[Tile(1, 1, 2)]  # a JPEG tile kept as it was
    else:
        assert formats == {TileFormat.PNG}
    index.close()


def test_an_arcgis_mixed_archive_is_the_source_of_a_mixed_cache_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = f"esri-compact:{arcgis_compact(tmp_path / 'arcgis', MIXED_TILES)}"
    folder = tmp_path / "data"
    folder.mkdir()
    args = ("--archive", src, "--data", str(folder))
    code, _, err = run(capsys, "cache", "create", "p", *args, "--format", "png")
    assert code == 1
    assert err.startswith("CacheError: cache 'p' is png, but its source")
    assert 'is mixed (PNG and JPEG tiles): give format "mixed"' in err
    assert err.count("\n") == 1
    code, _, err = run(capsys, "cache", "create", "m", *args, "--format", "mixed")
    assert code == 0, err
