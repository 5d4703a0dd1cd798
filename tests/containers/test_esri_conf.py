"""conf.xml and conf.cdi read back: Esri caches made by ArcGIS (no offmaps sidecar files) open
with their own tiling scheme, and hostile or lying scheme files are refused by name."""

from __future__ import annotations

import io
import math
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

import morecantile
import pyproj
import pytest
import rasterio
from PIL import Image
from pyproj.enums import WktVersion

from offmaps.containers import open_reader, open_writer
from offmaps.containers._folder import ForeignSchemeWarning
from offmaps.containers.base import TilesetMetadata, web_mercator_quad
from offmaps.containers.compact import EsriCompactReader, EsriCompactWriter
from offmaps.containers.esri_conf import (
    MAX_CONF_BYTES,
    image_size,
    parse_cache_extent,
    parse_cache_info,
)
from offmaps.containers.esri_scheme import EsriStorageFormat, conf_xml
from offmaps.containers.exploded import EsriExplodedReader, EsriExplodedWriter
from offmaps.errors import ContainerCorruptError
from offmaps.tiling import find_incompatibility
from offmaps.types import Tile, TileFormat
from tests.tilegen import make_tile

Writer = type[EsriCompactWriter] | type[EsriExplodedWriter]
Reader = type[EsriCompactReader] | type[EsriExplodedReader]
KINDS: list[tuple[Writer, Reader]] = [
    (EsriCompactWriter, EsriCompactReader),
    (EsriExplodedWriter, EsriExplodedReader),
]
WHERE = Path("conf.xml")


def tiles_of(tile_format: TileFormat, z: int, size: int = 256) -> dict[Tile, bytes]:
    return {
        Tile(x, y, z): make_tile(Tile(x, y, z), tile_format, size=size)
        for x in range(1, 3)
        for y in range(1, 3)
    }


def arcgis_cache(
    writer_class: Writer,
    folder: Path,
    meta: TilesetMetadata,
    tiles: dict[Tile, bytes],
    edit: Callable[[ET.Element], None] | None = None,
) -> Path:
    """A cache as ArcGIS leaves it: tiles, conf.xml and conf.cdi, no offmaps sidecar files;
    ``edit`` changes conf.xml."""
    with writer_class(folder, meta) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    (folder / "tilematrixset.json").unlink()
    (folder / "metadata.json").unlink()
    if edit is not None:
        tree = ET.parse(folder / "conf.xml")
        edit(tree.getroot())
        tree.write(folder / "conf.xml", encoding="utf-8", xml_declaration=True)
    return folder


def set_text(path: str, value: str) -> Callable[[ET.Element], None]:
    def edit(root: ET.Element) -> None:
        element = root.find(path)
        assert element is not None, path
        element.text = value

    return edit


