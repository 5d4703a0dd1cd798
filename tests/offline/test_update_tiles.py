"""Tile update files: only the tiles that changed, readable as MBTiles by any reader, applied
to an MBTiles archive (plain or deduplicated) in one transaction, and refused, the archive
untouched, when out of order, twice, foreign, truncated or tampered."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from offmaps.containers import TilesetMetadata, open_reader
from offmaps.containers.mbtiles import MBTilesReader, MBTilesWriter
from offmaps.errors import PackageError, UpdateChainError, UpdateIntegrityError
from offmaps.offline.updates import (
    BASE_PREFIX,
    ChainState,
    TileUpdateInfo,
    TileUpdateReader,
    UpdateFile,
    UpdateLink,
    apply_tile_update,
    build_tile_update,
    diff_tiles,
    file_sha256,
    read_chain_state,
    tile_hashes,
    write_chain_state,
    write_tile_update,
)
from offmaps.offline.updates import tiles as tile_updates
from offmaps.tiling import get_tms
from offmaps.types import Tile, TileFormat
from tests.offline.test_update_files import apply_with_file_size_limit
from tests.tilegen import make_tile

AREA_ID = "harbour"


def _cover() -> list[Tile]:
    tms = get_tms("WebMercatorQuad")
    return [Tile(t.x, t.y, t.z) for t in tms.tiles(24.9, 60.15, 24.98, 60.19, [12, 13, 14])]


def _write(path: Path, tiles: dict[Tile, bytes], *, dedup: bool = False) -> Path:
    metadata = TilesetMetadata(tile_format=TileFormat.PNG, name="basemap")
    with MBTilesWriter(path, metadata, dedup=dedup) as writer:
        for tile, data in tiles.items():
            writer.write_tile(tile, data)
    return path


def _versions() -> tuple[dict[Tile, bytes], dict[Tile, bytes]]:
    """A layer's tiles, and the next version: a few changed, a few removed, a few added."""
    cover = _cover()
    old = {tile: make_tile(tile, TileFormat.PNG) for tile in cover}
    new = dict(old)
    for tile in cover[:5]:
        new[tile] = make_tile(Tile(tile.x + 1, tile.y, tile.z), TileFormat.PNG)  # changed
    for tile in cover[5:8]:
        del new[tile]
    for tile in cover[-2:]:  # the same bytes as another tile: shared in a deduplicated file
        new[tile] = old[cover[0]]
    extra = Tile(cover[-1].x * 2, cover[-1].y * 2, 15)
    new[extra] = make_tile(extra, TileFormat.PNG)
    return old, new


def _link(from_number: int, previous: str, *, area: str = AREA_ID, epoch: int = 0) -> UpdateLink:
    return UpdateLink(area, "map-1", epoch, from_number, from_number + 1, previous)


def _info(link: UpdateLink) -> TileUpdateInfo:
    return TileUpdateInfo(link, "basemap", "png")


def _begin(path: Path) -> ChainState:
    state = ChainState(AREA_ID, 0, 1, BASE_PREFIX + file_sha256(path)[0])
    write_chain_state(path, state)
    return state


def _digests(tiles: dict[Tile, bytes]) -> dict[Tile, str]:
    return {tile: hashlib.sha256(data).hexdigest() for tile, data in tiles.items()}


def _hashes(path: Path) -> dict[Tile, str]:
    with open_reader(path) as reader:
        return tile_hashes(reader)


def test_diff_tiles_finds_changed_added_and_removed() -> None:
    a, b, c, d = (Tile(n, 0, 3) for n in range(4))
    diff = diff_tiles({a: "1", b: "2", c: "3"}, {a: "1", b: "9", d: "4"})
    assert (diff.changed, diff.removed) == ((b, d), (c,))


