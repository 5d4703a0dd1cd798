"""Tile update files for an area packaged as PMTiles (docs/preplanned.md, "Update files"): a
refresh writes one per PMTiles archive, builds the new archive from the previous one and the
update (byte for byte what a fresh extraction writes), and the plan takes the updates, not the
full package; a damaged update leaves a device's archive as it was (docs/update-files.md)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from offmaps.containers import TilesetMetadata, open_writer
from offmaps.containers import pmtiles as pmtiles_module
from offmaps.containers.pmtiles import (
    PMTilesReader,
    PMTilesWriter,
    write_json_metadata,
    write_patched,
)
from offmaps.errors import PackageError, UpdateChainError, UpdateIntegrityError
from offmaps.offline import preplanned
from offmaps.offline.parameters import TileArchiveFormat
from offmaps.offline.updates import (
    ChainState,
    TileUpdateInfo,
    TileUpdateReader,
    UpdateLink,
    apply_tile_update,
    write_tile_update,
)
from offmaps.offline.updates.tiles import (
    PMTILES_CHAIN_KEY,
    apply_tile_updates,
    read_archive_chain_state,
    write_archive_chain_state,
)
from offmaps.tiling import get_tms
from offmaps.types import Tile, TileFormat
from tests.server.test_areas_cache_incremental import _cached_source, _drop, _store
from tests.server.test_areas_tiles_incremental import (
    SHAPES,
    _area,
    _delete,
    _files,
    _key,
    _redraw,
    _refresh,
    _repackage,
    _source,
    _tile_update,
)
from tests.server.test_areas_updates import _download, _href, _services
from tests.serverkit import Server
from tests.tilegen import make_tile

ARCHIVE = "basemap.pmtiles"
AREA = "a" * 32


def _as_pmtiles(where: dict[str, Any]) -> dict[str, Any]:
    """An area's body (and its repackaging's) asking for PMTiles tile archives."""
    return {**where, "tile_format": TileArchiveFormat.PMTILES.value}


def _tiles(path: Path) -> dict[Tile, bytes]:
    with PMTilesReader(path) as reader:
        assert reader.verify() == []
        return dict(reader.iter_tiles())


def _archive(server: Server, area: dict[str, Any], folder: Path) -> Path:
    entry = next(e for e in area["package"]["files"] if e["path"] == ARCHIVE)
    return _download(server, entry, folder)


def _plan(server: Server, area: dict[str, Any], have: int) -> dict[str, Any]:
    answer = server.client.get(
        f"{_href(server, area['id'])}/updates",
        params={"from": have, "epoch": area["epoch"]},
        headers=server.token("editor", "maps:read offline:sync"),
    )
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def _change(source: Path, before: dict[Tile, bytes], missing: list[Tile]) -> list[Tile]:
    """Redraw and delete tiles of the area in the source and add the ones it lacked; the
    tiles deleted."""
    inside = sorted(before, key=lambda t: (t.z, t.x, t.y))
    gone = [inside[1], inside[-2]]
    with sqlite3.connect(source) as conn:
        for tile in (inside[0], inside[len(inside) // 2], inside[-1]):
            _redraw(conn, tile)
        _redraw(conn, Tile(*get_tms("WebMercatorQuad").tile(25.04, 60.19, 14)))  # outside
        _delete(conn, [_key(t) for t in gone])
        for tile in missing:
            conn.execute(
                "INSERT INTO tiles VALUES (?, ?, ?, ?)",
                (*_key(tile), make_tile(tile, TileFormat.PNG)),
            )
    return gone


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_refresh_updates_a_pmtiles_archive_as_a_fresh_extraction_writes_it(
    server: Server, tmp_path: Path, shape: str
) -> None:
    where, geometry = SHAPES[shape]
    where = _as_pmtiles(where)
    source, missing_inside, _ = _source(server, geometry)
    area = _area(server, where)
    assert area["tile_format"] == "pmtiles"
    assert ARCHIVE in area["package"]["chains"]
    first = _archive(server, area, tmp_path / "p1")
    before = _tiles(first)
    gone = _change(source, before, missing_inside)

    refreshed, result = _refresh(server, area)
    assert result["incremental"] is True
    plan = _plan(server, refreshed, 1)  # the updates, not the full package
    assert plan["choice"] == "updates", plan
    assert ARCHIVE in {entry["file"] for entry in plan["files"]}
    new = _archive(server, refreshed, tmp_path / "p2")
    with PMTilesReader(new) as reader:  # as served: a device records its own chain
        assert PMTILES_CHAIN_KEY not in reader.metadata.extra
    repackaged = _repackage(server, area, where)
    fresh = _archive(server, repackaged, tmp_path / "fresh")
    assert _sha256(new) == _sha256(fresh)  # the same bytes: tiles, directories, metadata
    # the thumbnail, the archive's tile over the area's centre, is taken as an extraction takes it
    assert _files(refreshed)["thumbnail.png"] == _files(repackaged)["thumbnail.png"]
    after = _tiles(fresh)
    assert set(gone).isdisjoint(after)
    assert set(missing_inside) <= set(after)

    # the update holds exactly the tiles that differ
    update = _tile_update(refreshed)
    assert update["file"] == ARCHIVE
    assert update["path"] == "basemap.2.update.mbtiles"
    path = _download(server, update, tmp_path / "updates")
    with TileUpdateReader(path) as reader:
        written = dict(reader.iter_tiles())
        removed = set(reader.iter_removed())
    assert written == {t: data for t, data in after.items() if before.get(t) != data}
    assert removed == set(before) - set(after) == set(gone)

    # a device's copy, its chain recorded, brought up by the update
    device = tmp_path / "device" / ARCHIVE
    device.parent.mkdir()
    device.write_bytes(first.read_bytes())
    write_archive_chain_state(device, ChainState(area["id"], 1, 1, update["previous_sha256"]))
    assert _tiles(device) == before  # recording the chain moved no tile
    done = apply_tile_update(device, path, sha256=update["sha256"], size=update["size"])
    assert (done.changed, done.removed) == (len(written), len(removed))
    assert _tiles(device) == after
    assert read_archive_chain_state(device) == ChainState(area["id"], 1, 2, update["sha256"])
    assert list(device.parent.iterdir()) == [device]  # nothing left beside it


def test_an_unchanged_source_keeps_the_pmtiles_archive(server: Server, tmp_path: Path) -> None:
    where, geometry = SHAPES["bbox"]
    where = _as_pmtiles(where)
    _source(server, geometry)
    area = _area(server, where)
    same, result = _refresh(server, area)
    assert result["incremental"] is True
    assert _files(same)[ARCHIVE] == _files(area)[ARCHIVE]
    with TileUpdateReader(_download(server, _tile_update(same), tmp_path)) as reader:
        assert (list(reader.iter_tiles()), list(reader.iter_removed())) == ([], [])
    assert _plan(server, same, 1)["choice"] == "updates"


def test_a_refresh_extracted_again_still_writes_the_pmtiles_update(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where, geometry = SHAPES["bbox"]
    where = _as_pmtiles(where)
    source, missing_inside, _ = _source(server, geometry)
    area = _area(server, where)
    first = _archive(server, area, tmp_path / "p1")
    before = _tiles(first)
    _change(source, before, missing_inside)
    monkeypatch.setattr(preplanned, "_can_refresh", lambda *args: False)
    refreshed, result = _refresh(server, area)
    assert result["incremental"] is False
    stored = _services(server).areas.store.packages(area["id"])[-1]
    assert stored.replaced == ()  # the PMTiles archive is reached by its update
    assert _plan(server, refreshed, 1)["choice"] == "updates"
    update = _tile_update(refreshed)
    assert update["file"] == ARCHIVE
    path = _download(server, update, tmp_path / "updates")
    write_archive_chain_state(first, ChainState(area["id"], 1, 1, update["previous_sha256"]))
    apply_tile_update(first, path, sha256=update["sha256"], size=update["size"])
    assert _tiles(first) == _tiles(_archive(server, refreshed, tmp_path / "p2"))


def test_a_refresh_from_a_tile_cache_updates_the_pmtiles_archive_too(
    server: Server, tmp_path: Path
) -> None:
    where, geometry = SHAPES["bbox"]
    where = _as_pmtiles(where)
    _, missing_inside, _ = _cached_source(server, tmp_path, geometry)
    area = _area(server, where)
    same, result = _refresh(server, area)  # the cache unchanged in the area: the same file
    assert result["incremental"] is True
    assert _files(same)[ARCHIVE] == _files(area)[ARCHIVE]
    before = _tiles(_archive(server, area, tmp_path / "p1"))
    inside = sorted(before, key=lambda t: (t.z, t.x, t.y))
    _store(server, [inside[0], inside[-1]], size=32)  # redrawn
    _store(server, missing_inside[:2])  # added
    _drop(server, [inside[1]])  # still in the cache's source: read through again, unchanged

    refreshed, result = _refresh(server, same)
    assert result["incremental"] is True
    assert _plan(server, refreshed, 1)["choice"] == "updates"
    new = _archive(server, refreshed, tmp_path / "p3")
    fresh = _archive(server, _repackage(server, area, where), tmp_path / "fresh")
    assert _sha256(new) == _sha256(fresh)
    after = _tiles(fresh)
    with TileUpdateReader(_download(server, _tile_update(refreshed), tmp_path)) as reader:
        assert dict(reader.iter_tiles()) == {
            t: data for t, data in after.items() if before.get(t) != data
        }
        assert set(reader.iter_removed()) == set(before) - set(after) == set()
    assert set(missing_inside[:2]) <= set(after)


# --- bad input, on the library ----------------------------------------------------------------


def _device_archive(tmp_path: Path) -> tuple[Path, list[Tile]]:
    """A PMTiles archive of levels 10-12 holding package 1 of area AREA."""
    tms = get_tms("WebMercatorQuad")
    tiles = [Tile(t.x, t.y, t.z) for t in tms.tiles(24.9, 60.05, 25.0, 60.15, [10, 11, 12])]
    path = tmp_path / "device" / ARCHIVE
    path.parent.mkdir()
    metadata = TilesetMetadata(tile_format=TileFormat.PNG, tms=tms, name="basemap")
    with open_writer(str(path), metadata) as writer:
        for tile in tiles:
            writer.write_tile(tile, make_tile(tile, TileFormat.PNG))
    write_archive_chain_state(path, ChainState(AREA, 1, 1, f"base:{'0' * 64}"))
    return path, tiles


def _update(tmp_path: Path, tiles: list[Tile], *, area: str = AREA, fmt: str = "png") -> Path:
    link = UpdateLink(area, "m", 1, 1, 2, f"base:{'0' * 64}")
    written = write_tile_update(
        tmp_path / f"{area[:4]}-{fmt}.update.mbtiles",
        TileUpdateInfo(link, "basemap", fmt),
        [(tiles[0], make_tile(tiles[0], TileFormat.PNG, size=32))],
        [tiles[1]],
    )
    return written.path


@pytest.mark.parametrize("damage", ["truncated", "tampered"])
def test_a_damaged_update_leaves_the_pmtiles_archive_as_it_was(tmp_path: Path, damage: str) -> None:
    archive, tiles = _device_archive(tmp_path)
    update = _update(tmp_path, tiles)
    sha256, size = _sha256(update), update.stat().st_size
    good = update.read_bytes()
    if damage == "truncated":
        update.write_bytes(good[: len(good) // 2])
    else:
        update.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    before = archive.read_bytes()
    with pytest.raises(UpdateIntegrityError):
        apply_tile_update(archive, update, sha256=sha256, size=size)
    assert archive.read_bytes() == before
    update.write_bytes(good)  # the intact update applies
    apply_tile_update(archive, update, sha256=sha256, size=size)
    assert tiles[1] not in _tiles(archive)


def test_an_update_off_the_archives_chain_or_format_is_refused(tmp_path: Path) -> None:
    archive, tiles = _device_archive(tmp_path)
    before = archive.read_bytes()
    other = _update(tmp_path, tiles, area="b" * 32)
    with pytest.raises(UpdateChainError, match="the update is for area"):
        apply_tile_update(archive, other, sha256=_sha256(other))
    jpeg = _update(tmp_path, tiles, fmt="jpg")
    with pytest.raises(PackageError, match="jpg tiles"):
        apply_tile_update(archive, jpeg, sha256=_sha256(jpeg))
    assert archive.read_bytes() == before
    assert sorted(p.name for p in archive.parent.iterdir()) == [ARCHIVE]


def test_a_failure_while_rewriting_leaves_the_pmtiles_archive_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, tiles = _device_archive(tmp_path)
    update = _update(tmp_path, tiles)
    before = archive.read_bytes()
    written = 0
    real = pmtiles_module._copy_range

    def filling(*args: Any) -> None:  # the disk fills after a few writes of tile data
        nonlocal written
        written += 1
        if written > 2:
            raise OSError(28, "No space left on device")
        real(*args)

    monkeypatch.setattr(pmtiles_module, "_copy_range", filling)
    with pytest.raises(PackageError, match="No space left"):
        apply_tile_update(archive, update, sha256=_sha256(update))
    assert archive.read_bytes() == before
    assert sorted(p.name for p in archive.parent.iterdir()) == [ARCHIVE]
    assert read_archive_chain_state(archive) == ChainState(AREA, 1, 1, f"base:{'0' * 64}")


def test_an_archive_without_a_chain_takes_no_update(tmp_path: Path) -> None:
    archive, tiles = _device_archive(tmp_path)
    bare = tmp_path / "bare.pmtiles"
    with PMTilesReader(archive) as reader:
        document = reader.json_metadata
    del document[PMTILES_CHAIN_KEY]
    write_json_metadata(archive, bare, document)
    assert read_archive_chain_state(bare) is None
    assert _tiles(bare) == _tiles(archive)
    update = _update(tmp_path, tiles)
    with pytest.raises(UpdateChainError, match="holds no update chain"):
        apply_tile_update(bare, update, sha256=_sha256(update))


def test_a_chain_of_updates_makes_one_rewrite_with_what_each_in_turn_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, tiles = _device_archive(tmp_path)
    one_by_one = tmp_path / "one-by-one.pmtiles"
    one_by_one.write_bytes(archive.read_bytes())
    a, b, c = tiles[0], tiles[1], tiles[2]
    png = TileFormat.PNG
    steps = [  # a redrawn and b removed; then b back, a removed, c redrawn
        ([(a, make_tile(a, png, size=32))], [b]),
        ([(b, make_tile(b, png, size=40)), (c, make_tile(c, png, size=48))], [a]),
    ]
    updates = []
    head = f"base:{'0' * 64}"
    for number, (written, removed) in enumerate(steps, start=1):
        link = UpdateLink(AREA, "m", 1, number, number + 1, head)
        update = write_tile_update(
            tmp_path / f"u{number}.mbtiles",
            TileUpdateInfo(link, "basemap", "png"),
            written,
            removed,
        )
        updates.append((update.path, update.sha256, update.size))
        head = update.sha256
    for path, sha256, size in updates:
        apply_tile_update(one_by_one, path, sha256=sha256, size=size)
    rewrites = 0
    real = PMTilesWriter.commit

    def counted(self: PMTilesWriter) -> None:
        nonlocal rewrites
        rewrites += 1
        real(self)

    monkeypatch.setattr(PMTilesWriter, "commit", counted)
    done = apply_tile_updates(archive, updates)
    assert rewrites == 1
    assert (done.changed, done.removed) == (2, 1)
    assert done.state == ChainState(AREA, 1, 3, head)
    assert archive.read_bytes() == one_by_one.read_bytes()
    assert a not in _tiles(archive)
    # out of order: refused before anything is written
    before = archive.read_bytes()
    with pytest.raises(UpdateChainError, match="applied already"):
        apply_tile_updates(archive, updates)
    assert archive.read_bytes() == before


def test_a_patched_archive_is_what_the_writer_writes_of_its_tiles(tmp_path: Path) -> None:
    tms = get_tms("WebMercatorQuad")
    tiles = [Tile(t.x, t.y, t.z) for t in tms.tiles(24.0, 59.5, 26.0, 60.5, [4, 8, 9, 10])]
    sea = make_tile(Tile(0, 0, 0), TileFormat.PNG, size=16)  # runs of one content
    data = {t: sea if i % 3 else make_tile(t, TileFormat.PNG) for i, t in enumerate(tiles)}
    metadata = TilesetMetadata(tile_format=TileFormat.PNG, tms=tms, name="b", attribution="x")
    source = tmp_path / "source.pmtiles"
    with PMTilesWriter(source, metadata) as writer:
        for tile, content in data.items():
            writer.write_tile(tile, content)
    changed = {
        tiles[1]: make_tile(tiles[1], TileFormat.PNG),  # a run broken by a tile of its own
        tiles[3]: sea,  # a content the archive holds already
        tiles[4]: make_tile(tiles[4], TileFormat.PNG, size=40),
        tiles[5]: make_tile(tiles[4], TileFormat.PNG, size=40),  # twice the same new content
        Tile(0, 0, 3): make_tile(Tile(0, 0, 3), TileFormat.PNG),  # a new level
    }
    removed = [tiles[0], tiles[-1], Tile(1, 1, 12)]  # the last one it does not hold
    expected = {**{t: d for t, d in data.items() if t not in removed}, **changed}
    patched = tmp_path / "patched.pmtiles"
    assert write_patched(source, patched, metadata, changed.items(), removed) == len(expected)
    written = tmp_path / "written.pmtiles"
    with PMTilesWriter(written, metadata) as writer:
        for tile, content in expected.items():
            writer.write_tile(tile, content)
    assert patched.read_bytes() == written.read_bytes()
    assert _tiles(patched) == expected