@pytest.mark.parametrize(
    "tms_id",
    ["WebMercatorQuad", "WorldCRS84Quad", "WGS1984Quad", "EuropeanETRS89_LAEAQuad", "NZTM2000Quad"],
)
@pytest.mark.parametrize("tile_format", [TileFormat.PNG, TileFormat.JPEG])
@pytest.mark.parametrize(("writer_class", "reader_class"), KINDS)
def test_a_cache_with_only_its_scheme_files_reads_as_written(
    tms_id: str,
    tile_format: TileFormat,
    writer_class: Writer,
    reader_class: Reader,
    tmp_path: Path,
) -> None:
    tms = morecantile.tms.get(tms_id)
    tiles = tiles_of(tile_format, 3)
    folder = arcgis_cache(
        writer_class, tmp_path / "c", TilesetMetadata(tile_format, tms=tms), tiles
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with reader_class(folder) as reader:
            meta = reader.metadata
            assert find_incompatibility(meta.tms, tms) is None
            assert meta.tile_format is tile_format
            assert (meta.minzoom, meta.maxzoom) == (3, 3)
            assert meta.bounds is not None
            assert dict(reader.iter_tiles()) == tiles
            assert reader.verify() == []
    if tms_id == "WebMercatorQuad":
        assert meta.tms is web_mercator_quad()  # ArcGIS's Web Mercator is the XYZ grid


TM35FIN = escape(pyproj.CRS.from_epsg(3067).to_wkt(WktVersion.WKT1_ESRI))


def arcgis_conf(lods: list[float], *, extra: str = "", storage: str = "CompactV2") -> str:
    """A conf.xml laid out as ArcGIS writes one: 17 significant digits, an XY domain, Scale."""
    lod_infos = "".join(
        f'<LODInfo xsi:type="typens:LODInfo"><LevelID>{z}</LevelID>'
        f"<Scale>{r / 0.0254 * 96:.17g}</Scale><Resolution>{r:.17g}</Resolution></LODInfo>"
        for z, r in enumerate(lods)
    )
    return (
        '<?xml version="1.0" encoding="utf-8" ?>\n'
        '<CacheInfo xsi:type="typens:CacheInfo" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:xs="http://www.w3.org/2001/XMLSchema" '
        'xmlns:typens="http://www.esri.com/schemas/ArcGIS/10.0">'
        '<TileCacheInfo xsi:type="typens:TileCacheInfo">'
        '<SpatialReference xsi:type="typens:ProjectedCoordinateSystem">'
        f"<WKT>{TM35FIN}</WKT>"
        "<XOrigin>-5120900</XOrigin><YOrigin>-9998100</YOrigin><XYScale>450445547.3910538</XYScale>"
        "<HighPrecision>true</HighPrecision><WKID>3067</WKID><LatestWKID>3067</LatestWKID>"
        "</SpatialReference>"
        '<TileOrigin xsi:type="typens:PointN"><X>-5120900</X><Y>9998100</Y></TileOrigin>'
        f"{extra}<TileCols>256</TileCols><TileRows>256</TileRows><DPI>96</DPI>"
        f'<LODInfos xsi:type="typens:ArrayOfLODInfo">{lod_infos}</LODInfos>'
        "</TileCacheInfo>"
        '<TileImageInfo xsi:type="typens:TileImageInfo"><CacheTileFormat>PNG32</CacheTileFormat>'
        "<CompressionQuality>0</CompressionQuality><Antialiasing>false</Antialiasing>"
        "</TileImageInfo>"
        '<CacheStorageInfo xsi:type="typens:CacheStorageInfo">'
        f"<StorageFormat>esriMapCacheStorageMode{storage}</StorageFormat>"
        "<PacketSize>128</PacketSize></CacheStorageInfo></CacheInfo>\n"
    )


# a county's scheme: scales 1:2,000,000 to 1:4,000 at 96 DPI, not halving from level to level
COUNTY_LODS = [s * 0.0254 / 96 for s in (2_000_000, 1_000_000, 250_000, 64_000, 16_000, 4_000)]


def test_a_county_scheme_of_arcgis_reads_and_gdal_agrees(tmp_path: Path) -> None:
    folder = tmp_path / "county"
    level = folder / "_alllayers" / "L02"
    level.mkdir(parents=True)
    (folder / "conf.xml").write_text(arcgis_conf(COUNTY_LODS), "utf-8")
    # the bundle of an offmaps compact cache holding the same tile keys
    tiles = {
        Tile(x, y, 2): make_tile(Tile(x, y, 2), TileFormat.PNG, size=256)
        for x, y in [(80, 130), (81, 130)]
    }
    scratch = tmp_path / "scratch"
    with EsriCompactWriter(scratch, TilesetMetadata(TileFormat.PNG)) as writer:
        for tile, data in tiles.items():
            writer.write_tile(Tile(tile.x, tile.y, 8), data)
    (scratch / "_alllayers" / "L08" / "R0080C0000.bundle").rename(level / "R0080C0000.bundle")
    with EsriCompactReader(folder) as reader:
        tms = reader.metadata.tms
        assert [m.cellSize for m in tms.tileMatrices] == COUNTY_LODS
        assert tms.crs.srs.endswith("EPSG/0/3067")
        assert reader.metadata.tile_format is TileFormat.PNG
        assert dict(reader.iter_tiles()) == tiles
        ul = tms.xy_bounds(morecantile.Tile(80, 130, 2))
    assert ul.left == pytest.approx(-5120900 + 80 * 256 * COUNTY_LODS[2])
    assert ul.top == pytest.approx(9998100 - 130 * 256 * COUNTY_LODS[2])
    with rasterio.open(folder / "conf.xml") as dataset:
        assert dataset.driver == "ESRIC"
        assert dataset.transform.c == pytest.approx(-5120900)
        assert dataset.transform.f == pytest.approx(9998100)
        assert dataset.transform.a == pytest.approx(COUNTY_LODS[-1])


def test_conf_cdi_gives_the_bounds_and_widens_the_grid(tmp_path: Path) -> None:
    # origin at the CRS's origin: without a TileEnd the grid would be empty but for conf.cdi
    conf = arcgis_conf(COUNTY_LODS).replace("<X>-5120900</X><Y>9998100</Y>", "<X>0</X><Y>0</Y>")
    with pytest.raises(ContainerCorruptError, match=r"TileOrigin .* is not the top left corner"):
        parse_cache_info(conf.encode(), WHERE)
    cdi = (
        '<EnvelopeN xsi:type="typens:EnvelopeN" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<XMin>300000</XMin><YMin>-7000000</YMin><XMax>400000</XMax><YMax>-6600000</YMax>"
        "</EnvelopeN>"
    )
    extent = parse_cache_extent(cdi.encode(), Path("conf.cdi"))
    info = parse_cache_info(conf.encode(), WHERE, extent=extent)
    assert info.tms.matrix(0).matrixWidth == math.ceil(400000 / (256 * COUNTY_LODS[0]))


def test_web_mercator_as_arcgis_writes_it_is_the_xyz_grid() -> None:
    resolutions = [web_mercator_quad().matrix(z).cellSize for z in range(20)]
    conf = (
        arcgis_conf(resolutions)
        .replace("<WKID>3067</WKID><LatestWKID>3067</LatestWKID>", "<WKID>102100</WKID>")
        .replace("<X>-5120900</X><Y>9998100</Y>", "<X>-20037508.342787</X><Y>20037508.342787</Y>")
    )
    info = parse_cache_info(conf.encode(), WHERE)
    assert info.tms is web_mercator_quad()
    assert info.levels == (0, 19)
    assert (info.cache_tile_format, info.tile_format) == ("PNG32", TileFormat.PNG)
    assert info.storage is EsriStorageFormat.COMPACT_V2


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE CacheInfo ['
    '<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
    + "]><CacheInfo><TileCacheInfo><WKT>&i;</WKT></TileCacheInfo></CacheInfo>"
)
XXE = (
    '<?xml version="1.0"?><!DOCTYPE CacheInfo [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    "<CacheInfo><TileCacheInfo><WKT>&x;</WKT></TileCacheInfo></CacheInfo>"
)
PARAMETER_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE CacheInfo [<!ENTITY % p SYSTEM "http://example.com/x">%p;]>'
    "<CacheInfo/>"
)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (BILLION_LAUGHS, "document type declaration"),
        (XXE, "document type declaration"),
        (PARAMETER_ENTITY, "document type declaration"),
        ("<CacheInfo><TileCacheInfo>", "not well-formed XML"),
        ("not xml at all", "not well-formed XML"),
        ("", "not well-formed XML"),
        ("<" * 10 + "CacheInfo>", "not well-formed XML"),
        ("<CacheInfo>" + "<a>" * 100 + "</a>" * 100 + "</CacheInfo>", "nested deeper"),
        ("<EnvelopeN/>", "not a CacheInfo"),
        ("<CacheInfo/>", "CacheInfo/TileCacheInfo is missing"),
        (" " * (MAX_CONF_BYTES + 1), "more than the 1048576 allowed"),
    ],
)
def test_hostile_or_malformed_documents_are_refused(document: str, message: str) -> None:
    with pytest.raises(ContainerCorruptError, match=message) as caught:
        parse_cache_info(document.encode(), WHERE)
    assert str(caught.value).startswith("conf.xml: ")


