"""A server connection: sign in with OAuth2, list and fetch web maps."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from offmaps import errors
from offmaps.errors import (
    ConnectionFailedError,
    InvalidCredentialsError,
    InvalidTokenError,
    OffmapsError,
)

__all__ = ["Credentials", "Portal", "WebMapSummary", "raise_for_problem"]

_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access token for one server, and when it expires."""

    server: str
    access_token: str
    expires_at: datetime
    scope: str

    @property
    def expired(self) -> bool:
        """Whether the token has expired (or will within a minute)."""
        return datetime.now(UTC) + timedelta(minutes=1) >= self.expires_at


@dataclass(frozen=True, slots=True)
class WebMapSummary:
    """One web map a user can see."""

    id: str
    title: str
    snippet: str | None
    owner: str
    tags: tuple[str, ...]
    public: bool
    modified: str | None

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "title": self.title,
            "snippet": self.snippet,
            "owner": self.owner,
            "tags": list(self.tags),
            "public": self.public,
            "modified": self.modified,
        }


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the domain error a problem document names, or a generic one for other errors."""
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    detail = str(body.get("detail") or body.get("error_description") or response.reason_phrase)
    name = str(body.get("title", ""))
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, OffmapsError):
        try:
            error = cls(detail)
        except TypeError:  # an error class with required context attributes: from the body
            error = cls.__new__(cls)
            Exception.__init__(error, detail)
            for key, value in body.items():
                if key not in _PROBLEM_MEMBERS and key.isidentifier():
                    setattr(error, key, value)
        raise error
    if response.status_code == 401:
        raise InvalidTokenError(f"{response.request.url}: {detail}")
    raise OffmapsError(f"{response.request.url}: HTTP {response.status_code}: {detail}")


class _DeferredTLS(httpx.BaseTransport):
    """httpx's default transport, but its TLS context (loading the CA bundle, ~30 ms of a
    command's start-up) is built at the first ``https://`` request, not for every client:
    ``http://`` requests go through a transport that never does TLS."""

    def __init__(self) -> None:
        self._transports: dict[str, httpx.HTTPTransport] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        scheme = request.url.scheme
        transport = self._transports.get(scheme)
        if transport is None:
            transport = httpx.HTTPTransport(verify=scheme == "https")
            self._transports[scheme] = transport
        return transport.handle_request(request)

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()


class Portal:
    """A connection to one offmaps server.

    Args:
        url: the server's base URL.
        credentials: a token from :meth:`login` or :func:`load_credentials`.
        transport: an httpx transport (tests pass ``httpx.ASGITransport``-like ones).
    """

    def __init__(
        self,
        url: str,
        *,
        credentials: Credentials | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise OffmapsError(f"a server URL starts with http:// or https://, not {url[:60]!r}")
        self.url = url.rstrip("/")
        self.credentials = credentials
        self._http = httpx.Client(
            base_url=self.url, timeout=_TIMEOUT, transport=transport or _DeferredTLS()
        )

    def close(self) -> None:
        """Close the connection."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _headers(self) -> dict[str, str]:
        if self.credentials is None:
            return {}
        return {"Authorization": f"Bearer {self.credentials.access_token}"}

    def _get(self, path: str) -> Any:
        return self.request("GET", path)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send a request with the user's token; the decoded JSON answer (``None`` if empty).

        Raises:
            ConnectionFailedError: the server cannot be reached, or the connection dropped.
            OffmapsError: the domain error of the server's problem document.
        """
        try:
            response = self._http.request(
                method,
                path,
                json=json,
                params=params,
                content=content,
                headers={**self._headers(), **(headers or {})},
            )
        except httpx.HTTPError as exc:
            raise ConnectionFailedError(f"{self.url}: cannot reach the server ({exc})") from None
        raise_for_problem(response)
        return response.json() if response.content else None

    def stream(self, url: str, headers: Mapping[str, str]) -> Any:
        """A streamed ``GET`` of ``url`` (a context manager giving an ``httpx.Response``),
        following redirects: a server may hand a download over to its storage's presigned URL
        (the token is not sent to another origin)."""
        return self._http.stream(
            "GET", url, headers={**self._headers(), **headers}, follow_redirects=True
        )

    def login(self, username: str, password: str, *, scope: str | None = None) -> Credentials:
        """Sign in with the OAuth2 password grant; keeps and returns the token."""
        form = {"grant_type": "password", "username": username, "password": password}
        if scope:
            form["scope"] = scope
        try:
            response = self._http.post("/oauth2/token", data=form)
        except httpx.HTTPError as exc:
            raise OffmapsError(f"{self.url}: cannot reach the server ({exc})") from None
        if response.status_code in (400, 401):
            body = _json_or_empty(response)
            reason = body.get("error_description") or body.get("error") or "refused"
            raise InvalidCredentialsError(f"sign-in refused: {reason}")
        raise_for_problem(response)
        token = response.json()
        self.credentials = Credentials(
            server=self.url,
            access_token=str(token["access_token"]),
            expires_at=datetime.now(UTC) + timedelta(seconds=int(token["expires_in"])),
            scope=str(token.get("scope", "")),
        )
        return self.credentials

    def list_maps(self) -> list[WebMapSummary]:
        """The web maps this user can see."""
        body = self._get("/api/maps")
        return [
            WebMapSummary(
                id=str(m["id"]),
                title=str(m["title"]),
                snippet=m.get("snippet"),
                owner=str(m.get("owner", "")),
                tags=tuple(m.get("tags", ())),
                public=bool(m.get("public", False)),
                modified=m.get("modified"),
            )
            for m in body["maps"]
        ]

    def get_map(self, map_id: str) -> dict[str, Any]:
        """A web map document."""
        document: dict[str, Any] = self._get(f"/api/maps/{map_id}")
        return document


def _json_or_empty(response: httpx.Response) -> Mapping[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def credentials_path() -> Path:
    """Where ``offmaps login`` keeps tokens: ``$OFFMAPS_CONFIG_DIR`` or ~/.config/offmaps."""
    base = os.environ.get("OFFMAPS_CONFIG_DIR") or Path.home() / ".config" / "offmaps"
    return Path(base) / "credentials.json"


def save_credentials(credentials: Credentials, path: Path | None = None) -> Path:
    """Keep a token for its server (file mode 0600, written atomically)."""
    path = path or credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = _read(path)
    stored[credentials.server] = {
        "access_token": credentials.access_token,
        "expires_at": credentials.expires_at.isoformat(),
        "scope": credentials.scope,
    }
    fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(stored, out, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_credentials(server: str, path: Path | None = None) -> Credentials | None:
    """The kept, unexpired token for ``server``, if any."""
    entry = _read(path or credentials_path()).get(server.rstrip("/"))
    if not isinstance(entry, dict):
        return None
    try:
        credentials = Credentials(
            server=server.rstrip("/"),
            access_token=str(entry["access_token"]),
            expires_at=datetime.fromisoformat(str(entry["expires_at"])),
            scope=str(entry.get("scope", "")),
        )
    except (KeyError, ValueError):
        return None
    return None if credentials.expired else credentials


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
