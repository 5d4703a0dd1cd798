"""The user store contract: the SQLite and the PostgreSQL stores pass these same tests.

The PostgreSQL store needs ``OFFMAPS_TEST_POSTGRES_URL`` (``make test`` starts the server):
without it these tests fail loudly, never skip. Each test gets a schema of its own, dropped
afterwards, so tests run side by side (``pytest -n 2``). ``tests/state/test_users.py`` keeps
the embedded file's own tests.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from offmaps.access import Scope
from offmaps.errors import (
    InvalidCredentialsError,
    InvalidUserError,
    UserExistsError,
    UserNotFoundError,
)
from offmaps.state.postgres_users import PostgresUserStore
from offmaps.state.users import SQLiteUserStore, UserStore
from tests.state.backends import opening
from tests.state.test_users import CHEAP, PASSWORD

BACKENDS = ["sqlite", "postgres"]

Opener = Callable[[], UserStore]


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores of one backend on one place: each call is another process's view."""
    opener = opening(
        request.param,
        lambda: SQLiteUserStore(tmp_path / "users.sqlite", hasher=CHEAP),
        lambda database: PostgresUserStore(database, hasher=CHEAP),
    )
    yield from cast(Iterator[Opener], opener)  # the backends' classes, as their protocol


@pytest.fixture
def store(open_store: Opener) -> UserStore:
    """A fresh, empty store of each backend."""
    return open_store()


def stored(store: UserStore, query: str) -> str:
    """One value as the store's own tables hold it."""
    if isinstance(store, SQLiteUserStore):
        with sqlite3.connect(store.path) as db:
            row = db.execute(query).fetchone()
    else:
        assert isinstance(store, PostgresUserStore)
        with store.database.connection() as conn:
            row = conn.execute(query.encode()).fetchone()
    assert row is not None
    return str(row[0])


def test_each_store_is_a_user_store(store: UserStore) -> None:
    assert isinstance(store, UserStore)


def test_an_added_user_reads_back(store: UserStore) -> None:
    before = datetime.now(UTC)
    added = store.add_user(
        "ann", PASSWORD, scopes=("maps:write", "maps:read", "maps:read"), groups=("crew", "b")
    )
    assert added == store.get_user("ann")
    assert added.scopes == ("maps:read", "maps:write")
    assert added.groups == ("b", "crew")
    assert not added.disabled
    assert added.created_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= added.created_at <= datetime.now(UTC)
    assert store.list_users() == [added]


def test_users_are_listed_by_name_byte_for_byte(store: UserStore) -> None:
    names = ["bob", "Ann", "ann", "_x", "Zed", "a.b", "a-b", "a@b", "9"]
    for name in names:
        store.add_user(name, PASSWORD, scopes=())
    assert [u.name for u in store.list_users()] == sorted(names)
    assert store.get_user("Ann").name == "Ann"  # names are case-sensitive


def test_the_password_is_kept_as_an_argon2_hash(store: UserStore) -> None:
    store.add_user("ann", PASSWORD, scopes=())
    hashed = stored(store, "SELECT password_hash FROM users")
    assert hashed.startswith("$argon2id$")
    assert PASSWORD not in hashed


def test_a_password_verifies_to_the_user(store: UserStore) -> None:
    store.add_user("ann", PASSWORD, scopes=(Scope.MAPS_READ,))
    assert store.verify_password("ann", PASSWORD).scopes == ("maps:read",)


@pytest.mark.parametrize("name", ["bob", "no such/name", "ann\x00", "", "x" * 65])
def test_unknown_users_and_wrong_passwords_give_the_same_error(store: UserStore, name: str) -> None:
    store.add_user("ann", PASSWORD, scopes=())
    with pytest.raises(InvalidCredentialsError) as wrong:
        store.verify_password("ann", "not the password")
    with pytest.raises(InvalidCredentialsError) as unknown:
        store.verify_password(name, PASSWORD)
    assert str(wrong.value) == str(unknown.value)


def test_a_disabled_user_cannot_sign_in(store: UserStore) -> None:
    store.add_user("ann", PASSWORD, scopes=())
    assert store.set_disabled("ann").disabled
    with pytest.raises(InvalidCredentialsError, match="disabled"):
        store.verify_password("ann", PASSWORD)
    assert not store.set_disabled("ann", False).disabled
    store.verify_password("ann", PASSWORD)


def test_a_new_password_replaces_the_old_one(store: UserStore) -> None:
    store.add_user("ann", PASSWORD, scopes=())
    store.set_password("ann", "a new password")
    store.verify_password("ann", "a new password")
    with pytest.raises(InvalidCredentialsError):
        store.verify_password("ann", PASSWORD)


def test_a_deleted_user_is_gone(store: UserStore) -> None:
    store.add_user("ann", PASSWORD, scopes=())
    store.add_user("bob", PASSWORD, scopes=())
    store.delete_user("ann")
    with pytest.raises(UserNotFoundError):
        store.get_user("ann")
    with pytest.raises(UserNotFoundError):
        store.delete_user("ann")
    assert [u.name for u in store.list_users()] == ["bob"]