def remove(path: str) -> Callable[[str], str]:
    def edit(conf: str) -> str:
        root = ET.fromstring(conf)
        parent_path, _, name = path.rpartition("/")
        parent = root.find(parent_path) if parent_path else root
        assert parent is not None
        child = parent.find(name)
        assert child is not None, path
        parent.remove(child)
        return ET.tostring(root, encoding="unicode")

    return edit


def replace(old: str, new: str) -> Callable[[str], str]:
    def edit(conf: str) -> str:
        assert old in conf, old
        return conf.replace(old, new, 1)

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (remove("TileCacheInfo/SpatialReference"), "SpatialReference is missing"),
        (remove("TileCacheInfo/TileOrigin"), "TileCacheInfo/TileOrigin/X is missing"),
        (remove("TileCacheInfo/LODInfos"), "LODInfos has no LODInfo"),
        (remove("TileImageInfo"), "TileImageInfo is missing"),
        (remove("TileImageInfo/CacheTileFormat"), "CacheTileFormat is missing"),
        (remove("CacheStorageInfo"), "CacheStorageInfo is missing"),
        (remove("CacheStorageInfo/StorageFormat"), "StorageFormat is missing"),
        (replace("<X>-5120900</X>", "<X>NaN</X>"), "TileOrigin/X 'NaN' is not a finite"),
        (replace("<Y>9998100</Y>", "<Y>inf</Y>"), "TileOrigin/Y 'inf' is not a finite"),
        (replace("<X>-5120900</X>", "<X>-1e300</X>"), "TileOrigin/X '-1e300' is not a finite"),
        (replace("<X>-5120900</X>", "<X>west</X>"), "TileOrigin/X 'west' is not a number"),
        (replace("<X>-5120900</X>", "<X>-5e14</X>"), "makes .* tiles; a level holds 1 to"),
        (replace("<X>-5120900</X>", "<X>6e6</X>"), "not the top left corner"),
        (replace("<TileCols>256", "<TileCols>0"), "TileCols '0' is not a whole number 1-8192"),
        (replace("<TileRows>256", "<TileRows>100000"), "TileRows '100000' is not a whole"),
        (replace("<TileCols>256", "<TileCols>25.6"), "TileCols '25.6' is not a whole"),
        (replace("<DPI>96", "<DPI>-96"), "DPI -96.0 is not a DPI"),
        (replace("<Resolution>", "<Resolution>-"), "LODInfo 0: Resolution -.* is not positive"),
        (replace("<LevelID>1<", "<LevelID>7<"), "LevelIDs are not consecutive \\(0, 2, 3, 4, 5, 7"),
        (replace("<LevelID>1<", "<LevelID>-1<"), "LevelID '-1' is not a whole number"),
        (
            replace("<Resolution>264.5", "<Resolution>2640.5"),
            "LODInfo 1: Resolution 2640.5.* is not finer than level 0's",
        ),
        (
            lambda conf: replace(f"<WKT>{TM35FIN}</WKT>", "<WKT>PROJCS[nonsense]</WKT>")(
                replace("<WKID>3067</WKID><LatestWKID>3067</LatestWKID>", "<WKID>999999</WKID>")(
                    conf
                )
            ),
            "PROJ knows no CRS of its WKID 999999, WKT",
        ),
        (
            replace("<WKID>3067</WKID><LatestWKID>3067</LatestWKID>", "<WKID>999999</WKID>"),
            "",  # an unknown code, but a WKT PROJ reads: the WKT is the CRS
        ),
        (replace("<LatestWKID>3067", "<LatestWKID>abc"), "LatestWKID 'abc' is not a whole"),
        (replace("PNG32", "LERC"), "CacheTileFormat 'LERC' is not a tile format offmaps reads"),
        (replace("ModeCompactV2", "ModeBlob"), "StorageFormat 'esriMapCacheStorageModeBlob'"),
        (replace("<PacketSize>128", "<PacketSize>0"), "PacketSize '0' is not a whole number"),
    ],
)
def test_a_conf_xml_with_a_bad_field_is_refused_naming_it(
    edit: Callable[[str], str], message: str
) -> None:
    document = edit(arcgis_conf(COUNTY_LODS)).encode()
    if not message:
        assert parse_cache_info(document, WHERE).tms.crs.srs.endswith("EPSG/0/3067")
        return
    with pytest.raises(ContainerCorruptError, match=message):
        parse_cache_info(document, WHERE)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("<CacheInfo/>", "not an EnvelopeN"),
        ("<EnvelopeN><XMin>1</XMin></EnvelopeN>", "EnvelopeN/YMin is missing"),
        (
            "<EnvelopeN><XMin>2</XMin><YMin>0</YMin><XMax>1</XMax><YMax>1</YMax></EnvelopeN>",
            "are not below XMax/YMax",
        ),
        (
            "<EnvelopeN><XMin>nan</XMin><YMin>0</YMin><XMax>1</XMax><YMax>1</YMax></EnvelopeN>",
            "XMin 'nan' is not a finite",
        ),
    ],
)
def test_a_bad_conf_cdi_is_refused(document: str, message: str) -> None:
    with pytest.raises(ContainerCorruptError, match=message):
        parse_cache_extent(document.encode(), Path("conf.cdi"))


