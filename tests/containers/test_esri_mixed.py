"""Esri caches of ArcGIS's MIXED format (JPEG tiles, PNG where a tile has transparency): read as
a mixed tile set whose tiles are each told by their bytes, written back as MIXED by the folder
writers, refused by the archives of one format, and read by GDAL's ESRIC driver."""

from __future__ import annotations

import io
import shutil
import warnings
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pyproj
import pytest
import rasterio
from numpy.typing import NDArray
from PIL import Image
from pyproj.enums import WktVersion
from rasterio.windows import Window

from offmaps.cli import main
from offmaps.containers import TilesetMetadata, open_reader, open_writer
from offmaps.containers._folder import ForeignSchemeWarning
from offmaps.containers.base import EntriesSkippedWarning, detect_tile_format, web_mercator_quad
from offmaps.containers.compact import EsriCompactWriter
from offmaps.containers.esri_conf import parse_cache_info
from offmaps.containers.exploded import EsriExplodedWriter, XYZFolderWriter
from offmaps.containers.export import export_tiles, plan_export
from offmaps.errors import ContainerCorruptError, ContainerWriteError, UnsupportedTileFormatError
from offmaps.tiling import AreaOfInterest, tile_cover
from offmaps.types import Tile, TileFormat, ZoomRange

SIZE = 256
# ArcGIS Online's scheme as ArcGIS writes it: its origin and level 0 resolution, 17 digits
ORIGIN = 20037508.342787001
LEVEL0 = 156543.03392800014
MERCATOR_WKT = escape(pyproj.CRS.from_epsg(3857).to_wkt(WktVersion.WKT1_ESRI))
# level 2 of Web Mercator: its columns 0 and 3 hold PNG tiles with a transparent half (the edge
# of the cache's extent, as ArcGIS makes them), columns 1 and 2 opaque JPEG tiles
LEVEL2 = [Tile(x, y, 2) for x in range(4) for y in range(4)]


