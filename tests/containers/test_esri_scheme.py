"""conf.xml and conf.cdi beside Esri caches: read back by GDAL's ESRIC driver and by XML."""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import morecantile
import numpy as np
import pytest
import rasterio
from numpy.typing import NDArray
from PIL import Image
from rasterio.windows import Window

from offmaps.containers.base import TilesetMetadata
from offmaps.containers.compact import EsriCompactReader, EsriCompactWriter
from offmaps.containers.esri_scheme import (
    EsriStorageFormat,
    conf_cdi,
    conf_xml,
    find_esri_scheme_problem,
)
from offmaps.containers.exploded import EsriExplodedReader, EsriExplodedWriter
from offmaps.tiling import scale_for_zoom
from offmaps.types import Tile, TileFormat
from tests.tilegen import make_tile

Writer = type[EsriCompactWriter] | type[EsriExplodedWriter]


def write(
    writer_class: Writer, folder: Path, meta: TilesetMetadata, tiles: dict[Tile, bytes]
) -> None:
    with writer_class(folder, meta) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)


def tiles_of(tile_format: TileFormat, z: int, xs: range, ys: range) -> dict[Tile, bytes]:
    return {Tile(x, y, z): make_tile(Tile(x, y, z), tile_format, size=256) for x in xs for y in ys}


def pixels(data: bytes, mode: str) -> NDArray[np.uint8]:
    """A tile decoded by Pillow as bands x rows x columns."""
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode)).transpose(2, 0, 1)