@pytest.mark.parametrize(("writer_class", "reader_class"), KINDS)
def test_a_cache_of_another_storage_or_format_is_refused_by_name(
    writer_class: Writer, reader_class: Reader, tmp_path: Path
) -> None:
    meta = TilesetMetadata(TileFormat.PNG)
    tiles = tiles_of(TileFormat.PNG, 2)
    other = "Exploded" if writer_class is EsriCompactWriter else "CompactV2"
    cases: list[tuple[Callable[[ET.Element], None], type[Exception], str]] = [
        (
            set_text("CacheStorageInfo/StorageFormat", f"esriMapCacheStorageMode{other}"),
            ContainerCorruptError,
            "StorageFormat is esriMapCacheStorageMode.*: open it as esri-",
        ),
        (
            set_text("CacheStorageInfo/StorageFormat", "esriMapCacheStorageModeCompact"),
            ContainerCorruptError,
            "Compact Cache V1",
        ),
    ]
    if writer_class is EsriCompactWriter:
        cases.append(
            (set_text("CacheStorageInfo/PacketSize", "64"), ContainerCorruptError, "PacketSize")
        )
    for i, (edit, error, message) in enumerate(cases):
        folder = arcgis_cache(writer_class, tmp_path / str(i), meta, tiles, edit)
        with pytest.raises(error, match=message):
            reader_class(folder)


