"""Presigned URLs for stores without a signing service of their own: HMAC-SHA256 tokens.

An S3-compatible store presigns with S3's own signatures and S3 checks them. A local folder (or
memory) store has no server of its own, so its URLs carry a token that the offmaps server checks
before it serves or accepts the bytes: ``<base_url>/<key>?token=<payload>.<signature>``, where the
payload names the method, the expiry (Unix seconds) and the key, and the signature is
HMAC-SHA256 of it under the store's secret. Whoever holds a URL can use it until it expires, for
that method and that key only; nothing else can be derived from it without the secret.

The HTTP route that serves these URLs comes later: it calls :meth:`URLSigner.verify` (through the
store's ``verify_presigned``) with the request's URL and method, and then reads or writes the key
it returns.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPMethod
from urllib.parse import parse_qs, quote, urlsplit

from offmaps.errors import InvalidPresignedURLError, PresignedURLExpiredError, StorageError
from offmaps.storage.base import check_blob_key
from offmaps.storage.keys import check_object_key

__all__ = ["MAX_PRESIGN_EXPIRY", "PresignedURL", "SignedBlobURLs", "URLSigner"]

MAX_PRESIGN_EXPIRY = timedelta(days=7)
"""The longest a presigned URL may stay valid (S3's limit too)."""

_METHODS = (HTTPMethod.GET, HTTPMethod.PUT)
_CONTEXT = b"offmaps presigned url v1\n"
_MIN_SECRET_BYTES = 16
_MAX_TOKEN_CHARS = 4096
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class PresignedURL:
    """A URL that lets its holder GET or PUT one object until it expires.

    Attributes:
        url: the URL to send the request to.
        method: the one HTTP method it allows.
        key: the object it grants access to, as the store that presigned it names it.
        expires_at: when it stops working (UTC).
        headers: headers the request must carry as they are, because they are signed too (an
            S3 PUT bound to the SHA-256 of its bytes: ``x-amz-checksum-sha256``); usually none.
    """

    url: str
    method: HTTPMethod
    key: str
    expires_at: datetime
    headers: Mapping[str, str] = field(default_factory=dict)


class URLSigner:
    """Signs and checks presigned URLs with HMAC-SHA256.

    Args:
        secret: the signing key, at least 16 bytes; ``None`` draws a random one, so that URLs
            verify only with this signer (pass the same secret, from settings, to every process
            that must accept them, and keep it as secret as a password).
        base_url: what URLs start with: the route that will serve them, absolute
            (``https://maps.example.org/storage``) or relative to the server (``/storage``).
        clock: the current time in Unix seconds (tests pass their own).
    """

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        base_url: str = "/storage",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if secret is None:
            secret = os.urandom(32)
        if not isinstance(secret, bytes) or len(secret) < _MIN_SECRET_BYTES:
            raise ValueError(f"a signing secret is at least {_MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self.base_url = base_url.rstrip("/")
        self._base_path = urlsplit(self.base_url).path
        self._clock = clock

    def __repr__(self) -> str:
        return f"URLSigner(base_url={self.base_url!r})"  # never the secret

    def sign(self, key: str, method: HTTPMethod | str, expires: timedelta) -> PresignedURL:
        """A URL allowing ``method`` on ``key`` for ``expires`` from now.

        Raises:
            InvalidObjectKeyError: for a malformed key.
            ValueError: for a method other than GET and PUT, or an expiry that is not between one
                second and :data:`MAX_PRESIGN_EXPIRY`.
        """
        key = check_object_key(key)
        verb = _method(method)
        if not isinstance(expires, timedelta) or not (
            timedelta(seconds=1) <= expires <= MAX_PRESIGN_EXPIRY
        ):
            raise ValueError(
                f"a presigned URL expires between 1 second and {MAX_PRESIGN_EXPIRY}, "
                f"not {expires!r}"
            )
        deadline = math.ceil(self._clock() + expires.total_seconds())
        payload = f"{verb} {deadline} {key}".encode()
        token = f"{_encode(payload)}.{_encode(self._mac(payload))}"
        url = f"{self.base_url}/{quote(key, safe='/')}?token={token}"
        return PresignedURL(url, verb, key, datetime.fromtimestamp(deadline, UTC))

    def verify(self, token_or_url: str, method: HTTPMethod | str) -> str:
        """The key a presigned URL (or its bare token) allows ``method`` on, now.

        Given a whole URL, its path must also name the key the token was signed for.

        Raises:
            InvalidPresignedURLError: when it is malformed, tampered with, signed with another
                secret, for another method, or its path names another key.
            PresignedURLExpiredError: when it was genuine but has expired.
        """
        verb = _method(method)
        if not isinstance(token_or_url, str) or len(token_or_url) > _MAX_TOKEN_CHARS:
            raise InvalidPresignedURLError("not a presigned URL or token")
        url = token_or_url if "?" in token_or_url or "/" in token_or_url else None
        token = token_or_url if url is None else _token_of(url)
        payload_part, _, signature_part = token.partition(".")
        payload = _decode(payload_part)
        if not hmac.compare_digest(_decode(signature_part), self._mac(payload)):
            raise InvalidPresignedURLError("the presigned URL's signature does not match")
        try:
            signed_method, deadline_text, key = payload.decode().split(" ", 2)
            deadline = int(deadline_text)
        except ValueError:  # UnicodeDecodeError too; only possible with the secret, all the same
            raise InvalidPresignedURLError("the presigned URL's token is malformed") from None
        if signed_method != verb:
            raise InvalidPresignedURLError(f"the presigned URL allows {signed_method}, not {verb}")
        if url is not None and urlsplit(url).path != f"{self._base_path}/{quote(key, safe='/')}":
            raise InvalidPresignedURLError("the presigned URL's path names another key")
        if self._clock() >= deadline:
            expired_at = datetime.fromtimestamp(deadline, UTC)
            raise PresignedURLExpiredError(
                f"the presigned URL expired at {expired_at.isoformat()}", expired_at=expired_at
            )
        return key

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, _CONTEXT + payload, hashlib.sha256).digest()


class SignedBlobURLs:
    """Presigned URLs of a blob store kept by this server (a folder, a SQLite file): HMAC
    tokens for ``<signer's base URL>/<url_prefix>/<sha256>``, which the offmaps server's
    ``/storage`` route checks before it serves the blob or stores the bytes.

    A store mixing this in sets ``signer`` (None: it hands out no URLs) and ``url_prefix``.
    """

    signer: URLSigner | None
    url_prefix: str

    def presign_get(self, sha256: str, expires: timedelta) -> PresignedURL:
        """A URL that lets its holder GET the blob until ``expires`` from now (HMAC token)."""
        return self._signer().sign(self.presigned_key(sha256), HTTPMethod.GET, expires)

    def presign_put(self, sha256: str, expires: timedelta) -> PresignedURL:
        """A URL that lets its holder PUT the blob's bytes until ``expires`` from now; the route
        serving it stores them only when they hash to ``sha256``."""
        return self._signer().sign(self.presigned_key(sha256), HTTPMethod.PUT, expires)

    def presigned_key(self, sha256: str) -> str:
        """The key presigned URLs name a blob by: ``<url_prefix>/<sha256>``."""
        return f"{self.url_prefix}/{check_blob_key(sha256)}"

    def _signer(self) -> URLSigner:
        if self.signer is None:
            raise StorageError(f"{self!r} hands out no presigned URLs: it has no signer")
        return self.signer


def _method(method: HTTPMethod | str) -> HTTPMethod:
    if isinstance(method, str) and method.upper() in _METHODS:
        return HTTPMethod(method.upper())
    raise ValueError(f"presigned URLs are for GET or PUT, not {method!r}")


def _token_of(url: str) -> str:
    tokens = parse_qs(urlsplit(url).query).get("token", [])
    if len(tokens) != 1:
        raise InvalidPresignedURLError("the URL carries no presigned token")
    return tokens[0]


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    # the decoder would skip characters outside the alphabet: refuse them instead
    if not _BASE64URL.fullmatch(text):
        raise InvalidPresignedURLError("the presigned URL's token is malformed")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidPresignedURLError("the presigned URL's token is malformed") from None
