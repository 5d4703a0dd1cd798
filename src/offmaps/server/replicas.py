"""The replicas the server has handed out: which service, which layers, from which generation.

An offline map taken with ``update_mode = sync_with_feature_services`` registers one replica per
feature service; sync (issue 5) reads and advances it. Kept in ``DATA/replicas.sqlite``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from offmaps.errors import FeatureStoreError

__all__ = ["Replica", "ReplicaRegistry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replicas (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    layers TEXT NOT NULL,
    generation INTEGER NOT NULL,
    owner TEXT,
    map_id TEXT,
    sync_direction TEXT NOT NULL,
    sync_model TEXT NOT NULL,
    created REAL NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class Replica:
    """One registered replica."""

    id: str
    service: str
    layers: tuple[str, ...]
    generation: int
    owner: str | None
    map_id: str | None
    sync_direction: str
    sync_model: str
    created: float


class ReplicaRegistry:
    """Replicas by id, in a SQLite file."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise FeatureStoreError(f"cannot open the replica registry {path}: {exc}") from None

    def register(
        self,
        service: str,
        layers: tuple[str, ...],
        generation: int,
        *,
        owner: str | None,
        map_id: str | None,
        sync_direction: str,
        sync_model: str = "per_layer",
    ) -> Replica:
        """Record a new replica; returns it with its id."""
        replica = Replica(
            uuid.uuid4().hex, service, layers, generation, owner, map_id, sync_direction,
            sync_model, time.time(),
        )  # fmt: skip
        with self._lock:
            self._conn.execute(
                "INSERT INTO replicas VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    replica.id, service, json.dumps(list(layers)), generation, owner, map_id,
                    sync_direction, sync_model, replica.created,
                ),
            )  # fmt: skip
        return replica

    def get(self, replica_id: str) -> Replica | None:
        """The replica with this id, or ``None``."""
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM replicas WHERE id = ?", (replica_id,)
            ).fetchone()
        if row is None:
            return None
        return Replica(row[0], row[1], tuple(json.loads(row[2])), *row[3:])

    def unregister(self, replica_id: str) -> None:
        """Forget a replica (its device will no longer sync)."""
        with self._lock:
            self._conn.execute("DELETE FROM replicas WHERE id = ?", (replica_id,))

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._conn.close()