@pytest.mark.parametrize(("writer_class", "reader_class"), KINDS)
def test_level_folders_the_lods_do_not_list_are_refused(
    writer_class: Writer, reader_class: Reader, tmp_path: Path
) -> None:
    meta = TilesetMetadata(TileFormat.PNG)
    tiles = tiles_of(TileFormat.PNG, 4) | tiles_of(TileFormat.PNG, 2)

    def drop_lods(root: ET.Element) -> None:
        lods = root.find("TileCacheInfo/LODInfos")
        assert lods is not None
        for lod in lods.findall("LODInfo")[3:]:
            lods.remove(lod)

    folder = arcgis_cache(writer_class, tmp_path / "c", meta, tiles, drop_lods)
    with pytest.raises(ContainerCorruptError, match=r"LODInfos list levels 0-2, .* L04"):
        reader_class(folder)


@pytest.mark.parametrize(("writer_class", "reader_class"), KINDS)
def test_tiles_of_another_size_than_conf_xml_says_are_refused(
    writer_class: Writer, reader_class: Reader, tmp_path: Path
) -> None:
    def say_512(root: ET.Element) -> None:
        set_text("TileCacheInfo/TileCols", "512")(root)
        set_text("TileCacheInfo/TileRows", "512")(root)

    tiles = tiles_of(TileFormat.JPEG, 2)
    folder = arcgis_cache(
        writer_class, tmp_path / "c", TilesetMetadata(TileFormat.JPEG), tiles, say_512
    )
    with pytest.raises(
        ContainerCorruptError, match="TileCols and TileRows say tiles are 512x512 pixels, but"
    ):
        reader_class(folder)


