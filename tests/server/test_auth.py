"""Tokens, the OAuth2 token endpoint, scope checks and sharing rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, FastAPI
from jwt.algorithms import RSAAlgorithm
from pydantic import SecretStr

from offmaps.access import Principal, can_read, check_can_read, check_can_write
from offmaps.errors import AccessDeniedError, AuthError, InsufficientScopeError, InvalidTokenError
from offmaps.server.auth import (
    ANONYMOUS,
    SIGNING_KEY_FILE,
    TokenService,
    auth_router,
    current_principal,
    require_scopes,
)
from offmaps.server.problems import install_problem_handlers
from offmaps.settings import AuthSettings, ServerSettings
from offmaps.state.users import SQLiteUserStore, UserStore

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
EXTERNAL_ISSUER = "https://idp.example"


@dataclass
class Env:
    """A small app with the token endpoint and two protected routes."""

    app: FastAPI
    client: httpx.AsyncClient
    users: UserStore
    tokens: TokenService
    data_dir: Path

    async def token(self, user: str = "ann", **form: str) -> str:
        data = {"grant_type": "password", "username": user, "password": PASSWORD, **form}
        response = await self.client.post("/oauth2/token", data=data)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    async def edit(self, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return await self.client.get("/edit", headers=headers)


def build_app(data_dir: Path, settings: ServerSettings | None = None) -> Env:
    settings = settings or ServerSettings(data_dir=data_dir)
    users = SQLiteUserStore(data_dir / "users.sqlite", hasher=CHEAP)
    tokens = TokenService(settings, data_dir)
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(auth_router(tokens, users))
    app.state.tokens = tokens

    @app.get("/edit")
    def edit(principal: Annotated[Principal, Depends(require_scopes("features:edit"))]) -> str:
        return principal.subject

    @app.get("/whoami")
    def whoami(principal: Annotated[Principal, Depends(current_principal)]) -> dict[str, Any]:
        return {
            "sub": principal.subject,
            "scopes": sorted(principal.scopes),
            "groups": sorted(principal.groups),
            "anonymous": principal.anonymous,
        }

    users.add_user("ann", PASSWORD, scopes=("maps:read", "features:edit"), groups=("crew", "north"))
    users.add_user("viewer", PASSWORD, scopes=("maps:read",))
    users.add_user("root", PASSWORD, scopes=("admin",))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return Env(app, client, users, tokens, data_dir)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    built = build_app(tmp_path)
    async with built.client:
        yield built
    built.users.close()


def b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "offmaps",
        "sub": "ann",
        "aud": "offmaps",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "x",
        "scope": "features:edit",
        "groups": [],
    }
    base.update(overrides)
    return base


def forge(data_dir: Path, **overrides: Any) -> str:
    """A token signed with the server's own key, with some claims changed."""
    key = (data_dir / SIGNING_KEY_FILE).read_bytes()
    return jwt.encode(claims(**overrides), key, algorithm="RS256")


async def assert_invalid_token(env: Env, token: str, reason: str) -> None:
    response = await env.edit(token)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert reason in response.json()["detail"]


# --- the token endpoint ---------------------------------------------------------------------


