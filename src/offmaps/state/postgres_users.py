"""Users and OAuth2 clients in PostgreSQL: the :class:`~offmaps.state.UserStore` of several
server processes on several hosts.

The same rows as :class:`~offmaps.state.SQLiteUserStore`, in the ``users`` and ``clients``
tables of the state schema (``offmaps_state``), with the same checks and the same answers:
Argon2id password hashes, SHA-256 of client secrets, unknown names costing the same time as
wrong passwords. Names are ``COLLATE "C"``: compared and listed byte for byte as SQLite does
(``Ada`` and ``ada`` are two users, listed ``Ada`` first), whatever the database's locale.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from offmaps.access import check_scopes
from offmaps.errors import InvalidCredentialsError, UserExistsError, UserNotFoundError
from offmaps.state.postgres import Migration, PostgresDatabase
from offmaps.state.users import (
    _NAME,
    _WRONG,
    _WRONG_CLIENT,
    MAX_PASSWORD_LENGTH,
    Client,
    User,
    _check_password,
    _sha256,
    check_name,
)

__all__ = ["COMPONENT", "MIGRATIONS", "PostgresUserStore"]

COMPONENT = "users"
"""The name of the store's tables in the schema's ``migrations`` table."""

MIGRATIONS: tuple[Migration, ...] = (
    (
        "users and OAuth2 clients",
        """
        CREATE TABLE users (
            name TEXT COLLATE "C" PRIMARY KEY,
            password_hash TEXT NOT NULL,
            scopes TEXT NOT NULL,
            groups TEXT NOT NULL,
            disabled BOOLEAN NOT NULL DEFAULT false,
            created_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE clients (
            client_id TEXT COLLATE "C" PRIMARY KEY,
            secret_sha256 TEXT NOT NULL,
            scopes TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL
        );
        """,
    ),
)
"""The store's schema, step by step (step *n* makes version *n*): append, never edit."""

_USER = "SELECT name, scopes, groups, disabled, created_at, password_hash FROM users"
_CLIENT = "SELECT client_id, scopes, created_at, secret_sha256 FROM clients"


class PostgresUserStore:
    """:class:`~offmaps.state.UserStore` in a PostgreSQL schema.

    Args:
        database: the state schema's database (the store closes it in :meth:`close`).
        hasher: the Argon2 password hasher (tests pass a cheap one).
        migrate: upgrade older tables at open instead of refusing to open.

    Raises:
        FeatureStoreError: the database cannot be reached, or its tables are at another
            version (the message says what to do).
    """

    def __init__(
        self,
        database: PostgresDatabase,
        *,
        hasher: PasswordHasher | None = None,
        migrate: bool = False,
    ) -> None:
        self.database = database
        database.require(COMPONENT, MIGRATIONS, migrate=migrate)
        self._hasher = hasher or PasswordHasher()
        # Verified against when the user does not exist, so that unknown users cost the same.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        self._dummy_sha256 = _sha256(secrets.token_urlsafe(32))

    def __repr__(self) -> str:
        return f"PostgresUserStore({self.database!r})"

    def close(self) -> None:
        """Close the database's connections."""
        self.database.close()

    def __enter__(self) -> PostgresUserStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- users -----------------------------------------------------------------------------

    def add_user(
        self,
        name: str,
        password: str,
        *,
        scopes: Iterable[str],
        groups: Iterable[str] = (),
    ) -> User:
        """Add a user.

        Raises:
            InvalidUserError: a bad name, group, scope, or a password not 8 to 1024 characters.
            UserExistsError: a user of this name exists already.
        """
        check_name(name)
        _check_password(password)
        checked_scopes = check_scopes(scopes)
        checked_groups = tuple(sorted({check_name(g, what="group name") for g in groups}))
        password_hash = self._hasher.hash(password)
        with self.database.connection() as conn:
            row = conn.execute(
                "INSERT INTO users (name, password_hash, scopes, groups, disabled, created_at) "
                "VALUES (%s, %s, %s, %s, false, %s) ON CONFLICT (name) DO NOTHING "
                "RETURNING name, scopes, groups, disabled, created_at, password_hash",
                (
                    name,
                    password_hash,
                    " ".join(checked_scopes),
                    " ".join(checked_groups),
                    datetime.now(UTC),
                ),
            ).fetchone()
        if row is None:
            raise UserExistsError(f"a user {name!r} exists already")
        return _user(row)

    def get_user(self, name: str) -> User:
        """The user called ``name``.

        Raises:
            UserNotFoundError: no such user.
        """
        row = self._user_row(name)
        if row is None:
            raise UserNotFoundError(f"no user {str(name)[:80]!r}")
        return _user(row)

    def list_users(self) -> list[User]:
        """Every user, by name."""
        with self.database.connection() as conn:
            rows = conn.execute(_USER + " ORDER BY name").fetchall()
        return [_user(row) for row in rows]

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password.

        Raises:
            InvalidUserError: a password not 8 to 1024 characters long.
            UserNotFoundError: no such user.
        """
        _check_password(password)
        self._update(name, "UPDATE users SET password_hash = %s WHERE name = %s",
                     self._hasher.hash(password))  # fmt: skip

    def set_disabled(self, name: str, disabled: bool = True) -> User:
        """Disable a user (they can no longer sign in), or enable them again.

        Raises:
            UserNotFoundError: no such user.
        """
        self._update(name, "UPDATE users SET disabled = %s WHERE name = %s", bool(disabled))
        return self.get_user(name)

    def delete_user(self, name: str) -> None:
        """Delete a user. Tokens already issued stay valid until they expire.

        Raises:
            UserNotFoundError: no such user.
        """
        with self.database.connection() as conn:
            deleted = (
                conn.execute("DELETE FROM users WHERE name = %s", (name,)).rowcount
                if _storable(name)
                else 0
            )
        if not deleted:
            raise UserNotFoundError(f"no user {str(name)[:80]!r}")

    def verify_password(self, name: str, password: str) -> User:
        """The user, if ``password`` is theirs and they are not disabled.

        Unknown users and wrong passwords give the same error after about the same time.

        Raises:
            InvalidCredentialsError: unknown user, wrong password, or a disabled user.
        """
        if not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
            raise InvalidCredentialsError(_WRONG)
        row = self._user_row(name) if isinstance(name, str) and _NAME.match(name) else None
        stored = row[5] if row is not None else self._dummy_hash
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            raise InvalidCredentialsError(_WRONG) from None
        if row is None:  # the dummy hash cannot match: its password was thrown away
            raise InvalidCredentialsError(_WRONG)
        user = _user(row)
        if user.disabled:
            raise InvalidCredentialsError(f"user {name!r} is disabled")
        if self._hasher.check_needs_rehash(stored):
            self._update(name, "UPDATE users SET password_hash = %s WHERE name = %s",
                         self._hasher.hash(password))  # fmt: skip
        return user

    def _user_row(self, name: str) -> tuple[Any, ...] | None:
        if not _storable(name):
            return None
        with self.database.connection() as conn:
            return conn.execute(_USER + " WHERE name = %s", (name,)).fetchone()

    def _update(self, name: str, statement: str, value: object) -> None:
        with self.database.connection() as conn:
            changed = conn.execute(statement, (value, name)).rowcount if _storable(name) else 0
        if not changed:
            raise UserNotFoundError(f"no user {str(name)[:80]!r}")

    # --- clients ---------------------------------------------------------------------------

    def add_client(self, client_id: str, *, scopes: Iterable[str]) -> tuple[Client, str]:
        """Add an OAuth2 client; returns it and its secret, which is not kept and never shown
        again.

        Raises:
            InvalidUserError: a bad client id or scope.
            UserExistsError: a client of this id exists already.
        """
        check_name(client_id, what="client id")
        checked_scopes = check_scopes(scopes)
        secret = secrets.token_urlsafe(32)
        with self.database.connection() as conn:
            row = conn.execute(
                "INSERT INTO clients (client_id, secret_sha256, scopes, created_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (client_id) DO NOTHING "
                "RETURNING client_id, scopes, created_at, secret_sha256",
                (client_id, _sha256(secret), " ".join(checked_scopes), datetime.now(UTC)),
            ).fetchone()
        if row is None:
            raise UserExistsError(f"a client {client_id!r} exists already")
        return _client(row), secret

    def get_client(self, client_id: str) -> Client:
        """The client ``client_id``.

        Raises:
            UserNotFoundError: no such client.
        """
        row = self._client_row(client_id)
        if row is None:
            raise UserNotFoundError(f"no client {str(client_id)[:80]!r}")
        return _client(row)

    def list_clients(self) -> list[Client]:
        """Every client, by id."""
        with self.database.connection() as conn:
            rows = conn.execute(_CLIENT + " ORDER BY client_id").fetchall()
        return [_client(row) for row in rows]

    def delete_client(self, client_id: str) -> None:
        """Delete a client.

        Raises:
            UserNotFoundError: no such client.
        """
        with self.database.connection() as conn:
            deleted = (
                conn.execute("DELETE FROM clients WHERE client_id = %s", (client_id,)).rowcount
                if _storable(client_id)
                else 0
            )
        if not deleted:
            raise UserNotFoundError(f"no client {str(client_id)[:80]!r}")

    def verify_client(self, client_id: str, secret: str) -> Client:
        """The client, if ``secret`` is its secret.

        Raises:
            InvalidCredentialsError: unknown client or wrong secret.
        """
        if not isinstance(secret, str) or len(secret) > MAX_PASSWORD_LENGTH:
            raise InvalidCredentialsError(_WRONG_CLIENT)
        ok = isinstance(client_id, str) and _NAME.match(client_id) is not None
        row = self._client_row(client_id) if ok else None
        stored = row[3] if row is not None else self._dummy_sha256
        matches = hmac.compare_digest(stored, _sha256(secret))
        if row is None or not matches:
            raise InvalidCredentialsError(_WRONG_CLIENT)
        return _client(row)

    def _client_row(self, client_id: str) -> tuple[Any, ...] | None:
        if not _storable(client_id):
            return None
        with self.database.connection() as conn:
            return conn.execute(_CLIENT + " WHERE client_id = %s", (client_id,)).fetchone()


def _storable(name: object) -> bool:
    """Whether ``name`` can be in a table: PostgreSQL's text holds no NUL, so a name with one
    is no user (as in SQLite), not a database error."""
    return isinstance(name, str) and "\x00" not in name


def _when(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _user(row: tuple[Any, ...]) -> User:
    name, scopes, groups, disabled, created_at, _ = row
    return User(
        name=name,
        scopes=tuple(scopes.split()),
        groups=tuple(groups.split()),
        disabled=bool(disabled),
        created_at=_when(created_at),
    )


def _client(row: tuple[Any, ...]) -> Client:
    client_id, scopes, created_at, _ = row
    return Client(client_id=client_id, scopes=tuple(scopes.split()), created_at=_when(created_at))
