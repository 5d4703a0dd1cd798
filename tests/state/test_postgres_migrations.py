"""Versioned migrations of the state stores in PostgreSQL, ``offmaps db upgrade``, and the choice
of the PostgreSQL state stores by ``OFFMAPS_DATABASE_URL``.

Needs ``OFFMAPS_TEST_POSTGRES_URL`` (``make test`` starts the server): without it these tests fail
loudly, never skip. Each test gets schemas of its own, dropped afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from offmaps.errors import FeatureStoreError
from offmaps.jobs import postgres as jobs_postgres
from offmaps.jobs.postgres import PostgresJobStore
from offmaps.services import build_services, state_migrations, upgrade_database
from offmaps.settings import ServerSettings
from offmaps.state.postgres import AppliedMigration, Migration, PostgresDatabase
from offmaps.state.postgres_replicas import PostgresReplicaRegistry
from tests.features.conftest import postgres_url
from tests.state.backends import drop_schema
from tests.state.test_job_store_contract import new_job

STEPS: tuple[Migration, ...] = (
    ("the a table", "CREATE TABLE a (x INTEGER); CREATE INDEX a_x ON a (x)"),
    ("b beside a", "CREATE TABLE b (y TEXT)"),
)


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh ``OFFMAPS_DATABASE_SCHEMA``: its ``_state`` and ``_cache`` schemas are dropped
    afterwards."""
    name = f"t{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        drop_schema(f"{name}_state")
        drop_schema(f"{name}_cache")


@pytest.fixture
def database(prefix: str) -> Iterator[PostgresDatabase]:
    """The state schema of a fresh prefix (not made yet)."""
    opened = PostgresDatabase(postgres_url(), schema=f"{prefix}_state")
    try:
        yield opened
    finally:
        opened.close()


def tables(schema: str) -> set[str]:
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {row[0] for row in rows}


def test_a_fresh_database_gets_every_step(database: PostgresDatabase) -> None:
    applied = database.upgrade("demo", STEPS)
    assert applied == [
        AppliedMigration("demo", 1, "the a table"),
        AppliedMigration("demo", 2, "b beside a"),
    ]
    assert database.versions() == {"demo": 2}
    assert tables(database.schema) == {"a", "b", "migrations"}


def test_upgrading_again_does_nothing(database: PostgresDatabase) -> None:
    database.upgrade("demo", STEPS)
    assert database.upgrade("demo", STEPS) == []
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT component, version FROM {database.schema}.migrations ORDER BY version"
        ).fetchall()
    assert rows == [("demo", 1), ("demo", 2)]


def test_a_new_step_is_applied_alone(database: PostgresDatabase) -> None:
    database.upgrade("demo", STEPS[:1])
    assert database.upgrade("demo", STEPS) == [AppliedMigration("demo", 2, "b beside a")]


def test_components_keep_versions_of_their_own(database: PostgresDatabase) -> None:
    database.upgrade("demo", STEPS)
    database.upgrade("other", (("the c table", "CREATE TABLE c (z INTEGER)"),))
    assert database.versions() == {"demo": 2, "other": 1}


def test_a_failing_step_leaves_nothing(database: PostgresDatabase) -> None:
    broken = (*STEPS, ("a typo", "CREATE TABEL c (z INTEGER)"))
    with pytest.raises(FeatureStoreError, match="syntax error") as failed:
        database.upgrade("demo", broken)
    assert "\n" not in str(failed.value)
    assert database.versions() == {}
    assert tables(database.schema) == set()


_UPGRADE = """
import json, sys
from offmaps.state.postgres import PostgresDatabase
steps = tuple(tuple(step) for step in json.loads(sys.argv[3]))
database = PostgresDatabase(sys.argv[1], schema=sys.argv[2])
print(json.dumps([step.version for step in database.upgrade("demo", steps)]))
"""