async def test_password_grant_issues_a_bearer_token_with_all_user_scopes(env: Env) -> None:
    form = {"grant_type": "password", "username": "ann", "password": PASSWORD}
    response = await env.client.post("/oauth2/token", data=form)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "features:edit maps:read"
    who = await env.client.get(
        "/whoami", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert who.json() == {
        "sub": "ann",
        "scopes": ["features:edit", "maps:read"],
        "groups": ["crew", "north"],
        "anonymous": False,
    }


async def test_token_claims_follow_rfc_9068(env: Env) -> None:
    token = await env.token()
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    payload = jwt.decode(token, options={"verify_signature": False})
    assert {"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "scope", "groups"} <= set(payload)
    assert payload["exp"] - payload["iat"] == 3600


async def test_password_grant_grants_a_narrower_scope_when_asked(env: Env) -> None:
    response = await env.client.post(
        "/oauth2/token",
        data={
            "grant_type": "password",
            "username": "ann",
            "password": PASSWORD,
            "scope": "maps:read",
        },
    )
    assert response.json()["scope"] == "maps:read"
    assert (await env.edit(response.json()["access_token"])).status_code == 403


async def test_scope_escalation_is_invalid_scope(env: Env) -> None:
    for scope in ("maps:read admin", "root"):
        response = await env.client.post(
            "/oauth2/token",
            data={
                "grant_type": "password",
                "username": "ann",
                "password": PASSWORD,
                "scope": scope,
            },
        )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_scope"


async def test_wrong_password_and_unknown_user_are_the_same_invalid_grant(env: Env) -> None:
    wrong = await env.client.post(
        "/oauth2/token", data={"grant_type": "password", "username": "ann", "password": "nope!!!!"}
    )
    unknown = await env.client.post(
        "/oauth2/token", data={"grant_type": "password", "username": "bob", "password": PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 400
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"] == "invalid_grant"
    assert wrong.headers["cache-control"] == "no-store"


async def test_disabled_user_gets_invalid_grant(env: Env) -> None:
    env.users.set_disabled("ann")
    response = await env.client.post(
        "/oauth2/token", data={"grant_type": "password", "username": "ann", "password": PASSWORD}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


async def test_client_credentials_grant_with_form_or_basic(env: Env) -> None:
    _, secret = env.users.add_client("etl", scopes=("features:edit",))
    by_form = await env.client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": "etl", "client_secret": secret},
    )
    by_basic = await env.client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=("etl", secret)
    )
    for response in (by_form, by_basic):
        assert response.status_code == 200, response.text
        assert response.json()["scope"] == "features:edit"
        edit = await env.edit(response.json()["access_token"])
        assert edit.json() == "client:etl"


async def test_wrong_client_secret_is_401_invalid_client(env: Env) -> None:
    env.users.add_client("etl", scopes=())
    response = await env.client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=("etl", "guess")
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("grant_type=authorization_code&code=x", "unsupported_grant_type"),
        ("username=ann", "invalid_request"),
        ("grant_type=password&username=ann", "invalid_request"),
        ("grant_type=password&grant_type=client_credentials", "invalid_request"),
        ("grant_type=client_credentials", "invalid_request"),
        ("grant_type=password&username=" + "a" * 20_000, "invalid_request"),
        ("&".join(f"f{i}=1" for i in range(50)), "invalid_request"),
        ("grant_type=password&username=%ff", "invalid_request"),
    ],
)
async def test_malformed_token_requests_get_rfc_6749_errors(
    env: Env, content: str, error: str
) -> None:
    response = await env.client.post(
        "/oauth2/token",
        content=content,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert response.json()["error_description"]


async def test_token_request_must_be_a_form(env: Env) -> None:
    response = await env.client.post(
        "/oauth2/token", json={"grant_type": "password", "username": "ann", "password": PASSWORD}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# --- verifying tokens -----------------------------------------------------------------------


async def test_missing_header_on_protected_route_is_401_with_challenge(env: Env) -> None:
    response = await env.edit(None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "log in" in response.json()["detail"]


async def test_no_header_is_anonymous_with_the_configured_scopes(env: Env) -> None:
    assert (await env.client.get("/whoami")).json() == {
        "sub": "anonymous",
        "scopes": ["maps:read"],
        "groups": [],
        "anonymous": True,
    }


async def test_non_bearer_authorization_is_401(env: Env) -> None:
    response = await env.client.get("/whoami", headers={"Authorization": "Basic YTpi"})
    assert response.status_code == 401
    assert "Bearer" in response.json()["detail"]


async def test_insufficient_scope_is_a_403_problem(env: Env) -> None:
    response = await env.edit(await env.token("viewer"))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["required_scopes"] == ["features:edit"]
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_admin_passes_every_scope_check(env: Env) -> None:
    assert (await env.edit(await env.token("root"))).status_code == 200


async def test_expired_token_is_refused(env: Env) -> None:
    old = int(time.time()) - 7200
    token = forge(env.data_dir, iat=old, nbf=old, exp=old + 60)
    await assert_invalid_token(env, token, "expired")


async def test_token_not_valid_yet_is_refused(env: Env) -> None:
    later = int(time.time()) + 3600
    await assert_invalid_token(env, forge(env.data_dir, nbf=later), "not valid yet")


async def test_forged_token_with_the_real_key_is_accepted(env: Env) -> None:
    assert (await env.edit(forge(env.data_dir))).status_code == 200


async def test_tampered_token_is_refused(env: Env) -> None:
    header, _, signature = (await env.token("viewer")).split(".")
    payload = b64(claims(sub="viewer", scope="admin"))
    await assert_invalid_token(env, f"{header}.{payload}.{signature}", "signature")


async def test_unsigned_alg_none_token_is_refused(env: Env) -> None:
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims(scope='admin'))}."
    await assert_invalid_token(env, token, "alg none")


async def test_hs256_token_signed_with_the_public_key_is_refused(env: Env) -> None:
    public = RSAAlgorithm.from_jwk(json.dumps(env.tokens.jwks()["keys"][0]))
    assert isinstance(public, rsa.RSAPublicKey)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims(scope='admin'))}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    await assert_invalid_token(env, f"{signing_input}.{b64(signature)}", "algorithm")


