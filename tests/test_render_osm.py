"""The demo's tile renderer makes real, distinct map tiles from the OSM extract."""

from __future__ import annotations

import io
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