@pytest.mark.parametrize(("writer_class", "reader_class"), KINDS)
def test_offmaps_files_win_over_a_disagreeing_conf_xml_with_a_warning(
    writer_class: Writer, reader_class: Reader, tmp_path: Path
) -> None:
    tiles = tiles_of(TileFormat.PNG, 2)
    folder = tmp_path / "c"
    with writer_class(folder, TilesetMetadata(TileFormat.PNG)) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    conf = (folder / "conf.xml").read_text("utf-8")
    (folder / "conf.xml").write_text(
        conf.replace(">PNG<", ">JPEG<").replace("<TileCols>256", "<TileCols>512"), "utf-8"
    )
    with pytest.warns(ForeignSchemeWarning, match="tile size 512x256 vs 256x256.*png"):
        reader = reader_class(folder)
    with reader:
        assert reader.metadata.tms is not None
        assert find_incompatibility(reader.metadata.tms, web_mercator_quad()) is None
        assert reader.metadata.tile_format is TileFormat.PNG
        assert dict(reader.iter_tiles()) == tiles
    (folder / "conf.xml").write_text("<CacheInfo", "utf-8")
    with pytest.warns(ForeignSchemeWarning, match="not well-formed XML"):
        reader_class(folder).close()


def test_open_reader_reads_an_arcgis_cache_by_its_prefix(tmp_path: Path) -> None:
    tiles = tiles_of(TileFormat.JPEG, 3)
    folder = arcgis_cache(
        EsriExplodedWriter, tmp_path / "c", TilesetMetadata(TileFormat.JPEG), tiles
    )
    with open_reader(f"esri-exploded:{folder}") as reader:
        assert dict(reader.iter_tiles()) == tiles


@pytest.mark.parametrize("tile_format", [TileFormat.PNG, TileFormat.JPEG])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_image_size_reads_the_headers(tile_format: TileFormat, mode: str) -> None:
    if tile_format is TileFormat.JPEG and mode == "RGBA":
        mode = "CMYK"
    out = io.BytesIO()
    Image.new(mode, (300, 17)).save(
        out, "PNG" if tile_format is TileFormat.PNG else "JPEG", progressive=mode == "L"
    )
    assert image_size(out.getvalue()) == (300, 17)
    assert image_size(out.getvalue()[:10]) is None
    assert image_size(b"garbage") is None


def test_conf_xml_round_trips_its_numbers() -> None:
    meta = TilesetMetadata(TileFormat.PNG, maxzoom=24)
    info = parse_cache_info(conf_xml(meta, EsriStorageFormat.COMPACT_V2).encode(), WHERE)
    assert info.tms is web_mercator_quad()
    assert info.levels == (0, 24)
    assert info.packet_size == 128
    assert info.dpi == 96


def test_a_halving_scheme_covers_one_extent_at_every_level(tmp_path: Path) -> None:
    # ArcGIS's default geographic origin (-400, 400): the grid ends on whole level-0 tiles, so
    # every level covers the same extent and a GeoPackage can hold it
    lods = [0.0118973050291514 * 2 ** (5 - z) for z in range(6)]
    conf = (
        arcgis_conf(lods)
        .replace("<WKID>3067</WKID><LatestWKID>3067</LatestWKID>", "<WKID>4326</WKID>")
        .replace("<X>-5120900</X><Y>9998100</Y>", "<X>-400</X><Y>400</Y>")
    )
    tms = parse_cache_info(conf.encode(), WHERE).tms
    spans = {m.matrixWidth * m.cellSize * m.tileWidth for m in tms.tileMatrices}
    assert max(spans) == pytest.approx(min(spans), rel=1e-12)
    assert tms.matrix(0).pointOfOrigin == (400, -400)  # latitude first in EPSG:4326
    tile = Tile(30, 27, 3)
    with open_writer(str(tmp_path / "o.gpkg"), TilesetMetadata(TileFormat.PNG, tms=tms)) as writer:
        writer.write_tile(tile, make_tile(tile, TileFormat.PNG, size=256))
    with open_reader(str(tmp_path / "o.gpkg")) as reader:
        assert find_incompatibility(reader.metadata.tms, tms) is None
        assert reader.find_tile(tile) is not None