def test_two_processes_upgrading_at_once_apply_each_step_once(database: PostgresDatabase) -> None:
    slow = (("a slow table", "SELECT pg_sleep(0.3); CREATE TABLE a (x INTEGER)"), STEPS[1])
    lock = f"{database.schema}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with psycopg.connect(postgres_url(), autocommit=True) as holder:
        # hold the schema's migration lock, so that both processes wait on it together
        holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (0x6F6D6D67, lock))
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _UPGRADE, postgres_url(), database.schema, json.dumps(slow)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(2)
        ]
        deadline = time.monotonic() + 30
        while waiting(holder) < 2:
            assert time.monotonic() < deadline, [child.poll() for child in children]
            time.sleep(0.02)
        holder.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (0x6F6D6D67, lock))
    outputs = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    applied = sorted(json.loads(out) for out, _ in outputs)
    assert applied == [[], [1, 2]]  # one did it all, the other found nothing to do
    assert database.versions() == {"demo": 2}


def waiting(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    """How many sessions wait for an advisory lock."""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    ).fetchone()
    return int(row[0]) if row else 0


def test_an_empty_component_is_made_at_open(database: PostgresDatabase) -> None:
    assert database.require("demo", STEPS) == 2
    assert database.versions() == {"demo": 2}


def test_an_older_component_refuses_to_open_and_says_what_to_run(
    database: PostgresDatabase,
) -> None:
    database.upgrade("demo", STEPS[:1])
    with pytest.raises(FeatureStoreError, match=r"run `offmaps db upgrade`") as refused:
        database.require("demo", STEPS)
    assert "version 1" in str(refused.value)
    assert "version 2" in str(refused.value)
    assert database.versions() == {"demo": 1}
    assert database.require("demo", STEPS, migrate=True) == 2
    assert database.versions() == {"demo": 2}


def test_a_newer_component_refuses_to_open(database: PostgresDatabase) -> None:
    database.upgrade("demo", STEPS)
    with pytest.raises(FeatureStoreError, match="newer than this offmaps"):
        database.require("demo", STEPS[:1], migrate=True)
    with pytest.raises(FeatureStoreError, match="newer than this offmaps"):
        database.upgrade("demo", STEPS[:1])


def test_a_store_on_an_old_schema_gives_the_clear_error(
    database: PostgresDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    PostgresJobStore(database).close()
    later = (*jobs_postgres.MIGRATIONS, ("a later column", "ALTER TABLE jobs ADD z TEXT"))
    monkeypatch.setattr(jobs_postgres, "MIGRATIONS", later)
    again = PostgresDatabase(postgres_url(), schema=database.schema)
    with pytest.raises(FeatureStoreError, match=r"jobs tables .* run `offmaps db upgrade`"):
        PostgresJobStore(again)
    store = PostgresJobStore(again, migrate=True)
    try:
        job = new_job()
        store.create(job)
        assert store.get(job.id) == job
    finally:
        store.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ada:secret@127.0.0.1:notaport/x",
        "postgresql://ada:se%zzcret@127.0.0.1/x",
        "postgresql://ada:secret@[::1/x",
        "postgresql://ada:se%40cret@127.0.0.1/x?nosuchoption=1",
    ],
    ids=["port", "escape", "host", "option"],
)
def test_a_malformed_url_is_one_line_without_its_password(url: str) -> None:
    with pytest.raises(FeatureStoreError, match="cannot connect") as failed:
        PostgresJobStore(PostgresDatabase(url, schema="t_x"))
    assert "\n" not in str(failed.value)
    assert "cret" not in str(failed.value)


def test_a_closed_store_says_so(database: PostgresDatabase) -> None:
    store = PostgresReplicaRegistry(database)
    store.close()
    with pytest.raises(FeatureStoreError, match="closed"):
        store.count_owned("ada")


def test_connections_the_server_dropped_are_replaced(database: PostgresDatabase) -> None:
    registry = PostgresReplicaRegistry(database)
    try:
        assert registry.count_owned("ada") == 0
        with psycopg.connect(postgres_url(), autocommit=True) as admin:
            dropped = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (database.application_name,),
            ).fetchone()
        assert dropped is not None
        assert dropped[0] >= 1
        assert registry.count_owned("ada") == 0  # a fresh connection, not an error
    finally:
        registry.close()


# --- the services and the command line --------------------------------------------------------


