"""Scheduled update files of preplanned map areas, and their chain (docs/update-files.md).

- :mod:`offmaps.offline.updates.chain`: where an update sits in its chain, the chain state
  each packaged file keeps, and the checks.
- :mod:`offmaps.offline.updates.features`: feature update files (GeoPackage): write, read,
  apply to a replica.
- :mod:`offmaps.offline.updates.tiles`: tile update files (MBTiles): diff, write, read, apply
  to an MBTiles archive.
- :mod:`offmaps.offline.updates.server`: the server's reading of an area's changes through
  sync's download (not imported here: the device side never reaches the server's modules).
"""

from typing import TYPE_CHECKING, Any

from offmaps.offline.updates.chain import (
    BASE_PREFIX,
    ChainState,
    UpdateFile,
    UpdateLink,
    check_file,
    check_link,
    file_sha256,
    fold_wal,
    read_chain_state,
    write_chain_state,
)
from offmaps.offline.updates.features import (
    FeatureUpdateApplied,
    FeatureUpdateInfo,
    FeatureUpdateReader,
    UpdateLayer,
    apply_feature_update,
    schema_sha256,
    write_feature_update,
)

if TYPE_CHECKING:
    from offmaps.offline.updates.tiles import (
        TileDiff,
        TileUpdateApplied,
        TileUpdateInfo,
        TileUpdateReader,
        apply_tile_update,
        build_tile_update,
        diff_tiles,
        tile_hashes,
        write_tile_update,
    )

_TILES = frozenset(
    {
        "TileDiff",
        "TileUpdateApplied",
        "TileUpdateInfo",
        "TileUpdateReader",
        "apply_tile_update",
        "build_tile_update",
        "diff_tiles",
        "tile_hashes",
        "write_tile_update",
    }
)


def __getattr__(name: str) -> Any:
    """The tile update names, imported on first use: they bring the tile containers (and
    their projection libraries), which a sync of a package with no tile updates never needs
    (docs/cli.md, "Start-up")."""
    if name in _TILES:
        from offmaps.offline.updates import tiles  # noqa: PLC0415

        return getattr(tiles, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BASE_PREFIX",
    "ChainState",
    "FeatureUpdateApplied",
    "FeatureUpdateInfo",
    "FeatureUpdateReader",
    "TileDiff",
    "TileUpdateApplied",
    "TileUpdateInfo",
    "TileUpdateReader",
    "UpdateFile",
    "UpdateLayer",
    "UpdateLink",
    "apply_feature_update",
    "apply_tile_update",
    "build_tile_update",
    "check_file",
    "check_link",
    "diff_tiles",
    "file_sha256",
    "fold_wal",
    "read_chain_state",
    "schema_sha256",
    "tile_hashes",
    "write_chain_state",
    "write_feature_update",
    "write_tile_update",
]
