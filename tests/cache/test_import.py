"""Import of a container's tiles into a cache: merged over its tiles or overwriting them, in an
area, refused when the tiling scheme or the format differ, harmless when run again; in the
data folder's stores and in PostgreSQL and S3 alike."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Self

import morecantile
import numpy as np
import psycopg
import pyproj
import pytest
from numpy.typing import NDArray
from PIL import Image
from psycopg import sql

import offmaps.cache.imports as imports_module
from offmaps.cache import (
    CacheDefinition,
    CacheSource,
    SourceKind,
    SQLiteTileIndex,
    TileIndex,
    store_tiles,
)
from offmaps.cache.export import CacheTileReader
from offmaps.cache.imports import ImportResult, import_tiles
from offmaps.cache.postgres import PostgresTileIndex
from offmaps.containers import TilesetMetadata, open_reader, open_writer
from offmaps.containers._common import ReaderBase
from offmaps.containers.export import export_tiles, plan_export
from offmaps.containers.merge import merge_tiles
from offmaps.errors import (
    CacheError,
    CacheNotFoundError,
    IncompatibleTileMatrixSetError,
    InvalidAOIError,
    StorageError,
)
from offmaps.storage import BlobRef, BlobStore, MemoryBlobStore, S3BlobStore, S3Config
from offmaps.tiling import AreaOfInterest
from offmaps.types import BBox, Tile, TileFormat, ZoomRange
from tests.features.conftest import postgres_url
from tests.tilegen import make_tile

SIZE = 64
TILES = [Tile(x, y, 3) for x in range(2, 5) for y in (2, 3)]
HALF = 20037508.342789244
MERC = pyproj.CRS.from_epsg(3857)


def png(pixels: NDArray[np.uint8]) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def pixels(data: bytes) -> NDArray[np.uint8]:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def basemap(tile: Tile) -> bytes:
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    rgb = np.stack([rows * 4, cols * 4, np.full_like(rows, 40 * tile.x + 7 * tile.y)], axis=-1)
    return png(rgb.astype(np.uint8))


def overlay(rows: slice, colour: tuple[int, int, int]) -> bytes:
    """Transparent but for opaque ``colour`` in ``rows``."""
    rgba = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)
    rgba[rows] = (*colour, 255)
    return png(rgba)


def new_cache(
    tmp_path: Path, tiles: dict[Tile, bytes], **fields: object
) -> tuple[SQLiteTileIndex, MemoryBlobStore]:
    index, blobs = SQLiteTileIndex(tmp_path / "index.sqlite"), MemoryBlobStore()
    source = CacheSource(kind=SourceKind.ARCHIVE, location="x.mbtiles")
    index.create_cache(CacheDefinition.model_validate({"name": "c", "source": source, **fields}))
    store_tiles(index, blobs, "c", list(tiles.items()))
    return index, blobs


def archive(path: Path, tiles: dict[Tile, bytes], meta: TilesetMetadata | None = None) -> str:
    location = str(path)
    with open_writer(location, meta or TilesetMetadata(TileFormat.PNG)) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    return location


def run(index: TileIndex, blobs: BlobStore, src: str, **options: object) -> ImportResult:
    with open_reader(src) as reader:
        return import_tiles(index, blobs, "c", reader, **options)  # type: ignore[arg-type]


class Grid(ReaderBase):
    """No tiles, in any tile matrix set (the archives hold WebMercatorQuad only)."""

    def __init__(self, meta: TilesetMetadata) -> None:
        self.path, self._meta = Path("grid"), meta

    @property
    def metadata(self) -> TilesetMetadata:
        return self._meta

    def find_tile(self, tile: Tile) -> bytes | None:
        return None

    def iter_tiles(self, zooms: Iterable[int] | None = None) -> Iterator[tuple[Tile, bytes]]:
        return iter(())

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def held(index: TileIndex, blobs: BlobStore) -> dict[Tile, str]:
    """SHA-256 of every tile the cache holds."""
    reader = CacheTileReader(index, blobs, "c")
    return {tile: hashlib.sha256(data).hexdigest() for tile, data in reader.iter_tiles()}


def test_merge_keeps_the_basemap_under_transparent_overlay_pixels(tmp_path: Path) -> None:
    base = {tile: basemap(tile) for tile in TILES}
    index, blobs = new_cache(tmp_path, base)
    src = archive(
        tmp_path / "o.mbtiles", {tile: overlay(slice(0, 8), (255, 0, 0)) for tile in TILES}
    )
    result = run(index, blobs, src)
    assert (result.read, result.merged, result.new, result.changed) == (6, 6, 0, 6)
    for tile in TILES:
        got = pixels(CacheTileReader(index, blobs, "c").get_tile(tile))
        assert (got[:8] == (255, 0, 0, 255)).all()  # the overlay's opaque rows
        assert (got[8:] == pixels(base[tile])[8:]).all()  # the basemap under transparent ones
    index.close()


def test_overwrite_replaces_and_a_missing_tile_is_stored_as_given(tmp_path: Path) -> None:
    index, blobs = new_cache(tmp_path, {tile: basemap(tile) for tile in TILES[:3]})
    incoming = {tile: overlay(slice(0, 8), (0, 0, 255)) for tile in TILES}
    result = run(index, blobs, archive(tmp_path / "o.mbtiles", incoming), overwrite=True)
    assert (result.overwritten, result.new, result.merged) == (3, 3, 0)
    reader = CacheTileReader(index, blobs, "c")
    assert dict(reader.iter_tiles()) == incoming  # transparency included, byte for byte
    index.close()


def test_non_overlapping_overlays_give_the_same_cache_in_either_order(tmp_path: Path) -> None:
    a = {tile: overlay(slice(0, 8), (255, 0, 0)) for tile in TILES}
    b = {tile: overlay(slice(30, 40), (0, 255, 0)) for tile in TILES[2:]}
    results: list[dict[Tile, str]] = []
    for order in ((a, b), (b, a)):
        folder = tmp_path / str(len(results))
        folder.mkdir()
        index, blobs = new_cache(folder, {tile: basemap(tile) for tile in TILES})
        for number, tiles in enumerate(order):
            run(index, blobs, archive(folder / f"{number}.mbtiles", tiles))
        results.append(held(index, blobs))
        index.close()
    assert results[0] == results[1]


def test_a_rerun_of_a_merge_leaves_the_cache_as_it_was(tmp_path: Path) -> None:
    index, blobs = new_cache(tmp_path, {tile: basemap(tile) for tile in TILES})
    src = archive(tmp_path / "o.mbtiles", {tile: overlay(slice(4, 9), (9, 9, 9)) for tile in TILES})
    run(index, blobs, src)
    after = held(index, blobs)
    again = run(index, blobs, src)
    assert (again.merged, again.changed) == (6, 0)
    assert held(index, blobs) == after
    index.close()


def test_an_area_clips_what_is_imported(tmp_path: Path) -> None:
    index, blobs = new_cache(tmp_path, {})
    incoming = {tile: overlay(slice(0, SIZE), (255, 0, 0)) for tile in TILES}  # opaque
    src = archive(tmp_path / "o.mbtiles", incoming)
    # columns 2-3 of level 3 are west of 0°; the area ends half way across column 3
    aoi = AreaOfInterest.from_bbox(-HALF, -HALF, -HALF / 8, HALF, "EPSG:3857")
    result = run(index, blobs, src, aoi=aoi)
    assert (result.read, result.new, result.clipped, result.left_out) == (4, 4, 2, 0)
    # column 4 is never read: outside the area's tile cover
    reader = CacheTileReader(index, blobs, "c")
    assert reader.get_tile(Tile(2, 2, 3)) == incoming[Tile(2, 2, 3)]  # inside: byte for byte
    cut = pixels(reader.get_tile(Tile(3, 2, 3)))
    assert (cut[:, : SIZE // 2, 3] == 255).all()
    assert (cut[:, SIZE // 2 :, 3] == 0).all()
    assert reader.find_tile(Tile(4, 2, 3)) is None
    index.close()


def test_an_area_away_from_the_source_is_refused(tmp_path: Path) -> None:
    index, blobs = new_cache(tmp_path, {})
    meta = TilesetMetadata(TileFormat.PNG, bounds=BBox(-90, 0, -45, 45))
    src = archive(tmp_path / "o.mbtiles", {Tile(2, 3, 3): basemap(Tile(2, 3, 3))}, meta)
    with pytest.raises(InvalidAOIError, match="does not meet"):
        run(index, blobs, src, aoi=AreaOfInterest.from_bbox(100, 10, 120, 20))
    index.close()


def test_a_corrupt_source_tile_is_listed_and_the_rest_imported(tmp_path: Path) -> None:
    index, blobs = new_cache(tmp_path, {tile: basemap(tile) for tile in TILES})
    incoming = {tile: overlay(slice(0, 8), (255, 0, 0)) for tile in TILES}
    incoming[TILES[0]] = incoming[TILES[0]][:60]  # truncated: its magic bytes still say PNG
    incoming[TILES[1]] = b"\xff\xd8\xff garbage"  # JPEG magic in a PNG tile set
    result = run(index, blobs, archive(tmp_path / "o.mbtiles", incoming))
    assert sorted(f.tile for f in result.failed) == TILES[:2]
    assert any("3/2/3 should be png" in f.error for f in result.failed)
    assert result.merged == 4
    index.close()


@pytest.mark.parametrize(
    ("tms", "difference"),
    [
        (morecantile.tms.get("WorldCRS84Quad"), "different CRS"),
        (
            morecantile.TileMatrixSet.custom([-HALF + 1e6, -HALF, HALF + 1e6, HALF], MERC),
            "origin",
        ),
        (
            morecantile.TileMatrixSet.custom(
                [-HALF, -3 * HALF, 3 * HALF, HALF], MERC, tile_width=512, tile_height=512
            ),
            "tile size 256x256 vs 512x512",
        ),
        (
            morecantile.TileMatrixSet.custom([-HALF, -HALF, HALF, HALF], MERC, minzoom=0),
            "",
        ),
        (
            morecantile.TileMatrixSet.custom(
                [-HALF, -HALF, HALF, HALF], MERC, tile_width=128, tile_height=128
            ),
            "level 0: cell size",
        ),
    ],
)
def test_a_different_tiling_scheme_is_refused_naming_the_difference(
    tmp_path: Path, tms: morecantile.TileMatrixSet, difference: str
) -> None:
    index, blobs = new_cache(tmp_path, {})
    reader = Grid(TilesetMetadata(TileFormat.PNG, tms=tms))
    if not difference:  # the same grid under another name lines up
        assert import_tiles(index, blobs, "c", reader, zooms=ZoomRange(0, 2)).read == 0
    else:
        with pytest.raises(IncompatibleTileMatrixSetError, match=difference):
            import_tiles(index, blobs, "c", reader, zooms=ZoomRange(0, 2))
    index.close()


def test_a_different_format_or_an_unknown_cache_is_refused(tmp_path: Path) -> None:
    index, blobs = new_cache(tmp_path, {})
    tile = Tile(2, 2, 3)
    src = archive(
        tmp_path / "o.mbtiles",
        {tile: make_tile(tile, TileFormat.JPEG)},
        TilesetMetadata(TileFormat.JPEG),
    )
    with open_reader(src) as reader:
        with pytest.raises(CacheError, match="source's tiles are jpg, cache 'c' holds png"):
            import_tiles(index, blobs, "c", reader)
        with pytest.raises(CacheNotFoundError):
            import_tiles(index, blobs, "nope", reader)
    index.close()


def test_a_rerun_composites_semi_transparent_pixels_again(tmp_path: Path) -> None:
    """The documented exception to a harmless rerun: half-transparent pixels darken."""
    tile = TILES[0]
    index, blobs = new_cache(tmp_path, {tile: png(np.full((SIZE, SIZE, 3), 255, np.uint8))})
    rgba = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)
    rgba[:8] = (0, 0, 0, 128)
    src = archive(tmp_path / "o.mbtiles", {tile: png(rgba)})
    shades = []
    for _ in range(2):
        run(index, blobs, src)
        shades.append(int(pixels(CacheTileReader(index, blobs, "c").get_tile(tile))[0, 0, 0]))
    assert shades[0] > shades[1]
    index.close()


def test_progress_counts_every_tile_read(tmp_path: Path) -> None:
    index, blobs = new_cache(tmp_path, {})
    src = archive(tmp_path / "o.mbtiles", {tile: basemap(tile) for tile in TILES})
    steps: list[int] = []
    result = run(index, blobs, src, progress=steps.append)
    assert sum(steps) == result.read == result.new == 6
    index.close()


class FailingBlobs(MemoryBlobStore):
    """Fails the put after ``puts`` successful ones: an import stopped part way."""

    def __init__(self, puts: int) -> None:
        super().__init__()
        self.left = puts

    def put(self, data: bytes) -> BlobRef:
        if self.left == 0:
            raise StorageError("disk full")
        self.left -= 1
        return super().put(data)


def test_a_stopped_import_leaves_tiles_old_or_new_and_a_rerun_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imports_module, "IMPORT_BATCH", 2)
    base = {tile: basemap(tile) for tile in TILES}
    incoming = {tile: overlay(slice(0, 8), (255, 0, 0)) for tile in TILES}
    expected_dir, stopped_dir = tmp_path / "expected", tmp_path / "stopped"
    expected_dir.mkdir()
    stopped_dir.mkdir()
    src = archive(tmp_path / "o.mbtiles", incoming)
    index, blobs = new_cache(expected_dir, base)
    run(index, blobs, src)
    expected, before = (
        held(index, blobs),
        {t: hashlib.sha256(d).hexdigest() for t, d in base.items()},
    )
    index.close()

    index = SQLiteTileIndex(stopped_dir / "index.sqlite")
    flaky = FailingBlobs(len(base) + 3)  # the basemap, then the first batch and one more tile
    index.create_cache(
        CacheDefinition(name="c", source=CacheSource(kind=SourceKind.ARCHIVE, location="x"))
    )
    store_tiles(index, flaky, "c", list(base.items()))
    with pytest.raises(StorageError):
        run(index, flaky, src)
    now = held(index, flaky)
    assert all(now[tile] in (before[tile], expected[tile]) for tile in TILES)
    assert sum(now[tile] == expected[tile] for tile in TILES) == 2  # the first batch only
    flaky.left = -1  # no more failures
    run(index, flaky, src)
    assert held(index, flaky) == expected
    index.close()


def test_a_tile_whose_headers_say_opaque_is_stored_as_given_undecoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rgb = png(np.full((SIZE, SIZE, 3), 7, np.uint8))
    with_trns = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (7, 7, 7)).save(with_trns, "PNG", transparency=(7, 7, 7))
    rgba = overlay(slice(0, SIZE), (7, 7, 7))  # opaque, but its header has an alpha channel
    palette = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (7, 7, 7)).convert("P").save(palette, "PNG")
    assert imports_module._opaque_by_header(rgb)
    assert imports_module._opaque_by_header(palette.getvalue())
    assert imports_module._opaque_by_header(make_tile(TILES[0], TileFormat.JPEG))
    assert not imports_module._opaque_by_header(with_trns.getvalue())
    assert not imports_module._opaque_by_header(rgba)
    assert not imports_module._opaque_by_header(rgb[:20])

    merged: list[Tile | None] = []

    def spy(existing: bytes, incoming: bytes, **options: Any) -> bytes:
        merged.append(options["tile"])
        return merge_tiles(existing, incoming, **options)

    monkeypatch.setattr(imports_module, "merge_tiles", spy)
    index, blobs = new_cache(tmp_path, {tile: basemap(tile) for tile in TILES[:2]})
    src = archive(tmp_path / "o.mbtiles", {TILES[0]: rgb, TILES[1]: rgba})
    result = run(index, blobs, src)
    assert (result.merged, merged) == (2, [TILES[1]])  # only the RGBA one decoded
    reader = CacheTileReader(index, blobs, "c")
    assert reader.get_tile(TILES[0]) == rgb
    assert reader.get_tile(TILES[1]) == rgba
    index.close()


def test_overlays_into_an_empty_cache_give_the_same_cache_in_either_order(tmp_path: Path) -> None:
    a = {tile: overlay(slice(0, 8), (255, 0, 0)) for tile in TILES}
    b = {tile: overlay(slice(30, 40), (0, 255, 0)) for tile in TILES[2:]}
    results: list[dict[Tile, str]] = []
    for order in ((a, b), (b, a)):
        folder = tmp_path / str(len(results))
        folder.mkdir()
        index, blobs = new_cache(folder, {})
        for number, tiles in enumerate(order):
            run(index, blobs, archive(folder / f"{number}.mbtiles", tiles))
        results.append(held(index, blobs))
        index.close()
    assert results[0] == results[1]


def test_import_and_export_run_alike_on_postgresql_and_s3(
    tmp_path: Path, s3_config: S3Config
) -> None:
    base = {tile: basemap(tile) for tile in TILES}
    embedded = new_cache(tmp_path, base)
    url, schema = postgres_url(), f"cache_{uuid.uuid4().hex[:12]}"
    index, blobs = PostgresTileIndex(url, schema=schema), S3BlobStore(s3_config)
    try:
        source = CacheSource(kind=SourceKind.ARCHIVE, location="x.mbtiles")
        index.create_cache(CacheDefinition(name="c", source=source))
        store_tiles(index, blobs, "c", list(base.items()))
        src = archive(
            tmp_path / "o.mbtiles", {tile: overlay(slice(0, 8), (255, 0, 0)) for tile in TILES}
        )
        assert run(index, blobs, src).merged == run(*embedded, src).merged == 6
        assert held(index, blobs) == held(*embedded)
        with CacheTileReader(index, blobs, "c") as reader:
            exported = export_tiles(reader, str(tmp_path / "out.mbtiles"), plan_export(reader))
        assert (exported.written, exported.failures) == (6, 0)
        with open_reader(str(tmp_path / "out.mbtiles")) as out:
            assert {t: hashlib.sha256(d).hexdigest() for t, d in out.iter_tiles()} == held(
                index, blobs
            )
    finally:
        index.close()
        embedded[0].close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