def test_the_database_url_keeps_jobs_and_replicas_in_postgresql(
    tmp_path: Path, prefix: str
) -> None:
    settings = ServerSettings(
        data_dir=tmp_path / "data", database_url=postgres_url(), database_schema=prefix
    )
    services = build_services(settings)
    try:
        assert isinstance(services.jobs.store, PostgresJobStore)
        assert isinstance(services.replicas, PostgresReplicaRegistry)
        job = new_job()
        services.jobs.store.create(job)
        replica = services.replicas.register(
            "water", ("hydrants",), 1, owner="ada", map_id=None, sync_direction="upload"
        )
    finally:
        services.close()
    assert not (tmp_path / "data" / "replicas.sqlite").exists()
    assert not (tmp_path / "data" / "jobs" / job.id).exists()
    again = build_services(settings)  # another process sees them
    try:
        assert again.jobs.get(job.id) == job
        assert again.replicas.get(replica.id) == replica
    finally:
        again.close()
    with pytest.raises(FeatureStoreError, match="closed"):  # closed with the services
        again.jobs.store.get(job.id)


def test_services_refuse_an_older_schema_unless_told_to_migrate(
    tmp_path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ServerSettings(
        data_dir=tmp_path / "data", database_url=postgres_url(), database_schema=prefix
    )
    upgrade_database(settings)
    later = (*jobs_postgres.MIGRATIONS, ("a later column", "ALTER TABLE jobs ADD z TEXT"))
    monkeypatch.setattr(jobs_postgres, "MIGRATIONS", later)
    with pytest.raises(FeatureStoreError, match=r"run `offmaps db upgrade`"):
        build_services(settings)
    build_services(settings.model_copy(update={"database_migrate": True})).close()
    assert PostgresDatabase(postgres_url(), schema=f"{prefix}_state").versions()["jobs"] == 2


def run_offmaps(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``offmaps ARGS`` in a fresh interpreter with ``env`` added to the environment."""
    return subprocess.run(
        [sys.executable, "-m", "offmaps.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env},
        timeout=120,
    )


def test_db_upgrade_applies_every_store_once(prefix: str) -> None:
    env = {"OFFMAPS_DATABASE_URL": postgres_url(), "OFFMAPS_DATABASE_SCHEMA": prefix}
    first = run_offmaps("db", "upgrade", "--json", env=env)
    assert first.returncode == 0, first.stderr
    document = json.loads(first.stdout)
    versions = {name: len(steps) for name, steps in state_migrations().items()}
    assert document["schema"] == f"{prefix}_state"
    assert document["versions"] == versions
    assert {(step["component"], step["version"]) for step in document["applied"]} == {
        (name, version) for name, count in versions.items() for version in range(1, count + 1)
    }
    assert {"jobs", "replicas", "migrations"} <= tables(f"{prefix}_state")
    assert "tiles" in tables(f"{prefix}_cache")
    again = run_offmaps("db", "upgrade", env=env)
    assert again.returncode == 0, again.stderr
    assert "applied" not in again.stdout
    assert "up to date" in again.stdout


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://ada:secret@127.0.0.1:notaport/x", "FeatureStoreError: cannot connect"),
        ("mysql://ada:secret@127.0.0.1/x", "SettingsError: OFFMAPS_DATABASE_URL"),
        ("", "FeatureStoreError: the postgres state backend needs OFFMAPS_DATABASE_URL"),
    ],
    ids=["port", "scheme", "missing"],
)
def test_db_upgrade_with_a_bad_url_is_one_line(url: str, says: str) -> None:
    env = {"OFFMAPS_DATABASE_URL": url} if url else {}
    done = subprocess.run(
        [sys.executable, "-m", "offmaps.cli", "db", "upgrade"],
        capture_output=True,
        text=True,
        check=False,
        env={
            **{k: v for k, v in os.environ.items() if k != "OFFMAPS_DATABASE_URL"},
            "PYTHONPATH": os.pathsep.join(sys.path),
            **env,
        },
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(says), done.stderr
    assert done.stderr.count("\n") == 1
    assert "secret" not in done.stderr
