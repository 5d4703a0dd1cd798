"""Users and OAuth2 clients of the map server, kept in one SQLite file (``users.sqlite``).

Passwords are hashed with Argon2id (argon2-cffi). Client secrets are 256-bit random strings
generated here, so a SHA-256 of them is enough to keep (nobody can guess their way to one); they
are shown once, when the client is added.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from offmaps.access import check_scopes
from offmaps.errors import (
    InvalidCredentialsError,
    InvalidUserError,
    UserExistsError,
    UserNotFoundError,
)

__all__ = [
    "SQLiteUserStore",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "Client",
    "User",
    "UserStore",
    "check_name",
]

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_WRONG = "wrong user name or password"
_WRONG_CLIENT = "wrong client id or secret"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    scopes TEXT NOT NULL,
    groups TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class User:
    """A user of the server.

    Attributes:
        name: the user name, also the ``sub`` of their tokens.
        scopes: the most their tokens may carry, sorted.
        groups: the groups web maps can be shared with, sorted.
        disabled: disabled users cannot sign in.
        created_at: when the user was added (UTC).
    """

    name: str
    scopes: tuple[str, ...]
    groups: tuple[str, ...]
    disabled: bool
    created_at: datetime


@dataclass(frozen=True)
class Client:
    """An OAuth2 client of the client-credentials grant (a script or another server).

    Attributes:
        client_id: the client's id.
        scopes: the most its tokens may carry, sorted.
        created_at: when the client was added (UTC).
    """

    client_id: str
    scopes: tuple[str, ...]
    created_at: datetime


def check_name(name: str, *, what: str = "user name") -> str:
    """``name`` if it is a valid user, group or client name.

    Raises:
        InvalidUserError: unless it is 1 to 64 of ``A-Z a-z 0-9 _ . @ -``.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        shown = name[:80] if isinstance(name, str) else name
        raise InvalidUserError(f"{what} {shown!r} must be 1 to 64 of A-Z a-z 0-9 _ . @ -")
    return name


def _check_password(password: str) -> None:
    if not isinstance(password, str) or not (
        MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH
    ):
        raise InvalidUserError(
            f"a password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters long"
        )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat()