@pytest.mark.parametrize("dedup", [False, True], ids=["plain", "dedup"])
def test_an_applied_update_makes_the_archive_the_new_version(tmp_path: Path, dedup: bool) -> None:
    old, new = _versions()
    archive = _write(tmp_path / "basemap.mbtiles", old, dedup=dedup)
    target = _write(tmp_path / "new.mbtiles", new)
    state = _begin(archive)
    written, diff = build_tile_update(
        tmp_path / "u2.mbtiles", _info(_link(1, state.chain_head)), archive, target
    )
    assert (len(diff.changed), len(diff.removed)) == (8, 3)
    applied = apply_tile_update(archive, written.path, sha256=written.sha256, size=written.size)
    assert (applied.changed, applied.removed) == (8, 3)
    assert applied.state == ChainState(AREA_ID, 0, 2, written.sha256)
    assert read_chain_state(archive) == applied.state
    assert _hashes(archive) == _hashes(target)
    with closing(sqlite3.connect(archive)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        if dedup:
            orphans = "SELECT count(*) FROM images WHERE tile_id NOT IN (SELECT tile_id FROM map)"
            assert conn.execute(orphans).fetchone() == (0,)
    with MBTilesReader(archive) as reader:  # still an MBTiles archive, its metadata kept
        assert reader.metadata.name == "basemap"


def test_an_update_file_is_an_mbtiles_file_with_only_the_changes(tmp_path: Path) -> None:
    old, new = _versions()
    diff = diff_tiles(_hashes(_write(tmp_path / "a.mbtiles", old)), _hashes(_write(
        tmp_path / "b.mbtiles", new)))  # fmt: skip
    written = write_tile_update(
        tmp_path / "u.mbtiles",
        _info(_link(1, BASE_PREFIX + "0" * 64)),
        ((tile, new[tile]) for tile in diff.changed),
        diff.removed,
    )
    with MBTilesReader(written.path) as reader:  # an independent reader sees the changes
        assert reader.metadata.tile_format is TileFormat.PNG
        assert dict(reader.iter_tiles()) == {tile: new[tile] for tile in diff.changed}
    with TileUpdateReader(written.path) as update:
        assert update.info.link == _link(1, BASE_PREFIX + "0" * 64)
        assert (update.info.layer, update.info.format, update.info.tms) == (
            "basemap", "png", "WebMercatorQuad",
        )  # fmt: skip
        assert sorted(update.iter_removed()) == sorted(diff.removed)
        assert dict(update.iter_tiles()) == {tile: new[tile] for tile in diff.changed}
    with closing(sqlite3.connect(written.path)) as conn:  # rows are TMS rows, as MBTiles has them
        rows = set(conn.execute("SELECT zoom_level, tile_column, tile_row FROM tiles"))
    assert rows == {(t.z, t.x, (1 << t.z) - 1 - t.y) for t in diff.changed}


def test_a_tile_both_written_and_removed_is_refused(tmp_path: Path) -> None:
    tile = Tile(1, 1, 2)
    with pytest.raises(ValueError, match="both written and removed"):
        write_tile_update(
            tmp_path / "u.mbtiles", _info(_link(1, BASE_PREFIX + "0" * 64)),
            [(tile, b"x")], [tile],
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def chain(tmp_path: Path) -> tuple[Path, list[UpdateFile], bytes]:
    """An archive with its chain begun, the two updates after it, and the archive's bytes."""
    old, new = _versions()
    archive = _write(tmp_path / "basemap.mbtiles", old)
    head = _begin(archive).chain_head
    versions = [old, new, {**new, **{t: b"third" + bytes([t.z]) for t in list(new)[:4]}}]
    updates = []
    for number in (1, 2):
        before, after = versions[number - 1], versions[number]
        diff = diff_tiles(_digests(before), _digests(after))
        written = write_tile_update(
            tmp_path / f"u{number + 1}.mbtiles", _info(_link(number, head)),
            ((t, after[t]) for t in diff.changed), diff.removed,
        )  # fmt: skip
        updates.append(written)
        head = written.sha256
    return archive, updates, archive.read_bytes()


def test_tile_updates_out_of_order_twice_or_foreign_are_refused(
    chain: tuple[Path, list[UpdateFile], bytes], tmp_path: Path
) -> None:
    archive, (first, second), before = chain
    with pytest.raises(UpdateChainError, match="apply the updates before it"):
        apply_tile_update(archive, second.path, sha256=second.sha256)
    assert archive.read_bytes() == before
    foreign = write_tile_update(
        tmp_path / "foreign.mbtiles", _info(_link(1, first.sha256, area="elsewhere")), [], []
    )
    with pytest.raises(UpdateChainError, match="is for area"):
        apply_tile_update(archive, foreign.path, sha256=foreign.sha256)
    assert archive.read_bytes() == before
    apply_tile_update(archive, first.path, sha256=first.sha256)
    once = archive.read_bytes()
    with pytest.raises(UpdateChainError, match="applied already"):
        apply_tile_update(archive, first.path, sha256=first.sha256)
    assert archive.read_bytes() == once
    assert apply_tile_update(archive, second.path, sha256=second.sha256).state.package_number == 3


def test_a_truncated_tampered_or_wrong_kind_tile_update_is_refused(
    chain: tuple[Path, list[UpdateFile], bytes], tmp_path: Path
) -> None:
    archive, (first, _), before = chain
    data = first.path.read_bytes()
    truncated = tmp_path / "truncated.mbtiles"
    truncated.write_bytes(data[: len(data) - 4096])
    with pytest.raises(UpdateIntegrityError, match="SHA-256"):
        apply_tile_update(archive, truncated, sha256=first.sha256)
    with pytest.raises(UpdateIntegrityError, match="bytes, not"):
        apply_tile_update(archive, truncated, sha256=first.sha256, size=first.size)
    tampered = tmp_path / "tampered.mbtiles"
    tampered.write_bytes(data[:100] + b"\0" + data[101:])
    with pytest.raises(UpdateIntegrityError, match="SHA-256"):
        apply_tile_update(archive, tampered, sha256=first.sha256)
    # an MBTiles archive is not an update, nor is a feature update a tile update
    copy = tmp_path / "copy.mbtiles"
    shutil.copyfile(archive, copy)
    with pytest.raises(UpdateIntegrityError, match="not an update file"):
        apply_tile_update(archive, copy, sha256=file_sha256(copy)[0])
    with closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute("CREATE TABLE offmaps_update (key TEXT PRIMARY KEY, value TEXT)")
        conn.executemany(
            "INSERT INTO offmaps_update VALUES (?, ?)",
            [("format_version", "1.0"), ("kind", "features")],
        )
    with pytest.raises(UpdateIntegrityError, match="holds 'features', not tiles"):
        apply_tile_update(archive, copy, sha256=file_sha256(copy)[0])
    assert archive.read_bytes() == before


def test_an_archive_without_a_chain_or_of_another_layout_is_refused(
    chain: tuple[Path, list[UpdateFile], bytes], tmp_path: Path
) -> None:
    _, (first, _), _ = chain
    bare = _write(tmp_path / "bare.mbtiles", {Tile(0, 0, 0): b"x"})
    with pytest.raises(UpdateChainError, match="holds no update chain"):
        apply_tile_update(bare, first.path, sha256=first.sha256)
    odd = tmp_path / "odd.mbtiles"
    with closing(sqlite3.connect(odd)) as conn, conn:
        conn.execute("CREATE TABLE t (zoom_level, tile_column, tile_row, tile_data)")
        conn.execute("CREATE VIEW tiles AS SELECT * FROM t")
    with TileUpdateReader(first.path) as update:
        write_chain_state(odd, ChainState(AREA_ID, 0, 1, update.info.link.previous_sha256))
    with pytest.raises(PackageError, match="not an MBTiles archive offmaps can update"):
        apply_tile_update(odd, first.path, sha256=first.sha256)


def test_a_failure_mid_apply_leaves_the_archive_as_it_was(
    chain: tuple[Path, list[UpdateFile], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, (first, _), before = chain

    def fail(conn: sqlite3.Connection, state: ChainState) -> None:
        raise OSError("the device was switched off")

    monkeypatch.setattr(tile_updates, "store_chain_state", fail)
    with pytest.raises(OSError, match="switched off"):
        apply_tile_update(archive, first.path, sha256=first.sha256)
    assert archive.read_bytes() == before


def test_a_full_disk_while_applying_leaves_the_archive_as_it_was(tmp_path: Path) -> None:
    old, _ = _versions()
    archive = _write(tmp_path / "basemap.mbtiles", old)
    state = _begin(archive)
    before = archive.read_bytes()
    # every tile replaced by a bigger one: the archive must grow past the limit
    big = {tile: make_tile(tile, TileFormat.PNG, size=256) for tile in old}
    written = write_tile_update(
        tmp_path / "u2.mbtiles", _info(_link(1, state.chain_head)), big.items(), []
    )
    done = apply_with_file_size_limit("tiles", archive, written, len(before) + 16 * 1024)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.startswith("PackageError"), done.stdout
    assert archive.read_bytes() == before
    assert not archive.with_name(archive.name + "-journal").exists()
    applied = apply_tile_update(archive, written.path, sha256=written.sha256)
    assert applied.changed == len(big)