def parse(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


@pytest.mark.parametrize(
    "tms_id", ["WebMercatorQuad", "WorldCRS84Quad", "EuropeanETRS89_LAEAQuad", "NZTM2000Quad"]
)
def test_gdal_reads_an_exported_compact_cache_as_its_source_tiles(
    tms_id: str, tmp_path: Path
) -> None:
    tms = morecantile.tms.get(tms_id)
    tiles = tiles_of(TileFormat.PNG, 3, range(2, 5), range(1, 3))
    tiles |= tiles_of(TileFormat.PNG, 2, range(1, 2), range(0, 2))
    write(EsriCompactWriter, tmp_path / "c", TilesetMetadata(TileFormat.PNG, tms=tms), tiles)
    with rasterio.open(tmp_path / "c" / "conf.xml") as dataset:
        assert dataset.driver == "ESRIC"
        assert dataset.count == 4
        # the full resolution is level 3: tile (x, y) is the 256-pixel block at column x, row y
        window = dataset.read(window=Window(2 * 256, 1 * 256, 3 * 256, 2 * 256))
        origin = tms.xy_bounds(morecantile.Tile(0, 0, 0))
        assert dataset.transform.c == pytest.approx(origin.left)
        assert dataset.transform.f == pytest.approx(origin.top)
        assert dataset.transform.a == pytest.approx(tms.matrix(3).cellSize)
    for (x, y, z), data in tiles.items():
        if z == 3:
            block = window[:, (y - 1) * 256 : y * 256, (x - 2) * 256 : (x - 1) * 256]
            assert np.array_equal(block, pixels(data, "RGBA")), (x, y, z)
    with rasterio.open(tmp_path / "c" / "conf.xml", overview_level=0) as level2:
        block = level2.read(window=Window(256, 256, 256, 256))
    assert np.array_equal(block, pixels(tiles[Tile(1, 1, 2)], "RGBA"))


def test_gdal_reads_a_jpeg_compact_cache(tmp_path: Path) -> None:
    tiles = tiles_of(TileFormat.JPEG, 2, range(1, 3), range(1, 2))
    write(EsriCompactWriter, tmp_path / "c", TilesetMetadata(TileFormat.JPEG), tiles)
    with rasterio.open(tmp_path / "c" / "conf.xml") as dataset:
        assert dataset.count == 3
        window = dataset.read(window=Window(256, 256, 512, 256)).astype(np.int16)
    for x in (1, 2):
        want = pixels(tiles[Tile(x, 1, 2)], "RGB").astype(np.int16)
        got = window[:, :, (x - 1) * 256 : x * 256]
        assert np.abs(got - want).max() <= 2  # two JPEG decoders may round differently


@pytest.mark.parametrize(
    ("writer_class", "storage"),
    [
        (EsriCompactWriter, EsriStorageFormat.COMPACT_V2),
        (EsriExplodedWriter, EsriStorageFormat.EXPLODED),
    ],
)
def test_conf_xml_describes_the_tiling_scheme(
    writer_class: Writer, storage: EsriStorageFormat, tmp_path: Path
) -> None:
    tms = morecantile.tms.get("WebMercatorQuad")
    tiles = tiles_of(TileFormat.PNG, 4, range(8, 10), range(5, 6))
    write(writer_class, tmp_path / "c", TilesetMetadata(TileFormat.PNG), tiles)
    root = parse(tmp_path / "c" / "conf.xml")
    assert root.tag == "CacheInfo"
    info = root.find("TileCacheInfo")
    assert info is not None
    assert info.findtext("SpatialReference/WKID") == "102100"
    assert info.findtext("SpatialReference/LatestWKID") == "3857"
    assert "Web_Mercator_Auxiliary_Sphere" in (info.findtext("SpatialReference/WKT") or "")
    assert float(info.findtext("TileOrigin/X") or "nan") == -20037508.342789244
    assert float(info.findtext("TileOrigin/Y") or "nan") == 20037508.342789244
    assert info.find("TileEnd") is None
    assert (info.findtext("TileCols"), info.findtext("TileRows"), info.findtext("DPI")) == (
        "256",
        "256",
        "96",
    )
    lods = info.findall("LODInfos/LODInfo")
    assert [lod.findtext("LevelID") for lod in lods] == ["0", "1", "2", "3", "4"]
    for z, lod in enumerate(lods):
        assert float(lod.findtext("Resolution") or "nan") == tms.matrix(z).cellSize
        assert float(lod.findtext("Scale") or "nan") == pytest.approx(scale_for_zoom(tms, z))
    assert float(lods[0].findtext("Scale") or "nan") == pytest.approx(591657527.591555)
    assert root.findtext("TileImageInfo/CacheTileFormat") == "PNG"
    assert root.findtext("CacheStorageInfo/StorageFormat") == storage.value
    assert root.findtext("CacheStorageInfo/PacketSize") == "128"


def test_conf_cdi_holds_the_extent_of_the_tiles(tmp_path: Path) -> None:
    tms = morecantile.tms.get("WebMercatorQuad")
    tiles = tiles_of(TileFormat.PNG, 4, range(8, 10), range(5, 6))
    write(EsriExplodedWriter, tmp_path / "c", TilesetMetadata(TileFormat.PNG), tiles)
    root = parse(tmp_path / "c" / "conf.cdi")
    assert root.tag == "EnvelopeN"
    got = [float(root.findtext(k) or "nan") for k in ("XMin", "YMin", "XMax", "YMax")]
    ul, lr = tms.xy_bounds(morecantile.Tile(8, 5, 4)), tms.xy_bounds(morecantile.Tile(9, 5, 4))
    assert got == pytest.approx([ul.left, lr.bottom, lr.right, ul.top], rel=1e-9, abs=1e-3)
    assert root.findtext("SpatialReference/WKID") == "102100"


def test_a_geographic_grid_gets_a_geographic_spatial_reference() -> None:
    meta = TilesetMetadata(TileFormat.JPEG, tms=morecantile.tms.get("WGS1984Quad"), maxzoom=2)
    root = ET.fromstring(conf_xml(meta, EsriStorageFormat.COMPACT_V2))
    reference = root.find("TileCacheInfo/SpatialReference")
    assert reference is not None
    assert reference.get("{http://www.w3.org/2001/XMLSchema-instance}type") == (
        "typens:GeographicCoordinateSystem"
    )
    assert reference.findtext("WKID") == "4326"
    # longitude first, whatever the CRS's axis order
    assert root.findtext("TileCacheInfo/TileOrigin/X") == "-180"
    assert root.findtext("TileCacheInfo/TileOrigin/Y") == "90"
    assert root.findtext("TileImageInfo/CompressionQuality") == "75"
    extent = ET.fromstring(conf_cdi(meta))
    assert [extent.findtext(k) for k in ("XMin", "YMin", "XMax", "YMax")] == [
        "-180",
        "-90",
        "180",
        "90",
    ]


def test_an_asymmetric_grid_gets_its_tile_end() -> None:
    tms = morecantile.tms.get("EuropeanETRS89_LAEAQuad")
    root = ET.fromstring(
        conf_xml(TilesetMetadata(TileFormat.PNG, tms=tms), EsriStorageFormat.EXPLODED)
    )
    end = tms.xy_bounds(morecantile.Tile(0, 0, 0))
    assert float(root.findtext("TileCacheInfo/TileEnd/X") or "nan") == end.right
    assert float(root.findtext("TileCacheInfo/TileEnd/Y") or "nan") == end.bottom
    lods = root.findall("TileCacheInfo/LODInfos/LODInfo")
    assert len(lods) == tms.maxzoom + 1  # no tiles, no maxzoom: the whole tiling scheme


@pytest.mark.parametrize(
    ("meta", "why"),
    [
        (TilesetMetadata(TileFormat.WEBP), "PNG or JPEG"),
        (TilesetMetadata(TileFormat.MVT), "PNG or JPEG"),
        (
            TilesetMetadata(TileFormat.PNG, tms=morecantile.tms.get("UTM31WGS84Quad")),
            "start at 1",
        ),
    ],
)
def test_tile_sets_conf_xml_cannot_describe_get_neither_file(
    meta: TilesetMetadata, why: str, tmp_path: Path
) -> None:
    assert why in (find_esri_scheme_problem(meta) or "")
    with pytest.raises(ValueError, match=why):
        conf_xml(meta, EsriStorageFormat.COMPACT_V2)
    z = meta.tms.minzoom
    tiles = {Tile(0, 0, z): make_tile(Tile(0, 0, z), meta.tile_format)}
    for writer_class in (EsriCompactWriter, EsriExplodedWriter):
        folder = tmp_path / writer_class.__name__
        write(writer_class, folder, meta, tiles)
        assert not (folder / "conf.xml").exists()
        assert not (folder / "conf.cdi").exists()


def test_readers_read_caches_with_their_scheme_files(tmp_path: Path) -> None:
    tiles = tiles_of(TileFormat.PNG, 3, range(2, 4), range(1, 3))
    meta = TilesetMetadata(TileFormat.PNG)
    write(EsriCompactWriter, tmp_path / "compact", meta, tiles)
    write(EsriExplodedWriter, tmp_path / "exploded", meta, tiles)
    for folder, reader_class in (
        (tmp_path / "compact", EsriCompactReader),
        (tmp_path / "exploded", EsriExplodedReader),
    ):
        assert (folder / "conf.xml").is_file()
        with reader_class(folder) as reader:
            assert dict(reader.iter_tiles()) == tiles
            assert reader.verify() == []


def test_numbers_read_back_exactly() -> None:
    meta = TilesetMetadata(TileFormat.PNG, maxzoom=24)
    root = ET.fromstring(conf_xml(meta, EsriStorageFormat.COMPACT_V2))
    resolutions = [float(r.text or "nan") for r in root.iter("Resolution")]
    assert resolutions == [meta.tms.matrix(z).cellSize for z in range(25)]
    assert all(math.isfinite(r) for r in resolutions)
