"""A feature update applied set-based (the file attached to the replica, each layer's rows
copied as stored) leaves the replica exactly as the row-by-row apply of the same download does:
rows with their fids, the spatial index, sync states, attachment records, the outbox and the
chain; with local edits pending on rows the update changes too; and a file whose values are not
stored as the replica stores them goes row by row, which checks them."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from offmaps.errors import InvalidFeatureError, SyncFailedError, UpdateIntegrityError
from offmaps.features.geopackage import GeoPackageStore
from offmaps.features.model import Delete, Update
from offmaps.offline.updates import (
    ChainState,
    FeatureUpdateReader,
    UpdateFile,
    apply_feature_update,
    file_sha256,
    read_chain_state,
)
from offmaps.offline.updates import features as feature_updates
from tests.offline.test_update_files import (
    AREA_SHAPE,
    World,
    begin,
    edit_randomly,
    link,
    pristine,
    world,
)

__all__ = ["pristine", "world"]  # the fixtures, shared with the update files' tests


def apply_row_by_row(package: Path, update: UpdateFile) -> None:
    """The update applied change by change (:meth:`LocalReplica.apply_download`), as before
    the set-based apply."""
    with FeatureUpdateReader(update.path) as reader:
        replica_id = feature_updates._replica_id(package)
        local = feature_updates._ChainedReplica.open(
            package, replica_id=replica_id, generation=reader.info.from_generation
        )
        assert isinstance(local, feature_updates._ChainedReplica)
        with local:
            local.update = (reader.info.link, update.sha256)
            local.apply_download(reader.download_header(replica_id), reader.iter_changes())


def everything(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of the file, rows sorted, but the time attachment records were made and
    the spatial index's inner nodes (its tree depends on the order rows came in; what it
    holds is compared)."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    with closing(sqlite3.connect(path)) as conn:
        tables = [
            str(r[0])
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not str(r[0]).startswith("sqlite_")
            and not str(r[0]).endswith(("_node", "_parent", "_rowid"))
        ]
        for table in tables:
            columns = [str(r[1]) for r in conn.execute(f'PRAGMA table_info("{table}")')]
            kept = [f'"{c}"' for c in columns if c != "created_at"]
            rows = conn.execute(f'SELECT {", ".join(kept)} FROM "{table}"').fetchall()
            found[table] = sorted(rows, key=repr)
    return found


def both_ways(world: World, package: Path, update: UpdateFile, name: str) -> tuple[Path, Path]:
    """Copies of ``package`` with ``update`` applied set-based and row by row."""
    fast, slow = world.root / f"{name}-set.gpkg", world.root / f"{name}-rows.gpkg"
    shutil.copyfile(package, fast)
    shutil.copyfile(package, slow)
    apply_feature_update(fast, update.path, sha256=update.sha256)
    apply_row_by_row(slow, update)
    return fast, slow


def test_a_chain_applied_set_based_equals_it_applied_row_by_row(world: World) -> None:
    package, generation = world.package("p1.gpkg")
    head = begin(package).chain_head
    for number, seed in enumerate((21, 22, 23), start=1):
        edit_randomly(world.store, seed)
        update = world.update(f"u{number + 1}.gpkg", generation, link(number, head))
        fast, slow = both_ways(world, package, update, f"p{number + 1}")
        tables = everything(fast)
        assert tables == everything(slow)
        assert tables["offmaps_attachments"]
        assert tables["rtree_sites_geom"]
        shutil.copyfile(fast, package)
        head, generation = update.sha256, world.store.generation()


def test_rows_with_local_edits_pending_are_merged_as_row_by_row(world: World) -> None:
    package, generation = world.package("p1.gpkg")
    head = begin(package).chain_head
    inside = sorted(
        (f for f in world.store.iter_features("sites") if AREA_SHAPE.intersects(f.geometry)),
        key=lambda f: str(f.global_id),
    )
    a, b, c, d, e = (f.global_id for f in inside[:5])
    world.store.apply_edits(
        [
            Update("sites", a, {"name": "office a"}),
            Update("sites", b, {"name": "office b", "kind": "office"}),
            Update("sites", c, {"name": "office c"}),
            Delete("sites", d),
            Update("sites", inside[6].global_id, {"name": "office only"}),
        ]
    )
    update = world.update("u2.gpkg", generation, link(1, head))
    with GeoPackageStore.open(package) as device:  # the crew's edits, not uploaded yet
        device.apply_edits(
            [
                Update("sites", a, {"name": "field a"}),  # the same field
                Update("sites", b, {"kind": "field"}),  # another field of a changed row
                Delete("sites", c),  # deleted here, changed there
                Update("sites", d, {"name": "field d"}),  # changed here, deleted there
                Update("sites", e, {"name": "field e"}),  # the office left it alone
            ]
        )
    fast, slow = both_ways(world, package, update, "p2")
    assert everything(fast) == everything(slow)
    with closing(sqlite3.connect(fast)) as conn:
        names = dict(conn.execute("SELECT globalid, name FROM sites"))
        pending = conn.execute(
            "SELECT count(*) FROM offmaps_outbox WHERE status = 'pending'"
        ).fetchone()
    assert (names[str(a)], names[str(b)], names[str(d)], names[str(e)]) == (
        "field a", "office b", "field d", "field e",
    )  # fmt: skip
    assert str(c) not in names
    assert names[str(inside[6].global_id)] == "office only"
    assert pending == (5,)


def tampered(update: UpdateFile, sql: str) -> UpdateFile:
    """The update with ``sql`` run on it: a file the server would have had to sign as it is."""
    with closing(sqlite3.connect(update.path)) as conn, conn:
        triggers = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        for (name,) in triggers.fetchall():  # the spatial index's: it is not read
            conn.execute(f'DROP TRIGGER "{name}"')
        conn.execute(sql)
    sha256, size = file_sha256(update.path)
    return UpdateFile(update.path, sha256, size)


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("UPDATE sites SET osm_id = 'not a number'", "osm_id"),
        ("UPDATE sites SET geom = X'00010203'", "geometry"),
    ],
)
def test_values_not_stored_as_the_replica_stores_them_are_checked_row_by_row(
    world: World, sql: str, error: str
) -> None:
    package, generation = world.package("p1.gpkg")
    state = begin(package)
    edit_randomly(world.store, seed=24)
    update = tampered(world.update("u2.gpkg", generation, link(1, state.chain_head)), sql)
    before = package.read_bytes()
    with pytest.raises((SyncFailedError, InvalidFeatureError, UpdateIntegrityError), match=error):
        apply_feature_update(package, update.path, sha256=update.sha256)
    assert package.read_bytes() == before


def test_a_geometry_of_another_crs_goes_row_by_row(world: World) -> None:
    package, generation = world.package("p1.gpkg")
    state = begin(package)
    edit_randomly(world.store, seed=25)
    # the points' blobs say EPSG:3857 (their header's srs id), which the layer is not in
    update = tampered(
        world.update("u2.gpkg", generation, link(1, state.chain_head)),
        "UPDATE sites SET geom = CAST(substr(geom, 1, 4) || X'110F0000' || substr(geom, 9) "
        "AS BLOB)",
    )
    fast, slow = both_ways(world, package, update, "p2")
    assert everything(fast) == everything(slow)
    assert read_chain_state(fast) == ChainState(state.area_id, 0, 2, update.sha256)
