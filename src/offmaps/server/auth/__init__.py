"""Tokens, the OAuth2 token endpoint, and the caller of a request.

The server issues its own JWT access tokens (RFC 9068 style) from ``POST /oauth2/token`` with the
password and client-credentials grants (RFC 6749). By default they are signed RS256 with a key
generated into the data folder on first start and published at ``/.well-known/jwks.json``; with
``OFFMAPS_SIGNING_KEY`` set they are HS256 with that secret instead. Tokens of an external
identity provider are accepted too when ``OFFMAPS_AUTH_JWKS_URL`` and
``OFFMAPS_AUTH_EXTERNAL_ISSUER`` are set.

Routes get the caller as a :class:`offmaps.access.Principal` from :func:`current_principal`
(anonymous without a token) and declare the scopes they need with :func:`require_scopes` in
their ``dependencies``; on routers of :class:`GatedRoute`, the :class:`WriteGate` checks those of
a write request before its body is read, after counting it against the write rate limit.
Sharing rules are :mod:`offmaps.access`'s.
"""

from offmaps.server.auth.dependencies import (
    PRINCIPAL_STATE,
    WRITE_METHODS,
    ScopeRequirement,
    current_principal,
    principal_of,
    require_scopes,
)
from offmaps.server.auth.gate import GatedRoute, WriteGate, requirements_of
from offmaps.server.auth.router import MAX_FORM_BYTES, auth_router
from offmaps.server.auth.tokens import (
    ANONYMOUS,
    EXTERNAL_ALGORITHMS,
    LEEWAY_S,
    MAX_TOKEN_BYTES,
    SIGNING_KEY_FILE,
    IssuedToken,
    TokenService,
)

__all__ = [
    "ANONYMOUS",
    "EXTERNAL_ALGORITHMS",
    "GatedRoute",
    "LEEWAY_S",
    "MAX_FORM_BYTES",
    "MAX_TOKEN_BYTES",
    "PRINCIPAL_STATE",
    "SIGNING_KEY_FILE",
    "WRITE_METHODS",
    "IssuedToken",
    "ScopeRequirement",
    "TokenService",
    "WriteGate",
    "auth_router",
    "current_principal",
    "principal_of",
    "require_scopes",
    "requirements_of",
]
