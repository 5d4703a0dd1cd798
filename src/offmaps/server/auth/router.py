"""The OAuth2 token endpoint (password and client-credentials grants, RFC 6749) and the JWKS."""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from offmaps.access import (
    Scope,
    implied_scopes,
)
from offmaps.errors import (
    InvalidCredentialsError,
)
from offmaps.server.auth.gate import GatedRoute
from offmaps.server.auth.tokens import CLIENT_SUBJECT_PREFIX, IssuedToken, TokenService
from offmaps.state.users import UserStore

__all__ = ["MAX_FORM_BYTES", "auth_router"]

MAX_FORM_BYTES = 16 * 1024


class _OAuthError(Exception):
    """An RFC 6749 section 5.2 error response."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

_TOKEN_FORM = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "required": ["grant_type"],
                "properties": {
                    "grant_type": {"type": "string", "enum": ["password", "client_credentials"]},
                    "username": {"type": "string"},
                    "password": {"type": "string", "format": "password"},
                    "scope": {"type": "string", "description": "space-separated scopes"},
                    "client_id": {"type": "string"},
                    "client_secret": {"type": "string", "format": "password"},
                },
            }
        }
    },
}

_OAUTH_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
}
_TOKEN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "An access token",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["access_token", "token_type", "expires_in", "scope"],
                    "properties": {
                        "access_token": {"type": "string"},
                        "token_type": {"type": "string"},
                        "expires_in": {"type": "integer"},
                        "scope": {"type": "string"},
                    },
                }
            }
        },
    },
    400: {
        "description": "An RFC 6749 error",
        "content": {"application/json": {"schema": _OAUTH_ERROR_SCHEMA}},
    },
    401: {
        "description": "The client could not be authenticated",
        "content": {"application/json": {"schema": _OAUTH_ERROR_SCHEMA}},
    },
}


async def _read_form(request: Request) -> dict[str, str]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise _OAuthError("invalid_request", "send the form as application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_FORM_BYTES:
            raise _OAuthError("invalid_request", f"the form is over {MAX_FORM_BYTES} bytes")
    try:
        pairs = urllib.parse.parse_qsl(
            bytes(body).decode("ascii"),
            keep_blank_values=True,
            max_num_fields=20,
            encoding="utf-8",
            errors="strict",
        )
    except ValueError as exc:  # also UnicodeDecodeError
        raise _OAuthError(
            "invalid_request",
            f"malformed form: {' '.join(str(exc).split())[:200] or type(exc).__name__}",
        ) from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise _OAuthError("invalid_request", f"parameter {name[:40]!r} given twice")
        if value:  # parameters without a value count as omitted (RFC 6749 section 3.1)
            form[name] = value
    return form


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _OAuthError("invalid_request", "malformed Basic credentials") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise _OAuthError("invalid_request", "malformed Basic credentials")
    return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)


def _grant_scopes(requested: str | None, allowed: Iterable[str]) -> tuple[str, ...]:
    allowed_set = set(allowed)
    if requested is None:
        return tuple(sorted(allowed_set))
    allowed_set = set(implied_scopes(allowed_set))  # features:edit may ask for offline:sync
    wanted = set(requested.split())
    known = {s.value for s in Scope}
    unknown = wanted - known
    if unknown:
        raise _OAuthError("invalid_scope", f"unknown scope {sorted(unknown)[0][:40]!r}")
    extra = wanted - allowed_set
    if extra:
        raise _OAuthError("invalid_scope", f"scope {sorted(extra)[0]!r} is not granted to you")
    return tuple(sorted(wanted))


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name)
    if value is None:
        raise _OAuthError("invalid_request", f"{name} is required")
    return value


async def _password_grant(
    form: dict[str, str], tokens: TokenService, users: UserStore
) -> IssuedToken:
    username = _required(form, "username")
    password = _required(form, "password")
    try:
        user = await run_in_threadpool(users.verify_password, username, password)
    except InvalidCredentialsError as exc:
        raise _OAuthError("invalid_grant", str(exc)) from None
    scopes = _grant_scopes(form.get("scope"), user.scopes)
    return tokens.issue(user.name, scopes, user.groups)


async def _client_credentials_grant(
    request: Request, form: dict[str, str], tokens: TokenService, users: UserStore
) -> IssuedToken:
    basic = _basic_credentials(request)
    in_form = "client_id" in form or "client_secret" in form
    if basic is not None and in_form:
        raise _OAuthError("invalid_request", "authenticate the client one way, not two")
    if basic is None:
        basic = _required(form, "client_id"), _required(form, "client_secret")
    client_id, secret = basic
    try:
        client = await run_in_threadpool(users.verify_client, client_id, secret)
    except InvalidCredentialsError as exc:
        raise _OAuthError("invalid_client", str(exc), status=401) from None
    scopes = _grant_scopes(form.get("scope"), client.scopes)
    return tokens.issue(CLIENT_SUBJECT_PREFIX + client.client_id, scopes)


def auth_router(tokens: TokenService, users: UserStore) -> APIRouter:
    """``POST /oauth2/token`` (password and client-credentials grants) and the JWK set."""
    router = APIRouter(tags=["auth"], route_class=GatedRoute)

    @router.post(
        "/oauth2/token",
        summary="Get an access token (OAuth2 password or client-credentials grant)",
        openapi_extra={"requestBody": _TOKEN_FORM},
        responses=_TOKEN_RESPONSES,
    )
    async def token(request: Request) -> JSONResponse:
        try:
            form = await _read_form(request)
            grant = _required(form, "grant_type")
            if grant == "password":
                issued = await _password_grant(form, tokens, users)
            elif grant == "client_credentials":
                issued = await _client_credentials_grant(request, form, tokens, users)
            else:
                raise _OAuthError("unsupported_grant_type", f"unsupported grant {grant[:40]!r}")
        except _OAuthError as exc:
            headers = dict(_NO_STORE)
            if exc.status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="offmaps"'
            return JSONResponse(
                {"error": exc.error, "error_description": exc.description},
                status_code=exc.status,
                headers=headers,
            )
        return JSONResponse(
            {
                "access_token": issued.access_token,
                "token_type": issued.token_type,
                "expires_in": issued.expires_in,
                "scope": issued.scope,
            },
            headers=_NO_STORE,
        )

    @router.get("/.well-known/jwks.json", summary="The public keys of this server's tokens")
    def jwks() -> JSONResponse:
        return JSONResponse(tokens.jwks(), headers={"Cache-Control": "public, max-age=300"})

    return router