async def test_wrong_audience_or_issuer_is_refused(env: Env) -> None:
    await assert_invalid_token(env, forge(env.data_dir, aud="someone-else"), "audience")
    await assert_invalid_token(env, forge(env.data_dir, iss="https://evil.example"), "issuer")


async def test_missing_claims_are_refused(env: Env) -> None:
    payload = claims()
    del payload["jti"]
    token = jwt.encode(payload, (env.data_dir / SIGNING_KEY_FILE).read_bytes(), algorithm="RS256")
    await assert_invalid_token(env, token, "'jti'")


async def test_token_from_another_key_is_refused(env: Env) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await assert_invalid_token(env, jwt.encode(claims(), other, algorithm="RS256"), "signature")


async def test_oversized_and_garbage_tokens_are_refused(env: Env) -> None:
    await assert_invalid_token(env, "a" * 9000, "over 8192 bytes")
    await assert_invalid_token(env, "not.a.token", "malformed")
    header = {b"Authorization": "Bearer ünïcode".encode()}
    response = await env.client.get("/edit", headers=header)
    assert response.status_code == 401
    assert "malformed" in response.json()["detail"]


# --- keys -----------------------------------------------------------------------------------


async def test_jwks_endpoint_lets_pyjwt_verify_a_token_independently(env: Env) -> None:
    token = await env.token()
    jwks = (await env.client.get("/.well-known/jwks.json")).json()
    (key,) = jwks["keys"]
    assert key["kid"] == jwt.get_unverified_header(token)["kid"]
    assert {"n", "e", "kty", "alg", "use"} <= set(key)
    assert "d" not in key
    verified = jwt.decode(
        token,
        jwt.PyJWKSet.from_dict(jwks)[key["kid"]].key,
        algorithms=["RS256"],
        audience="offmaps",
    )
    assert verified["sub"] == "ann"


def test_kid_is_the_rfc_7638_thumbprint(tmp_path: Path) -> None:
    tokens = TokenService(ServerSettings(data_dir=tmp_path))
    (jwk,) = tokens.jwks()["keys"]
    members = json.dumps(
        {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True
    )
    expected = b64(hashlib.sha256(members.encode()).digest())
    assert jwk["kid"] == expected


def test_signing_key_is_private_and_kept_across_restarts(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path)
    first = TokenService(settings)
    mode = (tmp_path / SIGNING_KEY_FILE).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    token = first.issue("ann", ["maps:read"]).access_token
    assert TokenService(settings).verify(token).subject == "ann"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_unreadable_signing_key_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / SIGNING_KEY_FILE).write_text("not a key")
    with pytest.raises(AuthError, match="cannot read the token signing key"):
        TokenService(ServerSettings(data_dir=tmp_path))


def test_shared_secret_gives_hs256_tokens_and_no_published_keys(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path, signing_key=SecretStr("s" * 40))
    tokens = TokenService(settings)
    token = tokens.issue("ann", ["maps:read"], ["crew"]).access_token
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert tokens.jwks() == {"keys": []}
    assert tokens.verify(token).groups == frozenset({"crew"})
    assert not (tmp_path / SIGNING_KEY_FILE).exists()
    with pytest.raises(InvalidTokenError, match="signature"):
        TokenService(ServerSettings(data_dir=tmp_path, signing_key=SecretStr("t" * 40))).verify(
            token
        )


def test_short_shared_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="at least 32 bytes"):
        TokenService(ServerSettings(data_dir=tmp_path, signing_key=SecretStr("short")))


def test_admin_anonymous_scope_is_refused(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path, auth=AuthSettings(anonymous_scopes=("admin",)))
    with pytest.raises(AuthError, match="admin"):
        TokenService(settings)


# --- an external identity provider ---------------------------------------------------------


@dataclass
class IdP:
    """A local identity provider: a key and the URL of its JWK set."""

    key: rsa.RSAPrivateKey
    jwks_url: str

    def token(self, **overrides: Any) -> str:
        payload = claims(iss=EXTERNAL_ISSUER, sub="idp-user", **overrides)
        del payload["scope"]
        payload.update(overrides)
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": "idp-1"})