@runtime_checkable
class UserStore(Protocol):
    """Users and OAuth2 clients of a server: the seam a PostgreSQL store implements too."""

    def close(self) -> None:
        """Close the database."""
        ...

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
        ...

    def get_user(self, name: str) -> User:
        """The user called ``name``.

        Raises:
            UserNotFoundError: no such user.
        """
        ...

    def list_users(self) -> list[User]:
        """Every user, by name."""
        ...

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password.

        Raises:
            InvalidUserError: a password not 8 to 1024 characters long.
            UserNotFoundError: no such user.
        """
        ...

    def set_disabled(self, name: str, disabled: bool = True) -> User:
        """Disable a user (they can no longer sign in), or enable them again.

        Raises:
            UserNotFoundError: no such user.
        """
        ...

    def delete_user(self, name: str) -> None:
        """Delete a user. Tokens already issued stay valid until they expire.

        Raises:
            UserNotFoundError: no such user.
        """
        ...

    def verify_password(self, name: str, password: str) -> User:
        """The user, if ``password`` is theirs and they are not disabled.

        Unknown users and wrong passwords give the same error after about the same time.

        Raises:
            InvalidCredentialsError: unknown user, wrong password, or a disabled user.
        """
        ...

    def add_client(self, client_id: str, *, scopes: Iterable[str]) -> tuple[Client, str]:
        """Add an OAuth2 client; returns it and its secret, which is not kept and never shown again.

        Raises:
            InvalidUserError: a bad client id or scope.
            UserExistsError: a client of this id exists already.
        """
        ...

    def get_client(self, client_id: str) -> Client:
        """The client ``client_id``.

        Raises:
            UserNotFoundError: no such client.
        """
        ...

    def list_clients(self) -> list[Client]:
        """Every client, by id."""
        ...

    def delete_client(self, client_id: str) -> None:
        """Delete a client.

        Raises:
            UserNotFoundError: no such client.
        """
        ...

    def verify_client(self, client_id: str, secret: str) -> Client:
        """The client, if ``secret`` is its secret.

        Raises:
            InvalidCredentialsError: unknown client or wrong secret.
        """
        ...


class SQLiteUserStore:
    """Users and OAuth2 clients in a SQLite file, safe to share between threads.

    Writes take a lock; the database runs in WAL mode so that several server processes can share
    the file.

    Args:
        path: the SQLite file, created with its folder when missing.
        hasher: the Argon2 password hasher (tests pass a cheap one).
    """

    def __init__(self, path: Path | str, *, hasher: PasswordHasher | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._hasher = hasher or PasswordHasher()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self._db.commit()
        # Verified against when the user does not exist, so that unknown users cost the same.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        self._dummy_sha256 = _sha256(secrets.token_urlsafe(32))

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> SQLiteUserStore:
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
        created = _now()
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO users (name, password_hash, scopes, groups, disabled, created_at)"
                    " VALUES (?, ?, ?, ?, 0, ?)",
                    (
                        name,
                        password_hash,
                        " ".join(checked_scopes),
                        " ".join(checked_groups),
                        created,
                    ),
                )
                self._db.commit()
            except sqlite3.IntegrityError:
                self._db.rollback()
                raise UserExistsError(f"a user {name!r} exists already") from None
        return self.get_user(name)

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
        with self._lock:
            rows = self._db.execute(
                "SELECT name, scopes, groups, disabled, created_at, password_hash"
                " FROM users ORDER BY name"
            ).fetchall()
        return [_user(row) for row in rows]

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password.

        Raises:
            InvalidUserError: a password not 8 to 1024 characters long.
            UserNotFoundError: no such user.
        """
        _check_password(password)
        self._update(name, "password_hash = ?", self._hasher.hash(password))

    def set_disabled(self, name: str, disabled: bool = True) -> User:
        """Disable a user (they can no longer sign in), or enable them again.

        Raises:
            UserNotFoundError: no such user.
        """
        self._update(name, "disabled = ?", int(disabled))
        return self.get_user(name)

    def delete_user(self, name: str) -> None:
        """Delete a user. Tokens already issued stay valid until they expire.

        Raises:
            UserNotFoundError: no such user.
        """
        with self._lock:
            deleted = self._db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount
            self._db.commit()
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
            self._update(name, "password_hash = ?", self._hasher.hash(password))
        return user

    def _user_row(self, name: str) -> tuple[str, str, str, int, str, str] | None:
        with self._lock:
            row: tuple[str, str, str, int, str, str] | None = self._db.execute(
                "SELECT name, scopes, groups, disabled, created_at, password_hash"
                " FROM users WHERE name = ?",
                (name,),
            ).fetchone()
        return row

    def _update(self, name: str, assignment: str, value: object) -> None:
        with self._lock:
            changed = self._db.execute(
                f"UPDATE users SET {assignment} WHERE name = ?",  # noqa: S608 (fixed assignments)
                (value, name),
            ).rowcount
            self._db.commit()
        if not changed:
            raise UserNotFoundError(f"no user {str(name)[:80]!r}")

    # --- clients ---------------------------------------------------------------------------

    def add_client(self, client_id: str, *, scopes: Iterable[str]) -> tuple[Client, str]:
        """Add an OAuth2 client; returns it and its secret, which is not kept and never shown again.

        Raises:
            InvalidUserError: a bad client id or scope.
            UserExistsError: a client of this id exists already.
        """
        check_name(client_id, what="client id")
        checked_scopes = check_scopes(scopes)
        secret = secrets.token_urlsafe(32)
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO clients (client_id, secret_sha256, scopes, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (client_id, _sha256(secret), " ".join(checked_scopes), _now()),
                )
                self._db.commit()
            except sqlite3.IntegrityError:
                self._db.rollback()
                raise UserExistsError(f"a client {client_id!r} exists already") from None
        return self.get_client(client_id), secret

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
        with self._lock:
            rows = self._db.execute(
                "SELECT client_id, scopes, created_at, secret_sha256 FROM clients"
                " ORDER BY client_id"
            ).fetchall()
        return [_client(row) for row in rows]

    def delete_client(self, client_id: str) -> None:
        """Delete a client.

        Raises:
            UserNotFoundError: no such client.
        """
        with self._lock:
            deleted = self._db.execute(
                "DELETE FROM clients WHERE client_id = ?", (client_id,)
            ).rowcount
            self._db.commit()
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

    def _client_row(self, client_id: str) -> tuple[str, str, str, str] | None:
        with self._lock:
            row: tuple[str, str, str, str] | None = self._db.execute(
                "SELECT client_id, scopes, created_at, secret_sha256 FROM clients"
                " WHERE client_id = ?",
                (client_id,),
            ).fetchone()
        return row


def _user(row: tuple[str, str, str, int, str, str]) -> User:
    name, scopes, groups, disabled, created_at, _ = row
    return User(
        name=name,
        scopes=tuple(scopes.split()),
        groups=tuple(groups.split()),
        disabled=bool(disabled),
        created_at=datetime.fromisoformat(created_at),
    )


def _client(row: tuple[str, str, str, str]) -> Client:
    client_id, scopes, created_at, _ = row
    return Client(
        client_id=client_id,
        scopes=tuple(scopes.split()),
        created_at=datetime.fromisoformat(created_at),
    )
