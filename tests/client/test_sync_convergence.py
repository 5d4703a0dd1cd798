"""Property: random edits on the server and several devices, synced in random orders and
directions, always converge, and every edit is applied, merged or recorded as a conflict."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Point

from offmaps.client.offline import OfflineMapTask
from offmaps.client.sync import OfflineMapSyncTask, SyncOfflineMapParameters
from offmaps.features import FieldType
from offmaps.features.geopackage import GeoPackageStore
from offmaps.features.model import (
    Delete,
    Edit,
    FeatureQuery,
    Field,
    GeometryType,
    Insert,
    LayerSchema,
    Update,
)
from offmaps.offline.parameters import area_from_bbox
from offmaps.offline.replica import LocalReplica
from offmaps.schemas import SyncDirection, WebMap
from offmaps.schemas.changeset import ChangeStatus
from tests.serverkit import LiveServer, webmap_document

DEVICES = 2
ROWS = 4
POINTS = LayerSchema(
    "points", (Field("a", FieldType.TEXT), Field("b", FieldType.INTEGER)), GeometryType.POINT
)
AREA = area_from_bbox(24.0, 60.0, 25.0, 61.0)
_services = itertools.count()

actors = st.sampled_from(["server", *(f"d{i}" for i in range(DEVICES))])
operations = st.one_of(
    st.tuples(st.just("update"), st.integers(0, 50), st.sampled_from(["a", "b", "geom"]),
              st.integers(0, 3)),
    st.tuples(st.just("insert"), st.integers(0, 3)),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("sync"), st.sampled_from(["bidirectional", "upload", "download"])),
)  # fmt: skip
steps = st.lists(st.tuples(actors, operations), min_size=1, max_size=14)
policies = st.sampled_from(["manual", "server_wins", "client_wins", "last_writer_wins"])


@dataclass
class World:
    server: LiveServer
    service: str
    devices: list[tuple[Path, OfflineMapSyncTask]]


def rows(store: GeoPackageStore) -> dict[uuid.UUID, tuple[Any, ...]]:
    return {
        f.global_id: (f.properties["a"], f.properties["b"], f.geometry.wkt if f.geometry else None)
        for f in store.iter_features("points", FeatureQuery(limit=10_000))
    }


def edit_of(operation: tuple[Any, ...], current: list[uuid.UUID]) -> Edit | None:
    kind = operation[0]
    if kind == "insert":
        return Insert("points", {"a": f"new {operation[1]}", "b": operation[1]}, Point(24.5, 60.5))
    if not current:
        return None
    gid = current[operation[1] % len(current)]
    if kind == "delete":
        return Delete("points", gid)
    field, value = operation[2], operation[3]
    if field == "geom":
        return Update("points", gid, geometry=Point(24.5 + value / 10, 60.5), set_geometry=True)
    return Update("points", gid, {field: f"v{value}" if field == "a" else value})


def make_world(
    server: LiveServer, policy: str, task_for: Callable[[LiveServer, str], OfflineMapTask],
    folder: Path,
) -> World:  # fmt: skip
    catalog = server.server.catalog
    service = f"conv{next(_services)}"
    store = catalog.create_feature_service(service)
    store.create_layer(POINTS)
    store.apply_edits(
        [Insert("points", {"a": f"row {i}", "b": i}, Point(24.5, 60.5)) for i in range(ROWS)]
    )
    document = webmap_document(
        title=service,
        public=True,
        layers=[
            {
                "type": "feature", "id": "points", "title": "Points", "service": service,
                "layer": "points", "sync_enabled": True,
                "editing": {"create": True, "update": True, "delete": True},
            }
        ],
        tables=[],
    )  # fmt: skip
    document["offline"] = {"conflict_policy": policy}
    webmap = catalog.webmaps.create(WebMap.model_validate(document), owner="editor")
    assert webmap.id is not None
    devices = []
    for index in range(DEVICES):
        task = task_for(server, webmap.id)
        target = folder / f"{service}-{index}"
        task.generate_offline_map(
            task.create_default_generate_offline_map_parameters(AREA), target
        ).wait(poll_seconds=0.02)
        devices.append((target, OfflineMapSyncTask(target, task.item.portal)))
    return World(server, service, devices)


def device_store(world: World, index: int) -> GeoPackageStore:
    folder, task = world.devices[index]
    (replica,) = task.package.manifest.replicas
    return GeoPackageStore.open(folder / replica.file)


def sync(world: World, index: int, direction: str) -> None:
    task = world.devices[index][1]
    # sets of 2 changes: uploads take several sets, each read while the previous is merged
    parameters = SyncOfflineMapParameters(sync_direction=SyncDirection(direction), batch_size=2)
    task.sync_offline_map(parameters).wait()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(policy=policies, script=steps)
def test_random_edits_and_syncs_converge_and_no_edit_disappears(
    live_server: LiveServer,
    task_for: Callable[[LiveServer, str], OfflineMapTask],
    tmp_path: Path,
    policy: str,
    script: list[tuple[str, tuple[Any, ...]]],
) -> None:
    world = make_world(live_server, policy, task_for, tmp_path)
    server_store = live_server.server.catalog.feature_service(world.service)
    for actor, operation in script:
        if actor == "server":
            if operation[0] == "sync":
                continue
            edit = edit_of(operation, sorted(rows(server_store)))  # type: ignore[arg-type]
            if edit is not None:
                server_store.apply_edits([edit])
            continue
        index = int(actor[1:])
        if operation[0] == "sync":
            sync(world, index, operation[1])
            continue
        with device_store(world, index) as store:
            edit = edit_of(operation, sorted(rows(store)))
            if edit is not None:
                store.apply_edits([edit])

    for _ in range(2):  # everyone uploads, then everyone has everything
        for index in range(DEVICES):
            sync(world, index, "bidirectional")

    expected = rows(server_store)  # type: ignore[arg-type]
    client, headers = live_server.server.client, live_server.server.token("editor")
    recorded = {
        c["id"]
        for c in client.get("/api/conflicts?status=all&limit=1000", headers=headers).json()[
            "conflicts"
        ]
    }
    for index in range(DEVICES):
        with device_store(world, index) as store:
            assert rows(store) == expected, (policy, index)
        folder, task = world.devices[index]
        (replica,) = task.package.manifest.replicas
        with LocalReplica.open(
            folder / replica.file, replica_id=replica.replica_id, generation=replica.generation
        ) as local:
            for entry in local.outbox(limit=10_000):
                assert entry.status in (
                    ChangeStatus.APPLIED, ChangeStatus.MERGED, ChangeStatus.CONFLICT
                ), (entry, policy)  # fmt: skip
                if entry.status is ChangeStatus.CONFLICT:  # its own, or its change's
                    assert str(entry.conflict_id) in recorded