@pytest.fixture
def idp() -> Iterator[IdP]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    body = json.dumps({"keys": [{**jwk, "kid": "idp-1", "alg": "RS256", "use": "sig"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield IdP(key, f"http://127.0.0.1:{server.server_address[1]}/jwks.json")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def external_settings(data_dir: Path, jwks_url: str) -> ServerSettings:
    auth = AuthSettings(jwks_url=jwks_url, external_issuer=EXTERNAL_ISSUER)
    return ServerSettings(data_dir=data_dir, auth=auth)


def test_external_idp_tokens_are_checked_against_its_jwks(tmp_path: Path, idp: IdP) -> None:
    tokens = TokenService(external_settings(tmp_path, idp.jwks_url))
    principal = tokens.verify(idp.token(scp=["features:edit", "openid"], groups=["crew"]))
    assert principal == Principal("idp-user", frozenset({"features:edit"}), frozenset({"crew"}))
    assert tokens.verify(idp.token(scope="maps:read")).scopes == frozenset({"maps:read"})


def test_external_idp_tokens_must_be_signed_by_its_keys(tmp_path: Path, idp: IdP) -> None:
    tokens = TokenService(external_settings(tmp_path, idp.jwks_url))
    other = IdP(rsa.generate_private_key(public_exponent=65537, key_size=2048), idp.jwks_url)
    with pytest.raises(InvalidTokenError, match="signature"):
        tokens.verify(other.token())
    with pytest.raises(InvalidTokenError, match="audience"):
        tokens.verify(idp.token(aud="elsewhere"))


async def test_unreachable_external_jwks_is_401_not_500(tmp_path: Path, idp: IdP) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as probe:
        closed_port = probe.server_address[1]
    env = build_app(tmp_path, external_settings(tmp_path, f"http://127.0.0.1:{closed_port}/jwks"))
    async with env.client:
        await assert_invalid_token(env, idp.token(scope="features:edit"), "signing key")
    env.users.close()


async def test_local_tokens_still_work_beside_an_external_idp(tmp_path: Path, idp: IdP) -> None:
    env = build_app(tmp_path, external_settings(tmp_path, idp.jwks_url))
    async with env.client:
        assert (await env.edit(await env.token())).status_code == 200
        assert (await env.edit(idp.token(scope="features:edit"))).status_code == 200
    env.users.close()


# --- sharing --------------------------------------------------------------------------------

ANN = Principal("ann", frozenset({"maps:read", "maps:write"}), frozenset({"crew"}))
ADMIN = Principal("root", frozenset({"admin"}))
NO_READ = Principal("ann", frozenset({"features:edit"}), frozenset({"crew"}))


@pytest.mark.parametrize(
    ("principal", "owner", "groups", "public", "expected"),
    [
        (ANN, "ann", (), False, True),
        (ANN, "bob", ("crew",), False, True),
        (ANN, "bob", ("other",), False, False),
        (ANN, "bob", (), True, True),
        (ANONYMOUS, "bob", (), True, True),
        (ANONYMOUS, "anonymous", ("crew",), False, False),
        (ADMIN, "bob", (), False, True),
        (NO_READ, "ann", ("crew",), True, False),
    ],
)
def test_can_read_follows_sharing(
    principal: Principal, owner: str, groups: tuple[str, ...], public: bool, expected: bool
) -> None:
    assert can_read(principal, owner, groups, public) is expected


def test_check_can_read_asks_anonymous_callers_to_log_in() -> None:
    with pytest.raises(InvalidTokenError, match="log in"):
        check_can_read(ANONYMOUS, "bob", (), False)
    with pytest.raises(AccessDeniedError):
        check_can_read(ANN, "bob", (), False)
    check_can_read(ANN, "bob", ("crew",), False)


def test_writing_needs_maps_write_and_ownership() -> None:
    check_can_write(ANN, "ann")
    check_can_write(ANN, None)
    check_can_write(ADMIN, "bob")
    with pytest.raises(AccessDeniedError):
        check_can_write(ANN, "bob")
    with pytest.raises(InsufficientScopeError) as missing:
        check_can_write(NO_READ, "ann")
    assert missing.value.required == ("maps:write",)
    with pytest.raises(InvalidTokenError):
        check_can_write(ANONYMOUS, None)