def jpeg(tile: Tile) -> bytes:
    """An opaque JPEG of a smooth gradient in colours of the tile's key (no sharp edges, which
    two JPEG decoders upsample a little differently)."""
    ramp = np.linspace(0, 60, SIZE, dtype=np.float64)
    pixels = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    pixels[..., 0] = 40 + tile.x * 50 + ramp[None, :]
    pixels[..., 1] = 40 + tile.y * 50 + ramp[:, None]
    pixels[..., 2] = 120
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def edge_png(tile: Tile) -> bytes:
    """A PNG whose left half is transparent, the rest a colour of the tile's key."""
    pixels = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)
    pixels[:, SIZE // 2 :] = (tile.x * 60, tile.y * 60, 90, 255)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


MIXED_TILES = {t: edge_png(t) if t.x in (0, 3) else jpeg(t) for t in LEVEL2}


def arcgis_mixed_conf(storage: str = "CompactV2", levels: int = 3) -> str:
    """A conf.xml of a MIXED Web Mercator cache laid out as ArcGIS writes one."""
    lods = "".join(
        f'<LODInfo xsi:type="typens:LODInfo"><LevelID>{z}</LevelID>'
        f"<Scale>{LEVEL0 / 2**z / 0.0254 * 96:.17g}</Scale>"
        f"<Resolution>{LEVEL0 / 2**z:.17g}</Resolution></LODInfo>"
        for z in range(levels)
    )
    return (
        '<?xml version="1.0" encoding="utf-8" ?>\n'
        '<CacheInfo xsi:type="typens:CacheInfo" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:xs="http://www.w3.org/2001/XMLSchema" '
        'xmlns:typens="http://www.esri.com/schemas/ArcGIS/10.3">'
        '<TileCacheInfo xsi:type="typens:TileCacheInfo">'
        '<SpatialReference xsi:type="typens:ProjectedCoordinateSystem">'
        f"<WKT>{MERCATOR_WKT}</WKT>"
        "<XOrigin>-20037700</XOrigin><YOrigin>-30241100</YOrigin>"
        "<XYScale>148923141.92838538</XYScale><ZOrigin>-100000</ZOrigin><ZScale>10000</ZScale>"
        "<MOrigin>-100000</MOrigin><MScale>10000</MScale><XYTolerance>0.001</XYTolerance>"
        "<HighPrecision>true</HighPrecision><WKID>102100</WKID><LatestWKID>3857</LatestWKID>"
        "</SpatialReference>"
        f'<TileOrigin xsi:type="typens:PointN"><X>-{ORIGIN}</X><Y>{ORIGIN}</Y></TileOrigin>'
        "<TileCols>256</TileCols><TileRows>256</TileRows><DPI>96</DPI><PreciseDPI>96</PreciseDPI>"
        f'<LODInfos xsi:type="typens:ArrayOfLODInfo">{lods}</LODInfos>'
        "</TileCacheInfo>"
        '<TileImageInfo xsi:type="typens:TileImageInfo"><CacheTileFormat>MIXED</CacheTileFormat>'
        "<CompressionQuality>75</CompressionQuality><Antialiasing>true</Antialiasing>"
        "</TileImageInfo>"
        '<CacheStorageInfo xsi:type="typens:CacheStorageInfo">'
        f"<StorageFormat>esriMapCacheStorageMode{storage}</StorageFormat>"
        "<PacketSize>128</PacketSize></CacheStorageInfo></CacheInfo>\n"
    )


def arcgis_compact(folder: Path, tiles: dict[Tile, bytes]) -> Path:
    """A MIXED compact cache as ArcGIS leaves it: bundles (written by the compact writer, which
    stores bytes as given), conf.xml, no offmaps sidecar files."""
    with EsriCompactWriter(folder, TilesetMetadata(TileFormat.PNG)) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    for name in ("metadata.json", "tilematrixset.json", "conf.cdi"):
        (folder / name).unlink()
    (folder / "conf.xml").write_text(arcgis_mixed_conf(), "utf-8")
    return folder


def arcgis_exploded(folder: Path, tiles: dict[Tile, bytes]) -> Path:
    """A MIXED exploded cache as ArcGIS leaves it, written by hand: ``C{col}.jpg`` or
    ``C{col}.png`` by each tile's format, conf.xml."""
    for tile, data in tiles.items():
        row = folder / "_alllayers" / f"L{tile.z:02d}" / f"R{tile.y:08x}"
        row.mkdir(parents=True, exist_ok=True)
        suffix = "png" if data.startswith(b"\x89PNG") else "jpg"
        (row / f"C{tile.x:08x}.{suffix}").write_bytes(data)
    (folder / "conf.xml").write_text(arcgis_mixed_conf("Exploded"), "utf-8")
    return folder


def kind(data: bytes) -> TileFormat:
    return detect_tile_format(data)[0]


def rgba(data: bytes) -> NDArray[np.uint8]:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


@pytest.fixture(params=["esri-compact", "esri-exploded"])
def arcgis(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A MIXED cache made by ArcGIS, as ``esri-compact:DIR`` or ``esri-exploded:DIR``."""
    prefix = str(request.param)
    make = arcgis_compact if prefix == "esri-compact" else arcgis_exploded
    return f"{prefix}:{make(tmp_path / 'arcgis', MIXED_TILES)}"


def test_conf_xml_of_a_mixed_cache_parses_with_no_single_format() -> None:
    info = parse_cache_info(arcgis_mixed_conf().encode(), Path("conf.xml"))
    assert (info.cache_tile_format, info.tile_format) == ("MIXED", None)
    assert info.tms is web_mercator_quad()


def test_an_arcgis_mixed_cache_reads_each_tile_as_its_bytes(arcgis: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_reader(arcgis) as reader:
            meta = reader.metadata
            assert (meta.mixed, meta.tile_format, meta.format_name) == (
                True,
                TileFormat.PNG,
                "mixed",
            )
            assert meta.tile_formats == {TileFormat.PNG, TileFormat.JPEG}
            assert meta.tms is web_mercator_quad()
            assert (meta.minzoom, meta.maxzoom) == (2, 2)
            assert dict(reader.iter_tiles()) == MIXED_TILES
            assert reader.count_tiles() == len(MIXED_TILES)
            assert reader.find_tile(Tile(1, 1, 2)) == MIXED_TILES[Tile(1, 1, 2)]  # a .jpg
            assert reader.find_tile(Tile(0, 1, 2)) == MIXED_TILES[Tile(0, 1, 2)]  # a .png
            aoi = AreaOfInterest.from_bbox(-100, -10, -10, 10, "EPSG:4326")  # columns 0-1
            cover = tile_cover(aoi, meta.tms, ZoomRange(2, 2))
            got = dict(reader.iter_cover(cover))
            assert got == {t: MIXED_TILES[t] for t in LEVEL2 if t.x in (0, 1) and t.y in (1, 2)}
            assert reader.verify() == []


def test_a_tile_of_another_format_in_a_mixed_cache_is_named_by_verify(tmp_path: Path) -> None:
    webp = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (1, 2, 3)).save(webp, "WEBP")
    tiles = MIXED_TILES | {Tile(1, 1, 2): webp.getvalue()}
    folder = arcgis_compact(tmp_path / "c", tiles)
    with open_reader(f"esri-compact:{folder}") as reader:
        [problem] = reader.verify()
    assert "tile 2/1/1 is webp/none, the tile set is mixed/none" in problem


def test_an_exploded_tile_with_both_files_reads_its_jpg_and_verify_names_the_png(
    tmp_path: Path,
) -> None:
    folder = arcgis_exploded(tmp_path / "c", MIXED_TILES)
    row = folder / "_alllayers" / "L02" / "R00000001"
    (row / "C00000001.png").write_bytes(edge_png(Tile(1, 1, 2)))
    with open_reader(f"esri-exploded:{folder}") as reader:
        assert reader.find_tile(Tile(1, 1, 2)) == MIXED_TILES[Tile(1, 1, 2)]
        with pytest.warns(EntriesSkippedWarning, match="another file of the same tile"):
            assert dict(reader.iter_tiles()) == MIXED_TILES
        [problem] = reader.verify()
    assert "C00000001.png: another file of the same tile is read" in problem


@pytest.mark.parametrize("prefix", ["esri-compact", "esri-exploded", "xyz", "tms"])
def test_a_folder_written_mixed_reads_back_mixed_tile_for_tile(prefix: str, tmp_path: Path) -> None:
    dst = f"{prefix}:{tmp_path / 'out'}"
    with open_writer(dst, TilesetMetadata(TileFormat.PNG, mixed=True)) as writer:
        for tile, data in MIXED_TILES.items():
            writer.write_tile(tile, data)
    assert '"format": "mixed"' in (tmp_path / "out" / "metadata.json").read_text()
    with open_reader(dst) as reader:
        assert reader.metadata.mixed
        assert dict(reader.iter_tiles()) == MIXED_TILES
        assert reader.verify() == []
    if prefix.startswith("esri"):
        conf = (tmp_path / "out" / "conf.xml").read_text()
        assert "<CacheTileFormat>MIXED</CacheTileFormat>" in conf
        for name in ("metadata.json", "tilematrixset.json"):  # as ArcGIS would see it
            (tmp_path / "out" / name).unlink()
        with open_reader(dst) as reader:
            assert reader.metadata.mixed
            assert dict(reader.iter_tiles()) == MIXED_TILES


def test_an_exploded_mixed_folder_names_each_file_by_its_bytes(tmp_path: Path) -> None:
    with EsriExplodedWriter(tmp_path / "c", TilesetMetadata(TileFormat.PNG, mixed=True)) as w:
        w.write_tile(Tile(1, 1, 2), jpeg(Tile(1, 1, 2)))
        w.write_tile(Tile(0, 1, 2), jpeg(Tile(0, 1, 2)))
        w.write_tile(Tile(0, 1, 2), edge_png(Tile(0, 1, 2)))  # written again: one file left
    row = tmp_path / "c" / "_alllayers" / "L02" / "R00000001"
    assert sorted(p.name for p in row.iterdir()) == ["C00000000.png", "C00000001.jpg"]


def test_a_mixed_writer_refuses_a_tile_neither_png_nor_jpeg(tmp_path: Path) -> None:
    with (
        pytest.raises(ContainerWriteError, match="tile 2/1/1 is neither PNG nor JPEG"),
        XYZFolderWriter(tmp_path / "c", TilesetMetadata(TileFormat.PNG, mixed=True)) as writer,
    ):
        writer.write_tile(Tile(1, 1, 2), b"GIF89a....")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("name", ["o.mbtiles", "o.gpkg", "o.pmtiles"])
def test_an_archive_of_one_format_refuses_a_mixed_tile_set(name: str, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedTileFormatError, match="holds tiles of one format"):
        open_writer(tmp_path / name, TilesetMetadata(TileFormat.PNG, mixed=True))
    assert not (tmp_path / name).exists()


def test_metadata_json_and_a_disagreeing_conf_xml_warn(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    with EsriCompactWriter(folder, TilesetMetadata(TileFormat.JPEG)) as writer:
        writer.write_tile(Tile(1, 1, 2), jpeg(Tile(1, 1, 2)))
    (folder / "conf.xml").write_text(arcgis_mixed_conf(), "utf-8")
    with pytest.warns(ForeignSchemeWarning, match="it says mixed tiles, metadata.json jpg"):
        reader = open_reader(f"esri-compact:{folder}")
    with reader:
        assert (reader.metadata.tile_format, reader.metadata.mixed) == (TileFormat.JPEG, False)


def test_metadata_json_saying_mixed_with_another_format_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    with XYZFolderWriter(folder, TilesetMetadata(TileFormat.JPEG)) as writer:
        writer.write_tile(Tile(1, 1, 2), jpeg(Tile(1, 1, 2)))
    meta = folder / "metadata.json"
    meta.write_text(meta.read_text().replace('"format": "jpg"', '"format": "jpg", "mixed": true'))
    with pytest.raises(ContainerCorruptError, match='a mixed tile set says "format": "mixed"'):
        open_reader(f"xyz:{folder}")


def test_tiles_convert_copies_a_mixed_cache_into_a_folder_and_refuses_an_archive(
    arcgis: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "copy"
    assert main(["tiles", "convert", arcgis, f"esri-exploded:{out}"]) == 0
    with open_reader(f"esri-exploded:{out}") as reader:
        assert reader.metadata.mixed
        assert dict(reader.iter_tiles()) == MIXED_TILES  # byte for byte
    capsys.readouterr()
    assert main(["tiles", "convert", arcgis, str(tmp_path / "o.mbtiles")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("UnsupportedTileFormatError: ")
    assert "offmaps cache export" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o.mbtiles").exists()


def test_gdal_reads_an_exported_mixed_compact_cache_as_rgba(arcgis: str, tmp_path: Path) -> None:
    # the area's west edge through the middle of column 1: its JPEG tiles clipped to PNG
    half = 20037508.342789244
    aoi = AreaOfInterest.from_bbox(-half / 4, -half, half, half, "EPSG:3857")
    dst = tmp_path / "export"
    with open_reader(arcgis) as source:
        result = export_tiles(source, f"esri-compact:{dst}", plan_export(source, aoi=aoi))
    assert result.tile_format == "mixed"
    conf = (dst / "conf.xml").read_text()
    assert "<CacheTileFormat>MIXED</CacheTileFormat>" in conf
    shutil.rmtree(tmp_path / "arcgis")  # GDAL reads the export alone
    with open_reader(f"esri-compact:{dst}") as reader:
        exported = dict(reader.iter_tiles())
    with rasterio.open(dst / "conf.xml") as dataset:
        assert (dataset.driver, dataset.count) == ("ESRIC", 4)  # RGBA for MIXED
        level2 = dataset.read(window=Window(0, 0, 4 * SIZE, 4 * SIZE), out_shape=(4, 1024, 1024))
    for tile, data in exported.items():
        block = level2[:, tile.y * SIZE : (tile.y + 1) * SIZE, tile.x * SIZE : (tile.x + 1) * SIZE]
        got = block.transpose(1, 2, 0).astype(int)
        want = rgba(data).astype(int)
        if kind(data) is TileFormat.PNG:
            assert (got == want).all(), tile
        else:  # GDAL's JPEG decoder and Pillow's round a few pixels apart
            assert abs(got - want).max() <= 2, tile
    assert kind(exported[Tile(2, 1, 2)]) is TileFormat.JPEG  # inside: its bytes
    assert exported[Tile(2, 1, 2)] == MIXED_TILES[Tile(2, 1, 2)]
    cut = exported[Tile(1, 1, 2)]  # a JPEG tile cut: PNG, transparent west of -45
    assert kind(cut) is TileFormat.PNG
    assert (rgba(cut)[:, : SIZE // 2 - 2, 3] == 0).all()
    assert (rgba(cut)[:, SIZE // 2 + 2 :, 3] == 255).all()
    assert not any(t.x == 0 for t in exported)