@pytest.mark.parametrize("name", ["ghost", "gh\x00ost", "'; DROP TABLE users; --"])
def test_missing_users_are_not_found(store: UserStore, name: str) -> None:
    with pytest.raises(UserNotFoundError):
        store.get_user(name)
    with pytest.raises(UserNotFoundError):
        store.set_password(name, PASSWORD)
    with pytest.raises(UserNotFoundError):
        store.set_disabled(name)
    with pytest.raises(UserNotFoundError):
        store.delete_user(name)


def test_a_user_is_not_added_twice(store: UserStore) -> None:
    first = store.add_user("ann", PASSWORD, scopes=("admin",))
    with pytest.raises(UserExistsError):
        store.add_user("ann", "another password", scopes=())
    assert store.get_user("ann") == first
    store.verify_password("ann", PASSWORD)


def test_two_processes_adding_one_name_make_one_user(open_store: Opener) -> None:
    stores = [open_store(), open_store()]
    made: list[str] = []
    refused: list[UserExistsError] = []
    start = threading.Barrier(4)

    def add(store: UserStore, n: int) -> None:
        start.wait()
        try:
            store.add_user("ann", f"password {n}", scopes=())
        except UserExistsError as exc:
            refused.append(exc)
        else:
            made.append(f"password {n}")

    threads = [threading.Thread(target=add, args=(stores[n % 2], n)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(made), len(refused)) == (1, 3)
    assert stores[1].verify_password("ann", made[0]).name == "ann"


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "ann/../x", "ann:1", "é", "a\x00"])
def test_bad_user_names_are_refused(store: UserStore, name: str) -> None:
    with pytest.raises(InvalidUserError, match="1 to 64"):
        store.add_user(name, PASSWORD, scopes=())


@pytest.mark.parametrize("password", ["short", "x" * 1025])
def test_bad_passwords_are_refused(store: UserStore, password: str) -> None:
    with pytest.raises(InvalidUserError, match="8 to 1024"):
        store.add_user("ann", password, scopes=())
    with pytest.raises(UserNotFoundError):
        store.get_user("ann")


def test_unknown_scopes_and_bad_groups_are_refused(store: UserStore) -> None:
    with pytest.raises(InvalidUserError, match="unknown scope 'maps:delete'"):
        store.add_user("ann", PASSWORD, scopes=("maps:delete",))
    with pytest.raises(InvalidUserError, match="group name"):
        store.add_user("ann", PASSWORD, scopes=(), groups=("a group",))


def test_an_oversized_password_at_sign_in_is_wrong_credentials(store: UserStore) -> None:
    store.add_user("ann", PASSWORD, scopes=())
    with pytest.raises(InvalidCredentialsError):
        store.verify_password("ann", "x" * 100_000)


def test_a_client_secret_is_returned_once_and_verifies(store: UserStore) -> None:
    client, secret = store.add_client("etl", scopes=("features:edit",))
    assert client.scopes == ("features:edit",)
    assert len(secret) >= 40
    assert store.verify_client("etl", secret) == client
    assert store.get_client("etl") == client
    assert secret not in stored(store, "SELECT secret_sha256 FROM clients")
    assert store.list_clients() == [client]


def test_clients_are_listed_by_id_byte_for_byte(store: UserStore) -> None:
    ids = ["etl", "ETL", "b", "A"]
    for client_id in ids:
        store.add_client(client_id, scopes=())
    assert [c.client_id for c in store.list_clients()] == sorted(ids)


@pytest.mark.parametrize("client_id", ["other", "no such/client", "etl\x00", ""])
def test_wrong_client_secrets_and_unknown_clients_give_the_same_error(
    store: UserStore, client_id: str
) -> None:
    _, secret = store.add_client("etl", scopes=())
    with pytest.raises(InvalidCredentialsError) as wrong:
        store.verify_client("etl", secret + "x")
    with pytest.raises(InvalidCredentialsError) as unknown:
        store.verify_client(client_id, secret)
    assert str(wrong.value) == str(unknown.value)


def test_clients_are_deleted_and_not_added_twice(store: UserStore) -> None:
    store.add_client("etl", scopes=())
    with pytest.raises(UserExistsError):
        store.add_client("etl", scopes=())
    store.delete_client("etl")
    with pytest.raises(UserNotFoundError):
        store.get_client("etl")
    with pytest.raises(UserNotFoundError):
        store.delete_client("etl")
    with pytest.raises(UserNotFoundError):
        store.delete_client("et\x00l")


def test_bad_client_ids_and_scopes_are_refused(store: UserStore) -> None:
    with pytest.raises(InvalidUserError, match="client id"):
        store.add_client("a client", scopes=())
    with pytest.raises(InvalidUserError, match="unknown scope"):
        store.add_client("etl", scopes=("root",))


def test_another_process_sees_the_same_users(open_store: Opener) -> None:
    here, there = open_store(), open_store()
    here.add_user("ann", PASSWORD, scopes=("admin",))
    _, secret = here.add_client("etl", scopes=())
    assert there.verify_password("ann", PASSWORD).scopes == ("admin",)
    assert there.verify_client("etl", secret).client_id == "etl"
    there.set_disabled("ann")
    with pytest.raises(InvalidCredentialsError, match="disabled"):
        here.verify_password("ann", PASSWORD)
