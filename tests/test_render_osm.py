"""The demo's tile renderer makes real, distinct map tiles from the OSM extract."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from offmaps.containers import open_reader
from tests.data import data_path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "render_osm.py"


def test_renders_distinct_png_tiles_of_helsinki(tmp_path: Path) -> None:
    out = tmp_path / "helsinki.mbtiles"
    argv = [
        sys.executable,
        str(SCRIPT),
        "--pbf",
        str(data_path("osm/Helsinki.osm.pbf")),
        "--zooms",
        "14-15",
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    with open_reader(out) as reader:
        tiles = dict(reader.iter_tiles())
        assert reader.metadata.attribution == "© OpenStreetMap contributors"
    assert len(tiles) == 4 + 9
    for data in tiles.values():
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG"
        assert image.size == (256, 256)
    assert len(set(tiles.values())) > len(tiles) // 2


def test_the_renderer_leaves_the_gdal_and_proj_environment_as_it_was() -> None:
    # the mapnik wheel sets PROJ_LIB and GDAL_DATA to its own copies when imported, which broke
    # GDAL's command line tools started later by the same process
    code = (
        "import os, sys\n"
        "from offmaps.sample.render import Tile, _Renderer\n"
        "before = {k: os.environ.get(k) for k in ('PROJ_LIB', 'GDAL_DATA')}\n"
        "renderer = _Renderer('<Map srs=\"epsg:3857\"/>')\n"
        "assert renderer.render(Tile(0, 0, 1)).startswith(b'\\x89PNG')\n"
        "after = {k: os.environ.get(k) for k in before}\n"
        "sys.exit(0 if after == before else f'{before} -> {after}')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_LIB", "GDAL_DATA")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
