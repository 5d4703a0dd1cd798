"""The replica registry contract: the SQLite and the PostgreSQL registries pass these same tests.

The PostgreSQL registry needs ``OFFMAPS_TEST_POSTGRES_URL`` (``make test`` starts the server):
without it these tests fail loudly, never skip. Each test gets a schema of its own.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from offmaps.errors import InvalidUserError, QuotaExceededError, ReplicaNotFoundError
from offmaps.state import LayerScope, RelatedKey, ReplicaRegistry, SQLiteReplicaRegistry
from offmaps.state.postgres_replicas import PostgresReplicaRegistry
from tests.state.backends import opening

BACKENDS = ["sqlite", "postgres"]

Opener = Callable[[], ReplicaRegistry]

AREA = {
    "type": "Polygon",
    "coordinates": [[[24.9, 60.1], [25.0, 60.1], [25.0, 60.2], [24.9, 60.1]]],
}


@pytest.fixture(params=BACKENDS)
def open_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens registries of one backend on one place: each call is another process's view."""
    opener = opening(
        request.param,
        lambda: SQLiteReplicaRegistry(tmp_path / "replicas.sqlite"),
        PostgresReplicaRegistry,
    )
    yield from cast(Iterator[Opener], opener)  # the backends' classes, as their protocol


@pytest.fixture
def registry(open_registry: Opener) -> ReplicaRegistry:
    """A fresh, empty registry of each backend."""
    return open_registry()


def register(registry: ReplicaRegistry, owner: str = "ada", **options: object) -> str:
    """Register a replica of ``owner`` with the fewest arguments; returns its id."""
    return registry.register(
        "water", ("hydrants",), 7, owner=owner, map_id=None, sync_direction="bidirectional",
        **options,  # type: ignore[arg-type]
    ).id  # fmt: skip


def test_a_registered_replica_reads_back_as_it_was(registry: ReplicaRegistry) -> None:
    scope = {
        "hydrants": LayerScope(where="zone = 'A'", area=AREA, include_null_geometry=True),
        "inspections": LayerScope(related=(RelatedKey("hydrants", "globalid", "hydrant_id"),)),
    }
    replica = registry.register(
        "water", ("hydrants", "inspections"), 12, owner="ada", map_id="m1",
        sync_direction="upload", sync_model="per_replica", scope=scope,
        attachment_sync_direction="none", inserts_only=True,
    )  # fmt: skip
    found = registry.get(replica.id)
    assert found == replica
    assert found.scope["inspections"].related == (RelatedKey("hydrants", "globalid", "hydrant_id"),)
    assert found.layers == ("hydrants", "inspections")
    assert found.inserts_only is True
    assert found.last_sync is None


def test_a_replica_takes_the_id_it_is_given(registry: ReplicaRegistry) -> None:
    wanted = uuid.uuid4().hex
    assert register(registry, replica_id=wanted) == wanted
    assert registry.get(wanted).id == wanted


def test_a_replica_needs_an_owner(registry: ReplicaRegistry) -> None:
    with pytest.raises(InvalidUserError):
        register(registry, owner="")


@pytest.mark.parametrize("replica_id", ["0" * 32, "nope", "'; DROP TABLE replicas; --", ""])
def test_an_unknown_or_malformed_id_is_not_found(
    registry: ReplicaRegistry, replica_id: str
) -> None:
    assert registry.find("0" * 32) is None
    with pytest.raises(ReplicaNotFoundError):
        registry.get(replica_id)
    with pytest.raises(ReplicaNotFoundError):
        registry.unregister(replica_id)


def test_replicas_are_counted_by_owner(registry: ReplicaRegistry) -> None:
    for _ in range(3):
        register(registry, owner="ada")
    register(registry, owner="bob")
    assert (registry.count_owned("ada"), registry.count_owned("bob")) == (3, 1)
    assert registry.count_owned("eve") == 0


def test_the_quota_refuses_one_more_with_what_it_counted(registry: ReplicaRegistry) -> None:
    for _ in range(2):
        register(registry, max_owned=2)
    with pytest.raises(QuotaExceededError) as refused:
        register(registry, max_owned=2, retry_after_s=60)
    assert (refused.value.limit, refused.value.used, refused.value.retry_after) == (2, 2, 60)
    register(registry, owner="bob", max_owned=2)  # another owner has a quota of their own
    register(registry)  # no quota asked for: no limit
    assert registry.count_owned("ada") == 3


def test_concurrent_registrations_never_pass_the_quota_together(open_registry: Opener) -> None:
    registries = [open_registry(), open_registry()]  # two processes, four threads each
    owners = [f"user{n}" for n in range(10)]
    passed: list[str] = []
    refused: list[QuotaExceededError] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def work(registry: ReplicaRegistry) -> None:
        start.wait()
        for owner in owners:  # all eight threads race for the same owner's last places
            try:
                found = register(registry, owner=owner, max_owned=3)
            except QuotaExceededError as exc:
                with lock:
                    refused.append(exc)
            else:
                with lock:
                    passed.append(found)

    threads = [threading.Thread(target=work, args=(registries[n % 2],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(passed), len(refused)) == (30, 50)
    for owner in owners:
        assert registries[0].count_owned(owner) == registries[1].count_owned(owner) == 3


def test_a_sync_moves_the_generation_forward_only(registry: ReplicaRegistry) -> None:
    replica_id = register(registry)
    registry.synced(replica_id, 20)
    after = registry.get(replica_id)
    assert after.generation == 20
    assert after.last_sync is not None
    registry.synced(replica_id, 10)
    assert registry.get(replica_id).generation == 20


def test_an_unregistered_replica_is_gone(registry: ReplicaRegistry) -> None:
    kept, gone = register(registry), register(registry)
    registry.unregister(gone)
    assert registry.find(gone) is None
    with pytest.raises(ReplicaNotFoundError):
        registry.unregister(gone)
    assert registry.get(kept).id == kept
    assert registry.count_owned("ada") == 1


def test_another_process_sees_the_same_replicas(open_registry: Opener) -> None:
    here, there = open_registry(), open_registry()
    replica_id = register(here)
    here.synced(replica_id, 9)
    assert there.get(replica_id).generation == 9
    there.unregister(replica_id)
    assert here.find(replica_id) is None
