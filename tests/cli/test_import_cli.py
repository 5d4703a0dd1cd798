"""``offmaps import features``: a file into a server's data folder, and one-line errors."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio.raw
import shapely
from rich.console import Console
from shapely.geometry import Point

from offmaps.catalog import Catalog
from offmaps.cli import progress
from tests.cli.test_users import run


def hydrants(tmp_path: Path) -> Path:
    source = tmp_path / "hydrants.geojson"
    pyogrio.raw.write(
        source,
        np.array([shapely.to_wkb(Point(24.9, 60.1 + i / 1000)) for i in range(30)], dtype=object),
        [np.array([f"h{i}" for i in range(30)])],
        ["name"],
        crs="EPSG:4326",
        geometry_type="Point",
        driver="GeoJSON",
    )
    return source


def test_a_geojson_file_becomes_a_collection(tmp_path: Path) -> None:
    source = hydrants(tmp_path)
    data = tmp_path / "data"
    code, out, _ = run(
        "import", "features", str(source), "--service", "water", "--data", str(data), "--json"
    )
    assert code == 0
    assert json.loads(out.strip().splitlines()[-1]) == {"collection": "water.hydrants", "rows": 30}
    catalog = Catalog(data)
    assert catalog.feature_service("water").get_layer("hydrants").title == "hydrants"
    catalog.close()


def test_bad_files_and_names_are_one_line_errors_that_leave_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    junk = tmp_path / "junk.gpkg"
    junk.write_bytes(b"not a geopackage" * 10)
    for args in (
        [str(tmp_path / "missing.geojson")],
        [str(junk)],
        [str(hydrants(tmp_path)), "--service", "Bad-Name"],
        [str(hydrants(tmp_path)), "--service", "ok", "--name", "1; drop table x"],
    ):
        code, _, err = run("import", "features", *args, "--data", str(data))
        assert code != 0
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
    assert not (data / "features").exists() or list((data / "features").iterdir()) == []


def test_the_import_bar_counts_the_files_rows(tmp_path: Path, monkeypatch: Any) -> None:
    shown = io.StringIO()

    def terminal() -> Console:  # a terminal, so that the bar is drawn
        return Console(file=shown, force_terminal=True, width=120)

    monkeypatch.setattr(progress, "_terminal", terminal)
    code, _, _ = run("import", "features", str(hydrants(tmp_path)), "--data", str(tmp_path))
    assert code == 0
    assert "30/30" in shown.getvalue()  # the total is the file's row count, not unknown
