"""Access tokens: JWTs issued and verified by the server, or by an external identity provider.

The server issues its own JWT access tokens (RFC 9068 style). By default they are signed RS256
with a key generated into the data folder on first start and published at
``/.well-known/jwks.json``; with ``OFFMAPS_SIGNING_KEY`` set they are HS256 with that secret
instead. Tokens of an external identity provider are accepted too when ``OFFMAPS_AUTH_JWKS_URL``
and ``OFFMAPS_AUTH_EXTERNAL_ISSUER`` are set.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from offmaps.access import (
    Principal,
    Scope,
    anonymous_principal,
    check_scopes,
)
from offmaps.errors import (
    AuthError,
    InvalidTokenError,
)
from offmaps.settings import AuthSettings, ServerSettings

__all__ = [
    "ANONYMOUS",
    "CLIENT_SUBJECT_PREFIX",
    "EXTERNAL_ALGORITHMS",
    "LEEWAY_S",
    "MAX_TOKEN_BYTES",
    "SIGNING_KEY_FILE",
    "IssuedToken",
    "TokenService",
]

SIGNING_KEY_FILE = "signing-key.pem"
MAX_TOKEN_BYTES = 8 * 1024
LEEWAY_S = 30
EXTERNAL_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
_LOCAL_CLAIMS = ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "scope"]
_EXTERNAL_CLAIMS = ["iss", "sub", "aud", "exp"]
_MIN_HMAC_KEY_BYTES = 32
CLIENT_SUBJECT_PREFIX = "client:"
"""How the subjects of client-credentials tokens start."""


ANONYMOUS = anonymous_principal(AuthSettings.model_fields["anonymous_scopes"].default)
"""The caller without a token, with the default anonymous scopes (``TokenService.anonymous`` has
the configured ones)."""


@dataclass(frozen=True)
class IssuedToken:
    """An access token as the token endpoint returns it.

    Attributes:
        access_token: the JWT.
        expires_in: seconds until it expires.
        scope: its scopes, space-separated.
        token_type: always ``Bearer``.
    """

    access_token: str
    expires_in: int
    scope: str
    token_type: str = "Bearer"  # noqa: S105 (a token type, not a secret)


class TokenService:
    """Issues and verifies access tokens.

    Args:
        settings: the server settings (``signing_key`` and ``auth``).
        data_dir: where the RS256 key lives (default ``settings.data_dir``).
        jwks_client: the external identity provider's key set client (default: one built from
            ``settings.auth.jwks_url``, caching keys).

    Raises:
        AuthError: an unusable signing key or key file, or unknown anonymous scopes.
    """

    def __init__(
        self,
        settings: ServerSettings,
        data_dir: Path | None = None,
        *,
        jwks_client: jwt.PyJWKClient | None = None,
    ) -> None:
        auth = settings.auth
        self.issuer = auth.issuer or settings.public_url or "offmaps"
        self.audience = auth.audience
        self.lifetime_s = auth.token_lifetime_s
        try:
            anonymous_scopes = check_scopes(auth.anonymous_scopes)
        except AuthError as exc:
            raise AuthError(f"anonymous_scopes: {exc}") from None
        if Scope.ADMIN in anonymous_scopes:
            raise AuthError("anonymous_scopes may not include admin")
        self.anonymous = anonymous_principal(anonymous_scopes)
        self.external_issuer = auth.external_issuer if auth.jwks_url else None
        if auth.jwks_url and not auth.external_issuer:
            raise AuthError("jwks_url needs external_issuer: the iss of the provider's tokens")
        if self.external_issuer == self.issuer:
            raise AuthError("external_issuer must differ from this server's issuer")
        self._jwks_client = jwks_client
        if self._jwks_client is None and auth.jwks_url:
            self._jwks_client = jwt.PyJWKClient(
                auth.jwks_url, cache_keys=True, lifespan=300, timeout=5
            )
        self.kid: str | None
        self._signing_key: Any
        self._verify_key: Any
        if settings.signing_key is not None:
            secret = settings.signing_key.get_secret_value().encode("utf-8")
            if len(secret) < _MIN_HMAC_KEY_BYTES:
                raise AuthError(f"signing_key must be at least {_MIN_HMAC_KEY_BYTES} bytes long")
            self.algorithm = "HS256"
            self.kid = None
            self._signing_key = self._verify_key = secret
            self._public_jwk: dict[str, str] | None = None
        else:
            private = _load_or_create_key((data_dir or settings.data_dir) / SIGNING_KEY_FILE)
            self.algorithm = "RS256"
            self._signing_key = private
            self._verify_key = private.public_key()
            public = RSAAlgorithm.to_jwk(self._verify_key, as_dict=True)
            self.kid = _thumbprint(str(public["e"]), str(public["n"]))
            self._public_jwk = {
                "kty": "RSA",
                "n": str(public["n"]),
                "e": str(public["e"]),
                "kid": self.kid,
                "alg": "RS256",
                "use": "sig",
            }

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public keys of issued tokens as a JWK set (no keys with HS256)."""
        return {"keys": [dict(self._public_jwk)] if self._public_jwk else []}

    def issue(self, subject: str, scopes: Iterable[str], groups: Iterable[str] = ()) -> IssuedToken:
        """A new access token for ``subject`` with ``scopes`` and ``groups``."""
        now = int(time.time())
        scope = " ".join(sorted(set(scopes)))
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime_s,
            "jti": secrets.token_urlsafe(16),
            "scope": scope,
            "groups": sorted(set(groups)),
        }
        headers: dict[str, Any] = {"typ": "at+jwt"}
        if self.kid:
            headers["kid"] = self.kid
        token = jwt.encode(claims, self._signing_key, algorithm=self.algorithm, headers=headers)
        return IssuedToken(access_token=token, expires_in=self.lifetime_s, scope=scope)

    def verify(self, token: str) -> Principal:
        """The principal a bearer token stands for.

        Raises:
            InvalidTokenError: a malformed, oversized, expired, not yet valid, wrongly signed or
                addressed token, or one whose keys cannot be fetched; the message says why.
        """
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidTokenError(f"the token is over {MAX_TOKEN_BYTES} bytes")
        if not token.isascii():
            raise InvalidTokenError("malformed token: not ASCII")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidTokenError(f"malformed token: {_reason(exc)}") from None
        if str(header.get("alg", "")).lower() == "none":
            raise InvalidTokenError("unsigned tokens (alg none) are not accepted")
        if self.external_issuer is not None and unverified.get("iss") == self.external_issuer:
            return self._verify_external(token)
        return self._verify_local(token, header)

    def _verify_local(self, token: str, header: dict[str, Any]) -> Principal:
        if self.kid is not None and header.get("kid", self.kid) != self.kid:
            raise InvalidTokenError("the token is signed by an unknown key")
        claims = self._decode(token, self._verify_key, [self.algorithm], self.issuer, _LOCAL_CLAIMS)
        scope = claims.get("scope")
        if not isinstance(scope, str):
            raise InvalidTokenError("the scope claim must be a string")
        return Principal(
            subject=str(claims["sub"]),
            scopes=frozenset(scope.split()),
            groups=_groups(claims),
        )

    def _verify_external(self, token: str) -> Principal:
        if self._jwks_client is None or self.external_issuer is None:
            raise InvalidTokenError("no external identity provider is configured")
        try:
            key = self._jwks_client.get_signing_key_from_jwt(token)
        except (jwt.PyJWKClientError, jwt.PyJWKError, jwt.DecodeError) as exc:
            raise InvalidTokenError(
                f"cannot get the signing key of {self.external_issuer}: {_reason(exc)}"
            ) from None
        claims = self._decode(
            token, key.key, list(EXTERNAL_ALGORITHMS), self.external_issuer, _EXTERNAL_CLAIMS
        )
        raw = claims.get("scope", claims.get("scp", ""))
        if isinstance(raw, str):
            scopes = raw.split()
        elif isinstance(raw, list) and all(isinstance(s, str) for s in raw):
            scopes = raw
        else:
            raise InvalidTokenError("the scope (scp) claim must be a string or a list of strings")
        known = {s.value for s in Scope}
        return Principal(
            subject=str(claims["sub"]),
            scopes=frozenset(s for s in scopes if s in known),
            groups=_groups(claims),
        )

    def _decode(
        self, token: str, key: Any, algorithms: list[str], issuer: str, required: list[str]
    ) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=issuer,
                leeway=LEEWAY_S,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidTokenError("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidTokenError("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise InvalidTokenError(f"the token is not for audience {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise InvalidTokenError("the token's issuer is not trusted") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidTokenError("the token's signing algorithm is not accepted") from None
        except jwt.InvalidSignatureError:
            raise InvalidTokenError("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidTokenError(f"the token has no {exc.claim!r} claim") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidTokenError(f"invalid token: {_reason(exc)}") from None
        if claims.get("iss") != issuer:  # exact, whatever PyJWT does with containers
            raise InvalidTokenError("the token's issuer is not trusted")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise InvalidTokenError("the token's sub claim must be a non-empty string")
        return claims


def _groups(claims: dict[str, Any]) -> frozenset[str]:
    groups = claims.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise InvalidTokenError("the groups claim must be a list of strings")
    return frozenset(groups)


def _reason(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _thumbprint(e: str, n: str) -> str:
    """The RFC 7638 thumbprint of an RSA public key, base64url without padding."""
    canonical = json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    """The RSA key in ``path``, generated first if missing.

    The key is written to a private temporary file (mode 0600) and linked into place, so that
    readers never see half a key and two processes starting together end up with the same one.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.partial")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use its key
                os.link(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise AuthError(f"cannot read the token signing key {path}: {_reason(exc)}") from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise AuthError(f"the token signing key {path} is not an RSA key")
    return loaded
