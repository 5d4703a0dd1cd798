"""The user and OAuth2 client store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from offmaps.access import Scope, parse_scopes
from offmaps.errors import (
    InvalidCredentialsError,
    InvalidUserError,
    UserExistsError,
    UserNotFoundError,
)
from offmaps.state.users import SQLiteUserStore, UserStore

PASSWORD = "correct horse battery"
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteUserStore]:
    with SQLiteUserStore(tmp_path / "users.sqlite", hasher=CHEAP) as users:
        yield users


def test_added_user_can_be_read_back(store: SQLiteUserStore) -> None:
    added = store.add_user(
        "ann", PASSWORD, scopes=("maps:write", "maps:read", "maps:read"), groups=("crew", "b")
    )
    assert added == store.get_user("ann")
    assert added.scopes == ("maps:read", "maps:write")
    assert added.groups == ("b", "crew")
    assert not added.disabled
    assert [u.name for u in store.list_users()] == ["ann"]


def test_password_is_stored_as_argon2_hash(store: SQLiteUserStore) -> None:
    store.add_user("ann", PASSWORD, scopes=())
    with sqlite3.connect(store.path) as db:
        (stored,) = db.execute("SELECT password_hash FROM users").fetchone()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


def test_verify_password_returns_the_user(store: SQLiteUserStore) -> None:
    store.add_user("ann", PASSWORD, scopes=(Scope.MAPS_READ,))
    assert store.verify_password("ann", PASSWORD).scopes == ("maps:read",)


def test_unknown_user_and_wrong_password_give_the_same_error(store: SQLiteUserStore) -> None:
    store.add_user("ann", PASSWORD, scopes=())
    with pytest.raises(InvalidCredentialsError) as wrong:
        store.verify_password("ann", "not the password")
    with pytest.raises(InvalidCredentialsError) as unknown:
        store.verify_password("bob", PASSWORD)
    with pytest.raises(InvalidCredentialsError) as malformed:
        store.verify_password("no such/name", PASSWORD)
    assert str(wrong.value) == str(unknown.value) == str(malformed.value)


def test_disabled_user_cannot_sign_in(store: SQLiteUserStore) -> None:
    store.add_user("ann", PASSWORD, scopes=())
    assert store.set_disabled("ann").disabled
    with pytest.raises(InvalidCredentialsError, match="disabled"):
        store.verify_password("ann", PASSWORD)
    store.set_disabled("ann", False)
    store.verify_password("ann", PASSWORD)


def test_set_password_replaces_the_old_one(store: SQLiteUserStore) -> None:
    store.add_user("ann", PASSWORD, scopes=())
    store.set_password("ann", "a new password")
    store.verify_password("ann", "a new password")
    with pytest.raises(InvalidCredentialsError):
        store.verify_password("ann", PASSWORD)


def test_delete_user_removes_them(store: SQLiteUserStore) -> None:
    store.add_user("ann", PASSWORD, scopes=())
    store.delete_user("ann")
    with pytest.raises(UserNotFoundError):
        store.get_user("ann")
    with pytest.raises(UserNotFoundError):
        store.delete_user("ann")


def test_missing_users_raise_not_found(store: SQLiteUserStore) -> None:
    with pytest.raises(UserNotFoundError):
        store.set_password("ghost", PASSWORD)
    with pytest.raises(UserNotFoundError):
        store.set_disabled("ghost")


def test_adding_a_user_twice_is_refused(store: SQLiteUserStore) -> None:
    store.add_user("ann", PASSWORD, scopes=())
    with pytest.raises(UserExistsError):
        store.add_user("ann", PASSWORD, scopes=())


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "ann/../x", "ann:1", "é"])
def test_bad_user_names_are_refused(store: UserStore, name: str) -> None:
    with pytest.raises(InvalidUserError, match="1 to 64"):
        store.add_user(name, PASSWORD, scopes=())


@pytest.mark.parametrize("password", ["short", "x" * 1025])
def test_bad_passwords_are_refused(store: UserStore, password: str) -> None:
    with pytest.raises(InvalidUserError, match="8 to 1024"):
        store.add_user("ann", password, scopes=())


def test_unknown_scopes_and_bad_groups_are_refused(store: SQLiteUserStore) -> None:
    with pytest.raises(InvalidUserError, match="unknown scope 'maps:delete'"):
        store.add_user("ann", PASSWORD, scopes=("maps:delete",))
    with pytest.raises(InvalidUserError, match="group name"):
        store.add_user("ann", PASSWORD, scopes=(), groups=("a group",))


def test_oversized_password_on_sign_in_is_wrong_credentials(store: SQLiteUserStore) -> None:
    store.add_user("ann", PASSWORD, scopes=())
    with pytest.raises(InvalidCredentialsError):
        store.verify_password("ann", "x" * 100_000)


def test_client_secret_is_returned_once_and_verifies(store: SQLiteUserStore) -> None:
    client, secret = store.add_client("etl", scopes=("features:edit",))
    assert client.scopes == ("features:edit",)
    assert len(secret) >= 40
    assert store.verify_client("etl", secret) == client
    with sqlite3.connect(store.path) as db:
        (stored,) = db.execute("SELECT secret_sha256 FROM clients").fetchone()
    assert secret not in stored
    assert [c.client_id for c in store.list_clients()] == ["etl"]


def test_wrong_client_secret_and_unknown_client_give_the_same_error(store: SQLiteUserStore) -> None:
    _, secret = store.add_client("etl", scopes=())
    with pytest.raises(InvalidCredentialsError) as wrong:
        store.verify_client("etl", secret + "x")
    with pytest.raises(InvalidCredentialsError) as unknown:
        store.verify_client("other", secret)
    assert str(wrong.value) == str(unknown.value)


def test_clients_can_be_deleted_and_not_added_twice(store: SQLiteUserStore) -> None:
    store.add_client("etl", scopes=())
    with pytest.raises(UserExistsError):
        store.add_client("etl", scopes=())
    store.delete_client("etl")
    with pytest.raises(UserNotFoundError):
        store.get_client("etl")


def test_users_survive_reopening(tmp_path: Path) -> None:
    with SQLiteUserStore(tmp_path / "u.sqlite", hasher=CHEAP) as users:
        users.add_user("ann", PASSWORD, scopes=("admin",))
    with SQLiteUserStore(tmp_path / "u.sqlite", hasher=CHEAP) as users:
        assert users.verify_password("ann", PASSWORD).scopes == ("admin",)


def test_parse_scopes_accepts_commas_and_spaces() -> None:
    assert parse_scopes("maps:write, maps:read admin") == ("admin", "maps:read", "maps:write")
    with pytest.raises(InvalidUserError):
        parse_scopes("maps:read,root")
